"""Multi-node runs: ``--shard i/n`` processes part i of n of the input, ``merge`` joins the parts,
and the merged dataset equals one unsharded run (same rows, same order, same failed rows)."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest
from datasets import Dataset, load_dataset

from lomo_datasets import cli
from lomo_datasets.execution.merge import merge_outputs
from lomo_datasets.execution.pipeline import parse_shard, take_shard
from lomo_datasets.execution.recipes import run_recipe
from lomo_datasets.core.stage import SettingError


@pytest.fixture()
def videos(test_media, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for path in [test_media.english, test_media.no_audio, test_media.corrupt, test_media.silent, test_media.zero_byte]:
        shutil.copy(path, folder / path.name)
    return folder


# load_dataset caches a local folder by its name only (two folders named "out" read back the
# same rows), so every read here uses a cache of its own.
def _load(folder):
    return load_dataset(str(folder), split="train", cache_dir=str(folder.parent / f".hf-cache-{folder.name}"))


def _rows(folder):
    return _load(folder).to_list()


def _features(folder):
    return _load(folder).features


@pytest.mark.parametrize("text, expected", [("1/2", (1, 2)), ("2/2", (2, 2)), ("1/1", (1, 1)), (" 3/8", (3, 8)), (None, None)])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text, message", [("0/2", "between 1 and N"), ("3/2", "between 1 and N"), ("2", "I/N"), ("a/b", "I/N"), ("1/0", "between")])
def test_bad_shards_say_how_to_fix(text, message):
    with pytest.raises(SettingError, match=message):
        parse_shard(text)


def test_shards_are_contiguous_and_cover_the_input():
    ds = Dataset.from_dict({"video_id": [f"v{i}" for i in range(7)]})
    parts = [list(take_shard(ds, (i, 3))["video_id"]) for i in (1, 2, 3)]
    assert sum(parts, []) == list(ds["video_id"]) and all(parts)
    assert take_shard(ds, None) is ds


def test_two_shards_merged_equal_one_run(videos, tmp_path, capsys):
    whole = tmp_path / "whole"
    run_recipe("probe", videos, whole, group_size=1)

    # Part 1 through the CLI (as a node would run it), part 2 through Python; groups of one
    # video, so that five videos make two parts (a shard holds whole groups).
    assert cli.main(["run", "probe", "--videos", str(videos), "--out", str(tmp_path / "part1"), "--shard", "1/2", "--group-size", "1"]) == 0
    second = run_recipe("probe", videos, tmp_path / "part2", shard="2/2", group_size=1)
    part1, part2 = _rows(tmp_path / "part1"), _rows(tmp_path / "part2")
    assert len(part1) == 3 and len(part2) == 2 and second.rows == 2

    assert cli.main(["merge", str(tmp_path / "part1"), str(tmp_path / "part2"), "--out", str(tmp_path / "merged")]) == 0
    printed = capsys.readouterr().out
    assert "merged 2 parts" in printed
    assert f"merged 2 parts into {tmp_path / 'merged'}: 5 rows, from {tmp_path / 'part1'} (3 rows), {tmp_path / 'part2'} (2 rows)\n" in printed
    merged, expected = _rows(tmp_path / "merged"), _rows(whole)
    assert merged == expected and len(merged) == 5
    assert _features(tmp_path / "merged") == _features(whole)
    assert (tmp_path / "merged" / "failed.jsonl").read_text() == (whole / "failed.jsonl").read_text()
    assert len((whole / "failed.jsonl").read_text().splitlines()) == 2  # corrupt, zero_byte


def test_more_shards_than_rows_and_bad_merges(videos, tmp_path):
    parts = []
    for i in (1, 2, 3, 4, 5, 6):
        out = tmp_path / f"p{i}"
        run_recipe("probe", videos, out, shard=(i, 6), group_size=1)
        parts.append(out)
    # (load_dataset refuses a folder with no rows, so count the parquet rows)
    assert [sum(pq.ParquetFile(f).metadata.num_rows for f in (p / "data").glob("*.parquet")) for p in parts] == [1, 1, 1, 1, 1, 0]
    merge_outputs(parts, tmp_path / "merged")
    assert [r["video_id"] for r in _rows(tmp_path / "merged")] == sorted(p.stem for p in videos.iterdir())

    with pytest.raises(SettingError, match="no data/\\*.parquet"):
        merge_outputs([tmp_path / "p1", tmp_path / "nothing"], tmp_path / "m2")
    with pytest.raises(SettingError, match="one of the parts"):
        merge_outputs([tmp_path / "p1", tmp_path / "p2"], tmp_path / "p2")
    assert cli.main(["run", "probe", "--videos", str(videos), "--out", str(tmp_path / "x"), "--shard", "1/2", "--push-to-hub", "a/b"]) == 2


def test_batches_depend_only_on_the_rows_of_a_group():
    """A step's batches are cut per group of input rows, from the group's first row: the same
    batches whether the rows come in one piece, from a shard or after a chunk boundary."""
    from lomo_datasets.execution.pipeline import batch_bounds, batch_cuts, shard_range

    # input rows 0..9 in groups of 4; rows 2 and 5 were filtered out, row 8 made three clips
    rows = [0, 1, 3, 4, 6, 7, 8, 8, 8, 9]
    cuts = batch_cuts(rows, group_size=4, batch=2)
    assert [rows[a:b] for a, b in cuts] == [[0, 1], [3], [4, 6], [7], [8, 8], [8, 9]]
    # the second shard of two (input rows 4.. of groups of 4) cuts the same batches
    start, end = shard_range(10, (2, 2), group_size=4)
    assert (start, end) == (8, 10) and shard_range(10, (1, 2), group_size=4) == (0, 8)
    tail = [r for r in rows if r >= 4]
    assert [tail[a:b] for a, b in batch_cuts(tail, 4, 2)] == [[4, 6], [7], [8, 8], [8, 9]]
    # chunks (and a worker's share of one) end where a batch ends, so they cut nothing else
    bounds = batch_bounds(rows, 4, 2, per_part=3)
    assert [rows[a:b] for a, b in bounds] == [[0, 1, 3], [4, 6, 7], [8, 8, 8, 9]]
    for a, b in bounds:
        assert [rows[a:b][x:y] for x, y in batch_cuts(rows[a:b], 4, 2)] == [rows[x:y] for x, y in cuts if a <= x < b]


def test_a_bad_group_size_says_how_to_fix_it(videos, tmp_path, capsys):
    assert cli.main(["run", "probe", "--videos", str(videos), "--out", str(tmp_path / "o"), "--group-size", "0"]) == 2
    assert "--group-size 0: use a whole number of input rows from 1" in capsys.readouterr().err
