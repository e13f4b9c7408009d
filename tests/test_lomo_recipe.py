"""The `lomo` recipe end to end, offline, through the CLI: sample videos (espeak-ng speech) ->
probe -> ASR (embedded Whisper) -> translate (off under --embedded: English passes, Mandarin
gets an error) -> compress + QA (embedded SmolLM2 under xgrammar) -> QC -> the published folder
that `datasets.load_dataset` reads, plus the LoMo JSON files."""

from __future__ import annotations

import json
import re

import pytest

from lomo_datasets import cli, formats
from lomo_datasets.recipes import get_recipe
from lomo_datasets.samples import SAMPLES, make_speech_video
from tests.processors.test_qa import check_items

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def lomo_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lomo-videos")
    chosen = [s for s in SAMPLES if s.name in ("cooking_pasta.mp4", "cooking_zh.mp4")]
    with open(folder / "manifest.jsonl", "w", encoding="utf-8") as fh:
        for sample in chosen:
            make_speech_video(folder / sample.name, sample.text, sample.language)
            fh.write(json.dumps({"video": sample.name, "title": sample.title, "category": sample.category}) + "\n")
    return folder / "manifest.jsonl"


def demo_sets() -> list[str]:
    return [
        f"{step}.{key}={json.dumps(value)}" for step, settings in get_recipe("lomo").demo_settings.items() for key, value in settings.items()
    ]


def test_lomo_recipe_embedded_end_to_end(lomo_videos, tmp_path):
    import datasets

    out = tmp_path / "bench"
    argv = ["run", "lomo", "--videos", str(lomo_videos), "--out", str(out), "--embedded"]
    for item in demo_sets():
        argv += ["--set", item]
    assert cli.main(argv) == 0

    ds = datasets.load_dataset(str(out), split="train")
    assert ds.features["questions"] == datasets.List(formats.QUESTION_FEATURES)
    assert ds["video_id"] == ["cooking_pasta"]
    row = ds[0]
    assert row["language"] == "en" and row["segments_en"] == row["segments"]  # English: not translated
    check_items("cooking_pasta", row["questions"], duration=row["duration"], segs=row["segments_en"])
    assert row["resolution"] == "[240, 320]" and row["qc_pass"] == 1.0
    assert {p["name"] for p in row["prompts"]} == {"summary", "temporal", "gvqa", "gvs"}

    # The Mandarin video: no translation model ships, so it is dropped with its reason.
    failed = [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines() if line.strip()]
    assert [f.get("video_id") for f in failed] == ["cooking_zh"]
    assert "translate.model" in json.dumps(failed[0], ensure_ascii=False)

    # LoMo-Pipe's files: the video's file name, <stem>_01 in every task, SVS_format.json, VTG windows
    videos = json.loads((out / "lomo" / "lomo.json").read_text())
    assert [v["video_id"] for v in videos] == ["cooking_pasta.mp4"] and len(videos[0]["questions"]) == 6
    assert [q["task"] for q in videos[0]["questions"]] == [formats.FILE_STEMS[t] for t in formats.TASKS]
    for task in formats.TASKS:
        (video,) = json.loads((out / "lomo" / f"{formats.FILE_STEMS[task]}.json").read_text())
        assert video["video_id"] == "cooking_pasta.mp4" and video["resolution"] == "[240, 320]"
        (item,) = video["relevant_windows" if task == "VTG" else "questions"]
        assert item.get("question_id", item.get("window_id")) == "cooking_pasta_01"
        if task == "VTG":
            assert set(item) == {"window_id", "window", "descriptions"} and item["descriptions"]
        elif task in ("SVS", "SVQA"):  # the numbers in the text are the window's own
            assert re.findall(r"\d+(?:\.\d+)?", item["question"])[:2] == [str(v) for v in item["window"]]
    assert (out / "lomo" / "metadata.csv").read_text().splitlines()[0] == "video_id,duration,resolution"
    back = formats.read_lomo_files(sorted(str(p) for p in (out / "lomo").iterdir()))
    assert [q["task"] for q in back[0]["questions"]] == list(formats.TASKS)
