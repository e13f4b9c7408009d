"""The same rows whatever runs them: one process, ``--num-proc 2``, ``--shard 1/2`` + ``2/2``
+ ``merge``, and ``--executor ray`` give byte-identical Parquet shards and identical exports,
for ``livecc-sft`` with the real embedded models (Whisper, SmolLM2 for the LM loss), on the same
two short videos. The ``lomo`` recipe (the 1.5B LLM on CTranslate2, minutes per run on a CPU) is
checked in its end-to-end test (tests/test_lomo_recipe.py): shard 1/2 here + shard 2/2 on Ray
with two workers + ``merge`` equal its one run, byte for byte.

Groups of one video (``--group-size 1``) so that two videos make two shards, two worker
shares and two Ray blocks; a video's clips still share batches (LM loss, the commentary
prompt, language detection), and Greedy LLM output and Whisper timings depend on what shares a
batch and on the CPU threads, so any schedule-dependence shows here.

``merge`` refuses, one line each: a part given twice, parts of other settings or another
recipe, overlapping shards, a missing shard (``--allow-missing`` merges what exists and the
card says so)."""

from __future__ import annotations

import json
import shutil

import pytest

from lomo_datasets import cli
from lomo_datasets.execution.merge import merge_outputs
from lomo_datasets.core.stage import SettingError

pytestmark = pytest.mark.slow

#: Per recipe: short clips for the ~7 s test videos, as the recipe's own end-to-end test runs it.
SETTINGS = {
    "livecc-sft": {"clip": {"min_clip_sec": 2, "max_clip_sec": 6}},
}
#: What may differ between two folders of the same rows: the card and provenance say how the
#: folder was made (a shard, a merge), the plot is drawn from the same statistics.
NOT_COMPARED = ("README.md", "stats.png", ".lomo-provenance.json")


def _sets(recipe: str) -> list[str]:
    argv = []
    for step, settings in SETTINGS[recipe].items():
        for key, value in settings.items():
            argv += ["--set", f"{step}.{key}={json.dumps(value)}"]
    return argv


def _run(recipe, videos, out, *extra) -> None:
    argv = ["run", recipe, "--videos", str(videos), "--out", str(out), "--embedded", "--group-size", "1", *_sets(recipe), *extra]
    assert cli.main(argv) == 0, argv


