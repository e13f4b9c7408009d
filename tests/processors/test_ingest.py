"""Ingest (folder, text file, JSONL/CSV manifest) and the Probe stage."""

from __future__ import annotations

import json
import shutil

import pytest

from lomo_datasets.core.stage import SettingError, apply_stage
from lomo_datasets.processors.ingest import Probe, discover, ingest, make_video_id, records


@pytest.mark.parametrize(
    "name, expected",
    [
        ("clip", "clip"),
        ("a/b\\c", "a_b_c"),
        ("../../etc/passwd", "etc_passwd"),
        ("..", "video"),
        ("my video (1)", "my_video_1"),
        ("视频 一", "视频_一"),
        (".hidden", "hidden"),
    ],
)
def test_video_id_is_filesystem_safe(name, expected):
    vid = make_video_id(name)
    assert vid == expected
    assert "/" not in vid and "\\" not in vid and ".." not in vid and not vid.startswith(".")


def test_long_ids_are_shortened_stably():
    name = "x" * 300
    assert make_video_id(name) == make_video_id(name) and len(make_video_id(name)) <= 96


def test_duplicate_stems_get_stable_distinct_ids(tmp_path):
    entries = [{"video": str(tmp_path / "a" / "clip.mp4")}, {"video": str(tmp_path / "b" / "clip.mp4")}]
    ids = [r["video_id"] for r in records(entries)]
    assert len(set(ids)) == 2 and all(i.startswith("clip-") for i in ids)
    assert [r["video_id"] for r in records(entries[::-1])] == ids[::-1]  # order does not matter


def test_ingest_makes_ids_unique_across_its_record_batches(tmp_path, monkeypatch):
    """``ingest`` builds its rows a record batch at a time into a mapped Arrow file; ids that
    collide or repeat in different batches come out as ``records`` makes them in one batch."""
    import os

    from lomo_datasets.processors import ingest as module

    files = []
    for folder in ("d0", "d1", "d2", "d3"):
        (tmp_path / folder).mkdir()
        for stem in ("clip", "x" * 120, "a"):
            (tmp_path / folder / f"{stem}.mp4").write_bytes(b"x")
            files.append(str(tmp_path / folder / f"{stem}.mp4"))
    os.link(files[0], tmp_path / "d0" / "hard.mp4")
    listing = tmp_path / "list.txt"
    again = [files[0], str(tmp_path / "d0" / "hard.mp4"), files[5], "BV1xx411c7mD", "https://www.bilibili.com/video/BV1xx411c7mD"]
    listing.write_text("\n".join(files + again) + "\n")
    expected = records(discover(listing))  # one batch
    monkeypatch.setattr(module, "BATCH_ROWS", 4)
    ds = ingest(listing)
    assert ds.cache_files  # mapped from its file, not held in memory
    assert ds.to_list() == expected
    assert len(set(ds["video_id"])) == len(ds)
    repeats = [e["error"] for row in ds["errors"] for e in row if e["error"].startswith("duplicate entry")]
    assert len(repeats) == 4 and repeats[0].endswith(f"'{expected[0]['video_id']}'")  # the path again, its hard link, ...


def test_folder_text_file_and_manifests(test_media, tmp_path):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(test_media.english, folder / "one.mp4")
    shutil.copy(test_media.english2, folder / "sub" / "two.mkv.mp4")
    (folder / "notes.txt").write_text("not a video")
    found = discover(folder)
    assert [e["video"].rsplit("/", 1)[1] for e in found] == ["one.mp4", "two.mkv.mp4"]

    listing = tmp_path / "list.txt"
    listing.write_text("# comment\nvideos/one.mp4\n\n" + str(folder / "sub" / "two.mkv.mp4") + "\n")
    assert [e["video"] for e in discover(listing)] == [e["video"] for e in found]

    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"video": "videos/one.mp4", "title": "Öne", "category": "Sports"}) + "\n")
    ds = ingest(jsonl)
    assert ds[0]["title"] == "Öne" and ds[0]["category"] == "Sports" and ds[0]["video"] == str(folder / "one.mp4")

    csv = tmp_path / "m.csv"
    csv.write_text("path,title\nvideos/one.mp4,First\n")
    assert ingest(csv)[0]["title"] == "First"


def test_bad_sources_fail_with_clear_messages(tmp_path):
    with pytest.raises(SettingError, match="no such folder"):
        ingest(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SettingError, match="found no videos"):
        ingest(tmp_path / "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "x"}\n')
    with pytest.raises(SettingError, match="no 'video'"):
        ingest(bad)


def test_probe_stage_good_and_bad_files(test_media, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in test_media.good() + test_media.bad():
        shutil.copy(path, folder / path.name)
    ds = apply_stage(ingest(folder), Probe(), load_from_cache_file=False)
    rows = {r["video_id"]: r for r in ds.to_list()}
    assert len(rows) == len(test_media.good()) + len(test_media.bad())
    for good in test_media.good():
        row = rows[good.stem]
        assert row["errors"] == [] and (row["width"], row["height"]) == (320, 240) and row["duration"] > 2
    assert rows["no_audio"]["has_audio"] is False and rows["english"]["has_audio"] is True
    expected = {
        "zero_byte": "EmptyMediaError",
        "corrupt": "CorruptMediaError",
        "truncated": "TruncatedMediaError",
        "truncated_tail": "CorruptMediaError",
        "audio_only": "NoVideoError",
    }
    for vid, error in expected.items():
        assert rows[vid]["duration"] is None
        assert [e["stage"] for e in rows[vid]["errors"]] == ["probe"]
        assert rows[vid]["errors"][0]["error"].startswith(error)
