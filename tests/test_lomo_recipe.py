"""The `lomo` recipe end to end, offline, through the CLI: sample videos (espeak-ng speech) ->
probe -> ASR (embedded Whisper base; the language detected, or given by the manifest) ->
translate (English passes; Mandarin is translated line for line by the embedded 1.5B LLM) ->
compress + QA (the embedded Qwen2.5-Coder-1.5B on CTranslate2) -> QC -> the published folder
that `datasets.load_dataset` reads, plus the LoMo JSON files."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from lomo_datasets import cli, formats

from lomo_datasets.publish import outputs
from lomo_datasets.execution.recipes import get_recipe
from lomo_datasets.media.samples import SAMPLES, make_speech_video
from tests.processors.test_qa import check_items
from tests.test_sameness import published_files

CJK = re.compile(r"[\u4e00-\u9fff]")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def lomo_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lomo-videos")
    chosen = [s for s in SAMPLES if s.name in ("cooking_pasta.mp4", "cooking_zh.mp4")]
    with open(folder / "manifest.jsonl", "w", encoding="utf-8") as fh:
        for sample in chosen:
            make_speech_video(folder / sample.name, sample.text, sample.language)
            entry = {"video": sample.name, "title": sample.title, "category": sample.category}
            if sample.language == "zh":  # given, as the demo's manifest does (see samples.py)
                entry["language"] = "zh"
            fh.write(json.dumps(entry) + "\n")
    return folder / "manifest.jsonl"


def demo_sets() -> list[str]:
    return [
        f"{step}.{key}={json.dumps(value)}" for step, settings in get_recipe("lomo").demo_settings.items() for key, value in settings.items()
    ]


def test_lomo_recipe_embedded_end_to_end(lomo_videos, tmp_path, capsys):
    import datasets

    out = tmp_path / "bench"
    # groups of one video, so that the two videos are two worker shares here and two shards below
    argv = ["run", "lomo", "--videos", str(lomo_videos), "--embedded", "--group-size", "1"]
    for item in demo_sets():
        argv += ["--set", item]
    # the fast embedded model answers blind and checks the keys (the 1.5B verifier, 4 rotations
    # per item, is tested on its own in test_audit_planted.py; here it would double the run)
    argv += ["--set", "blind.model=embedded:smollm2-135m", "--set", "verify.model=embedded:smollm2-135m"]
    assert cli.main([*argv, "--out", str(out), "--num-proc", "2"]) == 0
    printed = capsys.readouterr().out
    assert "yield: 2 of 2 videos with all items (100%); failed per step: none" in printed

    ds = datasets.load_dataset(str(out), split="train")
    assert ds.features["questions"] == datasets.List(formats.QUESTION_FEATURES)
    assert ds["video_id"] == ["cooking_pasta", "cooking_zh"]
    row = ds[0]
    # English speech through the preset's default ASR (detection): English, never Chinese.
    assert row["language"] == "en" and row["segments_en"] == row["segments"]  # English: not translated
    assert not any(CJK.search(s["text"]) for s in row["segments"])
    check_items("cooking_pasta", row["questions"], duration=row["duration"], segs=row["segments_en"])
    assert row["resolution"] == "[240, 320]" and row["qc_pass"] == 1.0
    # the temporal view is a pick, an item written from the picked line only, and its grounding check
    assert {p["name"] for p in row["prompts"]} == {"summary", "temporal", "temporal_qa", "grounding", "gvqa", "gvs"}

    # Mandarin speech (language given by the manifest): Chinese segments, and English
    # segments_en line for line with the same timestamps, from the embedded LLM.
    zh = ds[1]
    assert zh["language"] == "zh" and zh["errors"] == []
    assert len(zh["segments"]) >= 4 and all(CJK.search(s["text"]) for s in zh["segments"])
    assert [(s["start"], s["end"]) for s in zh["segments_en"]] == [(s["start"], s["end"]) for s in zh["segments"]]
    for line in zh["segments_en"]:
        assert re.search(r"[A-Za-z]{2,}", line["text"]) and not CJK.search(line["text"]), zh["segments_en"]
    check_items("cooking_zh", zh["questions"], duration=zh["duration"], segs=zh["segments_en"])
    assert (out / "failed.jsonl").read_text() == ""

    # LoMo-Pipe's files: the video's file name, <stem>_01 in every task, SVS_format.json, VTG windows
    videos = json.loads((out / "lomo" / "lomo.json").read_text())
    names = ["cooking_pasta.mp4", "cooking_zh.mp4"]
    assert [v["video_id"] for v in videos] == names and all(len(v["questions"]) == 6 for v in videos)
    assert [q["task"] for q in videos[0]["questions"]] == [formats.FILE_STEMS[t] for t in formats.TASKS]
    for task in formats.TASKS:
        files = json.loads((out / "lomo" / f"{formats.FILE_STEMS[task]}.json").read_text())
        assert [v["video_id"] for v in files] == names and all(v["resolution"] == "[240, 320]" for v in files)
        for name, video in zip(names, files):
            (item,) = video["relevant_windows" if task == "VTG" else "questions"]
            assert item.get("question_id", item.get("window_id")) == name.removesuffix(".mp4") + "_01"
            if task == "VTG":
                assert set(item) == {"window_id", "window", "descriptions"} and item["descriptions"]
            elif task in ("SVS", "SVQA"):  # the numbers in the text are the window's own
                assert re.findall(r"\d+(?:\.\d+)?", item["question"])[:2] == [str(v) for v in item["window"]]
    assert (out / "lomo" / "metadata.csv").read_text().splitlines()[0] == "video_id,duration,resolution"
    back = formats.read_lomo_files(sorted(str(p) for p in (out / "lomo").iterdir()))
    assert [q["task"] for q in back[0]["questions"]] == list(formats.TASKS)

    # The QA audit: the blind step's pick for every item, the flags column, audit.md/json and
    # the card's section, all from the same picks.
    right = []
    for r in (row, zh):  # both videos are audited
        picks = {a["question_id"]: a["answer"] for a in r["blind_answers"]}
        multiple_choice = {q["question_id"] for q in r["questions"] if q["options"]}  # VTG is grounding: not asked
        assert set(picks) == multiple_choice and len(picks) == 5 and set(picks.values()) <= set("ABCD") | {""}
        assert all(len(a["rotations"]) == 4 for a in r["blind_answers"])  # circular evaluation: "" = no option won all 4
        verified = {a["question_id"] for a in r["verified_answers"]}
        assert verified == multiple_choice and all(len(a["rotations"]) == 4 for a in r["verified_answers"])
        right += [q["question_id"] for q in r["questions"] if picks.get(q["question_id"]) == q["answer"]]
    right = sorted(right)
    audit = json.loads((out / "audit.json").read_text())
    assert audit["blind_model"] == "transformers:embedded:smollm2-135m"
    assert audit["verifier_model"].endswith("embedded:smollm2-135m"), audit["verifier_model"]
    assert audit["tasks"]["all"]["blind"]["correct_ids"] == right
    assert {(f["question_id"], f["reason"]) for r in (row, zh) for f in r["audit_flags"]} <= {(f["question_id"], f["reason"]) for f in audit["flags"]}
    assert sorted(f["question_id"] for r in (row, zh) for f in r["audit_flags"] if f["reason"] == "blind_answerable") == right
    card = (out / "README.md").read_text()
    section = card.split("## Quality audit")[1]
    assert f"| **all** | 12 | {100 * len(right) / 10:.0f}% [" in section and "[audit.md](audit.md)" in section
    assert (out / "audit.md").read_text().startswith("<!-- written by lomo-datasets audit -->")
    assert "audit.md" in outputs.read_marker(out)["files"]
    flagged = len({f["question_id"] for r in (row, zh) for f in r["audit_flags"]})
    assert f"audit: {flagged} of 12 questions flagged, blind accuracy {100 * len(right) / 10:.0f}% [" in printed

    # The same bytes however the run is scheduled (tests/test_sameness.py runs every schedule for
    # livecc-sft): two shards, as on two machines, each by the command in its own process: 1/2
    # on the local runner, 2/2 on Ray; merged, they give the shards, exports, reports and audit
    # of the run above (two worker processes). One after the other, so that `make test` stays
    # within 8 GB (at once, the two held 5.6 GB beside the test process).
    for shard, extra in (("1", []), ("2", ["--executor", "ray"])):
        command = [sys.executable, "-m", "lomo_datasets.cli", *argv, "--out", str(tmp_path / f"part{shard}"), "--shard", f"{shard}/2", *extra]
        with open(tmp_path / f"part{shard}.log", "w") as log:
            process = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=1800)
        assert process.returncode == 0, (tmp_path / f"part{shard}.log").read_text()[-3000:]
    assert cli.main(["merge", str(tmp_path / "part2"), str(tmp_path / "part1"), "--out", str(tmp_path / "merged")]) == 0
    assert published_files(tmp_path / "merged") == published_files(out)