def published_files(folder) -> dict[str, bytes]:
    """Every file the run published (data shards, reports, exports, audit), by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".lomo") for part in p.relative_to(folder).parts)
        and p.name not in NOT_COMPARED
    }


def two_video_manifest(test_media, folder):
    """``folder/manifest.jsonl`` listing the two English test videos (kept clips in every schedule)."""
    rows = [
        {"video": str(test_media.english), "title": "Testing speech", "category": "Science & Technology"},
        {"video": str(test_media.english2), "title": "Cooking pasta", "category": "Howto & Style"},
    ]
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def videos(test_media, tmp_path_factory):
    return two_video_manifest(test_media, tmp_path_factory.mktemp("same-videos"))


@pytest.mark.parametrize("recipe", ["livecc-sft"])
def test_every_schedule_gives_the_same_rows_and_exports(recipe, videos, tmp_path, capsys):
    one = tmp_path / "one"
    _run(recipe, videos, one)
    want = published_files(one)
    assert any(name.startswith("data/") and name.endswith(".parquet") for name in want)
    assert {"livecc.jsonl", "livecc_clips.jsonl", "failed.jsonl"} <= set(want)
    clips = want["livecc_clips.jsonl"].decode().splitlines()
    assert len(clips) >= 2  # several clips: batches of more than one row

    _run(recipe, videos, tmp_path / "two", "--num-proc", "2")
    assert published_files(tmp_path / "two") == want, "--num-proc 2 changed the output"

    _run(recipe, videos, tmp_path / "part1", "--shard", "1/2")
    _run(recipe, videos, tmp_path / "part2", "--shard", "2/2", "--executor", "ray")  # a part from Ray, too
    assert cli.main(["merge", str(tmp_path / "part2"), str(tmp_path / "part1"), "--out", str(tmp_path / "merged")]) == 0
    assert published_files(tmp_path / "merged") == want, "--shard 1/2 + 2/2 + merge changed the output"
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "Merged from 2 parts (part1, part2)" in card

    _run(recipe, videos, tmp_path / "ray", "--executor", "ray", "--num-proc", "2")
    assert published_files(tmp_path / "ray") == want, "--executor ray changed the output"
    capsys.readouterr()


# --------------------------------------------------------------------------------------------
# merge refuses what is not the shards of one run
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parts(test_media, tmp_path_factory):
    """``probe`` over five videos in three shards (groups of one video: 2 + 2 + 1), one shard
    again with other settings, and the whole input unsharded."""
    root = tmp_path_factory.mktemp("merge-parts")
    videos = root / "videos"
    videos.mkdir()
    for path in [test_media.english, test_media.english2, test_media.no_audio, test_media.silent, test_media.corrupt]:
        shutil.copy(path, videos / path.name)
    made = {}
    for i in (1, 2, 3):
        made[i] = root / f"p{i}"
        assert cli.main(["run", "probe", "--videos", str(videos), "--out", str(made[i]), "--shard", f"{i}/3", "--group-size", "1"]) == 0
    made["other"] = root / "p2-other"
    assert cli.main(["run", "probe", "--videos", str(videos), "--out", str(made["other"]), "--shard", "2/3", "--group-size", "1",
                     "--set", "probe.verify=false"]) == 0
    made["halves"] = root / "half1"
    assert cli.main(["run", "probe", "--videos", str(videos), "--out", str(made["halves"]), "--shard", "1/2", "--group-size", "1"]) == 0
    made["groups"] = root / "p1-groups"  # groups of 16 videos: shard 1/3 holds all five
    assert cli.main(["run", "probe", "--videos", str(videos), "--out", str(made["groups"]), "--shard", "1/3"]) == 0
    made["whole"] = root / "whole"
    assert cli.main(["run", "probe", "--videos", str(videos), "--out", str(made["whole"]), "--group-size", "1"]) == 0
    return made


def _merge_error(capsys, *argv) -> str:
    assert cli.main(["merge", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_merge_refuses_a_part_twice(parts, tmp_path, capsys):
    err = _merge_error(capsys, parts[1], parts[2], parts[2], parts[3], "--out", tmp_path / "m")
    assert "is given twice" in err
    copy = tmp_path / "p2-copy"
    shutil.copytree(parts[2], copy)
    err = _merge_error(capsys, parts[1], parts[2], copy, parts[3], "--out", tmp_path / "m")
    assert "are the same part" in err and "shard 2/3" in err
    assert not (tmp_path / "m").exists()


def test_merge_refuses_parts_of_other_settings_or_recipes(parts, tmp_path, capsys):
    err = _merge_error(capsys, parts[1], parts["other"], parts[3], "--out", tmp_path / "m")
    assert "other settings" in err and "probe.verify=False vs True" in err
    err = _merge_error(capsys, parts["groups"], parts[2], parts[3], "--out", tmp_path / "m")
    assert "other settings" in err and "--group-size 1 vs 16" in err


def test_merge_refuses_overlapping_and_missing_shards(parts, tmp_path, capsys):
    err = _merge_error(capsys, parts["halves"], parts[2], parts[3], "--out", tmp_path / "m")
    assert "overlap" in err and "shard 1/2" in err
    err = _merge_error(capsys, parts[1], parts["whole"], "--out", tmp_path / "m")
    assert "overlap" in err
    err = _merge_error(capsys, parts[1], parts[3], "--out", tmp_path / "m")
    assert "input rows 2-4 of 5 (shard 2/3) are in no part" in err and "--allow-missing" in err
    assert not (tmp_path / "m").exists()


def test_merge_with_allow_missing_merges_what_exists_and_the_card_says_so(parts, tmp_path, capsys):
    out = tmp_path / "m"
    assert cli.main(["merge", str(parts[3]), str(parts[1]), "--out", str(out), "--allow-missing"]) == 0
    whole = published_files(parts["whole"])
    merged = published_files(out)
    import pyarrow.parquet as pq

    (shard,) = [out / name for name in merged if name.startswith("data/")]
    (full,) = [parts["whole"] / name for name in whole if name.startswith("data/")]
    ids = pq.read_table(shard)["video_id"].to_pylist()
    assert ids == [i for n, i in enumerate(pq.read_table(full)["video_id"].to_pylist()) if n not in (2, 3)]
    card = (out / "README.md").read_text()
    assert "**Incomplete**" in card and "input rows 2-4 of 5 are missing" in card
    # the complete merge equals the unsharded run
    assert merge_outputs([parts[2], parts[3], parts[1]], tmp_path / "all") == tmp_path / "all"
    assert published_files(tmp_path / "all") == whole
    with pytest.raises(SettingError, match="no record of how it was made"):
        (parts[1] / ".lomo-provenance.json").rename(tmp_path / "moved.json")
        try:
            merge_outputs([parts[1], parts[2], parts[3]], tmp_path / "m3")
        finally:
            (tmp_path / "moved.json").rename(parts[1] / ".lomo-provenance.json")
