"""The livecc-pretrain and livecc-sft recipes end to end through the CLI, offline with
``--embedded`` (whisper-tiny.en, SmolLM2-135M, the face-based talking-head scorer), on the
generated English speech clips. The clips are ~6-9 s long, so the clip lengths are set short."""

from __future__ import annotations

import json
import math

import pytest
from datasets import load_dataset

from lomo_datasets.cli import main
from lomo_datasets.formats.livecc import read_jsonl, read_livecc_file, read_offsets, to_conversation

pytestmark = pytest.mark.slow

SHORT_CLIPS = ["--set", "clip.min_clip_sec=2", "--set", "clip.max_clip_sec=6"]


@pytest.fixture(scope="module")
def manifest(test_media, tmp_path_factory):
    folder = tmp_path_factory.mktemp("livecc-videos")
    path = folder / "manifest.jsonl"
    rows = [
        {"video": str(test_media.english), "title": "Testing speech", "category": "Science & Technology"},
        {"video": str(test_media.english2), "title": "Cooking pasta", "category": "Howto & Style"},
        {"video": str(test_media.corrupt), "title": "Broken", "category": "People & Blogs"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def check_export(out, data, video_root=None):
    """The JSONL export holds exactly the published clips, and its offsets seek to each line."""
    jsonl = out / "livecc.jsonl"
    records = read_jsonl(jsonl)
    good = [row for row in data if not row["errors"]]
    assert records == [to_conversation(row, video_root=video_root) for row in good]
    # The shared reader (lomo_datasets.formats.livecc, used by the builders) reads it the same way.
    assert read_livecc_file(jsonl, offsets="require") == records
    raw = jsonl.read_bytes()
    for offset, record in zip(read_offsets(jsonl), records):
        line = raw[offset:].split(b"\n", 1)[0]
        assert json.loads(line) == record
    # The intermediate clip records in LiveCC's shape, one per published clip.
    with open(out / "livecc_clips.jsonl", encoding="utf-8") as fh:
        clips = [json.loads(line) for line in fh]
    assert [c["content"] for c in clips] == [r[1]["content"][0]["text_stream"] for r in records]
    assert [c["video"] for c in clips] == [r[0]["content"][0]["video"] for r in records]
    return records


def test_livecc_pretrain_end_to_end(manifest, tmp_path, capsys):
    out = tmp_path / "pretrain"
    code = main(["run", "livecc-pretrain", "--videos", str(manifest), "--out", str(out), "--embedded", *SHORT_CLIPS])
    assert code == 0
    assert "recipe livecc-pretrain" in capsys.readouterr().out
    data = load_dataset(str(out), split="train")
    clips = [row for row in data if not row["errors"]]
    assert len(clips) >= 2
    for row in clips:
        assert 2 <= row["video_end"] - row["video_start"] <= 6
        assert 1 <= row["wps"] <= 4
        assert math.isfinite(row["lm_loss"]) and 1.5 <= row["lm_loss"] <= 6.5
        assert row["talking_head"] == 0.0  # synthetic frames: no face
        assert row["content"] and row["previous"] is not None
    # The second clip of a video keeps the transcript before it as its context.
    later = [row for row in clips if row["clip_index"] > 0]
    assert all(row["previous"] for row in later)
    # The corrupt file fails at probe: it has no clip, and failed.jsonl lists it with its error.
    assert "corrupt" not in data["video_id"]
    failed = [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines()]
    assert [(row["video_id"], row["errors"][0]["stage"]) for row in failed] == [("corrupt", "probe")]
    records = check_export(out, data)
    assert records[0][1]["content"][0]["text_stream"][0][2] == clips[0]["content"][0]["word"]


def test_livecc_sft_end_to_end(manifest, test_media, tmp_path):
    out = tmp_path / "sft"
    root = test_media.english.parent  # `video` written relative to it, so the data can move with the videos
    code = main(["run", "livecc-sft", "--videos", str(manifest), "--out", str(out), "--embedded", *SHORT_CLIPS,
                 "--set", f"export.video_root={root}"])
    assert code == 0
    data = load_dataset(str(out), split="train")
    clips = [row for row in data if not row["errors"]]
    assert clips, "the SFT recipe kept no clip"
    for row in clips:
        first = row["content"][0]["word"]
        assert first[0].isupper()  # SFT clips start at a sentence start
        assert row["commentary"] is True and row["query"]  # NO rows were filtered out
        assert row["language"] == "en"
        assert 1.5 <= row["lm_loss"] <= 5.0
        assert row["speech_share"] is not None and row["talking_head"] <= 0.5
    records = check_export(out, data, video_root=root)
    assert all(r[0]["content"][1]["text"] for r in records)  # the user text is the query
    assert {r[0]["content"][0]["video"] for r in records} <= {test_media.english.name, test_media.english2.name}
    # Dropped clips are kept aside with their reason.
    if (out / "dropped.jsonl").exists():
        reasons = {json.loads(line)["drop_reason"] for line in (out / "dropped.jsonl").read_text().splitlines()}
        assert reasons <= {"keep_wps", "keep_lm_loss", "drop_talking_head", "keep_commentary", "keep_language"}
