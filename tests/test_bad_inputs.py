"""The bad-input corpus: a `probe` run over good and bad videos completes, keeps every good row,
gives every bad row a clear error, and writes the failed-rows report beside the output."""

from __future__ import annotations

import json
import shutil

import pytest
from datasets import load_dataset

from lomo_datasets.execution.recipes import run_recipe
from tests.bad_media import CLAIMED_SECONDS, make_bad


@pytest.fixture(scope="module")
def bad_media(media_dir):
    return make_bad(media_dir / "bad")


def _line(**entry) -> bytes:
    return json.dumps(entry, ensure_ascii=False).encode("utf-8")


@pytest.fixture()
def corpus(test_media, bad_media, tmp_path):
    """A manifest (JSONL, one line not valid UTF-8) over a folder of good and bad files, and
    what each row should end as: None for good rows, else the start of its error."""
    folder = tmp_path / "corpus"
    (folder / "sub dir").mkdir(parents=True)
    files = {
        "sub dir/视频 with space é.mp4": test_media.english,
        "no_audio.mp4": test_media.no_audio,
        "silent.mp4": test_media.silent,
        "single_frame.mp4": bad_media["single_frame"],
        "corrupt.mp4": test_media.corrupt,
        "truncated.mp4": test_media.truncated,
        "truncated_tail.mp4": test_media.truncated_tail,
        "zero_byte.mp4": test_media.zero_byte,
        "audio_only.mp4": test_media.audio_only,
        "absurd_duration.mkv": bad_media["absurd_duration"],
        "a/clip.mp4": test_media.english2,
        "b/clip.mp4": test_media.silent,
        "title.mp4": test_media.english2,
    }
    for name, source in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / name)
    lines = [
        _line(video="sub dir/视频 with space é.mp4"),
        _line(video="no_audio.mp4"),
        _line(video="silent.mp4", video_id="../../escape"),
        _line(video="single_frame.mp4", video_id="a/b\\c"),
        _line(video="corrupt.mp4"),
        _line(video="truncated.mp4"),
        _line(video="truncated_tail.mp4"),
        _line(video="zero_byte.mp4"),
        _line(video="audio_only.mp4"),
        _line(video="absurd_duration.mkv"),
        _line(video="missing.mp4"),
        _line(video="sub dir/视频 with space é.mp4"),  # listed twice
        _line(video="a/clip.mp4", video_id="same"),  # two different files, one id
        _line(video="b/clip.mp4", video_id="same"),
        b'{"video": "title.mp4", "title": "caf\xe9 \xff\xfe title"}',  # Latin-1 bytes, not UTF-8
    ]
    manifest = folder / "manifest.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    expected = {
        "视频_with_space_é": None,
        "no_audio": None,
        "escape": None,
        "a_b_c": None,
        "corrupt": "CorruptMediaError",
        "truncated": "TruncatedMediaError",
        "truncated_tail": "CorruptMediaError",
        "zero_byte": "EmptyMediaError",
        "audio_only": "NoVideoError",
        "absurd_duration": "TruncatedMediaError",
        "missing": "MediaNotFoundError",
        "视频_with_space_é-dup2": "duplicate entry",
        "title": None,
    }
    return manifest, expected


def test_probe_run_over_the_bad_input_corpus(corpus, tmp_path):
    manifest, expected = corpus
    out = tmp_path / "out"
    summary = run_recipe("probe", manifest, out, chunk_size=4)

    rows = {r["video_id"]: r for r in load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))}
    same = sorted(v for v in rows if v.startswith("same-"))
    assert len(rows) == 15 == summary.rows and len(same) == 2  # nothing lost, ids unique
    for vid in rows:
        assert "/" not in vid and "\\" not in vid and ".." not in vid and not vid.startswith(".")

    bad = {vid for vid, error in expected.items() if error}
    good = set(rows) - bad
    assert good == {v for v, e in expected.items() if e is None} | set(same)
    for vid in good:
        row = rows[vid]
        assert row["errors"] == [], (vid, row["errors"])
        assert row["duration"] > 0 and row["width"] == 320 and row["height"] == 240
    assert rows["a_b_c"]["duration"] == pytest.approx(0.04, abs=0.01)  # the single frame
    assert rows["no_audio"]["has_audio"] is False and rows["escape"]["has_audio"] is True
    assert "\ufffd" in rows["title"]["title"] and rows["title"]["title"].startswith("caf")
    assert rows["视频_with_space_é"]["video"].endswith("sub dir/视频 with space é.mp4")

    for vid in bad:
        errors = rows[vid]["errors"]
        assert len(errors) == 1 and rows[vid]["duration"] is None, (vid, errors)
        stage = "ingest" if vid.endswith("-dup2") else "probe"
        assert errors[0]["stage"] == stage
        assert expected[vid] in errors[0]["error"], (vid, errors)
    assert f"header says {CLAIMED_SECONDS:.2f}s" in rows["absurd_duration"]["errors"][0]["error"]
    assert "already listed as '视频_with_space_é'" in rows["视频_with_space_é-dup2"]["errors"][0]["error"]
    assert summary.failed == len(bad) and summary.errors_by_stage == {"probe": len(bad) - 1, "ingest": 1}

    report = [json.loads(line) for line in (out / "failed.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["video_id"] for r in report} == bad
    for entry in report:
        assert set(entry) == {"video_id", "video", "source", "errors"}
        assert entry["errors"] == rows[entry["video_id"]]["errors"] and entry["video"]


def test_a_clean_rerun_rewrites_the_report(test_media, tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    shutil.copy(test_media.corrupt, folder / "corrupt.mp4")
    shutil.copy(test_media.english, folder / "english.mp4")
    out = tmp_path / "out"
    run_recipe("probe", folder, out)
    assert [json.loads(x)["video_id"] for x in (out / "failed.jsonl").read_text().splitlines()] == ["corrupt"]
    (folder / "corrupt.mp4").unlink()
    run_recipe("probe", folder, out)
    assert (out / "failed.jsonl").read_text() == ""
