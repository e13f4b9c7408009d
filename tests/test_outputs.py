"""Safe outputs, as a user meets them: the tool writes only into folders it owns, reads after a
rewrite are fresh (with one, default datasets cache), one writer at a time, all-or-nothing
publishing, a verified work dir, empty results, URL input with exports, duplicate files."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import load_dataset

from lomo_datasets.publish import outputs

from lomo_datasets.publish import layout as publish
from lomo_datasets.execution.pipeline import Recipe
from lomo_datasets.execution.recipes import RECIPES, _with_download, get_recipe, run_recipe
from lomo_datasets.core.stage import SettingError


def _cli(*args, cwd=None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "lomo_datasets.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=300, **kwargs,
    )


def _videos(folder: Path, *paths: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.copy(path, folder / path.name)
    return folder


def _tree(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.relative_to(folder).parts[0] in skip
    }


def _ids(out: Path) -> list[str]:
    return sorted(load_dataset(str(out), split="train")["video_id"])


# -- 1. the output folder belongs to the user until the tool made it ---------------------------


def test_out_dot_beside_the_videos_is_refused_and_nothing_is_touched(test_media, tmp_path):
    project = tmp_path / "project"
    _videos(project / "data", test_media.english, test_media.no_audio)
    (project / "README.md").write_text("# my project\n")
    before = _tree(project)

    proc = _cli("run", "probe", "--videos", "./data", "--out", ".", cwd=project)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()  # one line that says what to do
    assert "did not write" in line and "README.md" in line and "data/" in line and "new or empty folder" in line
    assert _tree(project) == before

    inside_out = _cli("run", "probe", "--videos", "./data", "--out", "data/out", cwd=project)
    inside_work = _cli("run", "probe", "--videos", "./data", "--out", "./fresh", "--work-dir", "data/work", cwd=project)
    for proc, flag, value in ((inside_out, "--out", "data/out"), (inside_work, "--work-dir", "data/work")):
        assert proc.returncode == 2 and f"{flag} {value} is inside the --videos folder" in proc.stderr, proc.stderr
    assert _tree(project) == before and not (project / "fresh").exists()


def test_a_folder_the_tool_made_is_reused_and_foreign_files_in_it_are_kept(test_media, tmp_path):
    videos = _videos(tmp_path / "videos", test_media.english)
    out = tmp_path / "out"
    assert _cli("run", "probe", "--videos", videos, "--out", out).returncode == 0
    (out / "notes.txt").write_text("mine")
    assert _cli("run", "probe", "--videos", _videos(tmp_path / "v2", test_media.no_audio), "--out", out).returncode == 0
    assert (out / "notes.txt").read_text() == "mine" and _ids(out) == ["no_audio"]
    # the library refuses the same way
    with pytest.raises(SettingError, match="did not write"):
        publish.write_folder(load_dataset(str(out), split="train"), tmp_path / "videos")


# -- 2. every read after a rewrite is fresh ---------------------------------------------------


def test_a_rewritten_folder_loads_the_new_rows_with_one_default_cache(test_media, tmp_path):
    out = tmp_path / "out"
    first = _cli("run", "probe", "--videos", _videos(tmp_path / "a", test_media.english), "--out", out)
    assert first.returncode == 0, first.stderr
    assert _ids(out) == ["english"]  # this process's (default) datasets cache now holds the folder
    second = _cli("run", "probe", "--videos", _videos(tmp_path / "b", test_media.no_audio, test_media.silent), "--out", out)
    assert second.returncode == 0, second.stderr
    assert "load it with: datasets.load_dataset(" in second.stdout
    assert _ids(out) == ["no_audio", "silent"]  # same process, same cache
    fresh = subprocess.run(
        [sys.executable, "-c", f"import datasets; print(sorted(datasets.load_dataset({str(out)!r}, split='train')['video_id']))"],
        capture_output=True, text=True, timeout=300,
    )
    assert fresh.stdout.strip() == "['no_audio', 'silent']", fresh.stderr
    # write_folder twice with the same features, and another folder of the same name
    data = load_dataset(str(out), split="train")
    publish.write_folder(data.select([0]), out)
    assert _ids(out) == ["no_audio"]
    other = tmp_path / "elsewhere" / "out"
    publish.write_folder(data.select([1]), other)
    assert _ids(other) == ["silent"] and _ids(out) == ["no_audio"]


def test_lomo_datasets_load_reads_a_rewritten_file(tmp_path):
    import lomo_datasets

    fixtures = Path(__file__).parent / "fixtures" / "livecc"
    path = tmp_path / "clips.jsonl"
    shutil.copy(fixtures / "live_sft.jsonl", path)
    before = lomo_datasets.load("livecc", data_files=str(path), split="train")
    shutil.copy(fixtures / "live_pretrain_no_offsets.jsonl", path)
    after = lomo_datasets.load("livecc", data_files=str(path), split="train")
    expected = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("[")]
    assert len(after) == len(expected) != len(before)


# -- 3. one writer at a time, all or nothing --------------------------------------------------


def test_a_second_run_on_the_same_out_or_work_dir_is_refused_while_the_first_holds_it(test_media, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    listing = tmp_path / "slow.txt"
    os.mkfifo(listing)  # the first run's input arrives only when the test writes it
    first = subprocess.Popen(
        [sys.executable, "-m", "lomo_datasets.cli", "run", "probe", "--videos", str(listing), "--out", str(out), "--work-dir", str(work)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 120
        while not (work / outputs.LOCK).exists() and time.time() < deadline:
            time.sleep(0.1)
        assert (work / outputs.LOCK).exists(), "the first run never took the locks"
        other = _videos(tmp_path / "b", test_media.no_audio)
        same_out = _cli("run", "probe", "--videos", other, "--out", out)
        same_work = _cli("run", "probe", "--videos", other, "--out", tmp_path / "out2", "--work-dir", work)
        for proc, flag, folder in ((same_out, "--out", out), (same_work, "--work-dir", work)):
            assert proc.returncode == 2
            assert f"{flag} {folder} is being written by another lomo-datasets run (pid {first.pid}" in proc.stderr
        assert not (tmp_path / "out2").exists()  # the refused run leaves nothing behind
        with open(listing, "w") as fh:
            fh.write(f"{test_media.english}\n")
        stdout, stderr = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, stderr
    assert "recipe probe: 1 rows" in stdout and _ids(out) == ["english"]
    assert not (out / outputs.LOCK).exists() and not (work / outputs.LOCK).exists()


def test_a_lock_left_by_a_killed_run_does_not_stick(test_media, tmp_path):
    out = tmp_path / "out"
    listing = tmp_path / "slow.txt"
    os.mkfifo(listing)
    first = subprocess.Popen(
        [sys.executable, "-m", "lomo_datasets.cli", "run", "probe", "--videos", str(listing), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (out / outputs.LOCK).exists() and time.time() < deadline:
        time.sleep(0.1)
    first.kill()  # SIGKILL: no cleanup runs
    first.wait()
    assert (out / outputs.LOCK).exists()
    again = _cli("run", "probe", "--videos", _videos(tmp_path / "v", test_media.english), "--out", out)
    assert again.returncode == 0, again.stderr
    assert f"taking over the lock left by pid {first.pid}" in again.stderr and _ids(out) == ["english"]


def test_a_failure_after_the_data_is_written_leaves_the_previous_folder(test_media, tmp_path, monkeypatch):
    out = tmp_path / "out"
    run_recipe("probe", _videos(tmp_path / "a", test_media.english, test_media.corrupt), out)
    before = _tree(out, skip=(".lomo-work",))
    assert "failed.jsonl" in before and any(k.startswith("data/") for k in before)

    from lomo_datasets.execution import recipes

    written = []

    def disk_full(path, *parts):  # the row report comes after the data, card and plot
        written.extend(p.relative_to(path.parent).as_posix() for p in path.parent.rglob("*") if p.is_file())
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(recipes, "write_failed_report", disk_full)
    with pytest.raises(OSError, match="No space left"):
        run_recipe("probe", _videos(tmp_path / "b", test_media.no_audio, test_media.silent), out)
    assert any(w.startswith("data/") for w in written) and "README.md" in written
    assert _tree(out, skip=(".lomo-work",)) == before
    assert not [p for p in out.rglob("*") if ".partial" in p.name or p.name == outputs.STAGING]
    assert _ids(out) == ["corrupt", "english"]

    monkeypatch.undo()  # the next run publishes normally
    run_recipe("probe", _videos(tmp_path / "b", test_media.no_audio), out)
    assert _ids(out) == ["no_audio", "silent"] and (out / "failed.jsonl").read_text() == ""


def test_a_publish_killed_during_the_swap_is_finished_by_the_next_run(test_media, tmp_path, monkeypatch):
    """Killed after the commit, between two renames: readers still get one whole version
    (the old card names the old shards), and the next run rolls the swap forward."""
    out = tmp_path / "out"
    run_recipe("probe", _videos(tmp_path / "a", test_media.english), out)
    new = load_dataset(str(_probe(test_media, tmp_path)), split="train")
    real_replace, moved = os.replace, []

    def killed(src, dst):
        if outputs.STAGING in str(src) and "/new/" in str(src):
            if moved:
                raise KeyboardInterrupt  # stands for SIGKILL: nothing after this runs
            moved.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        publish.write_folder(new, out)
    monkeypatch.undo()
    assert len(moved) == 1 and "/data/" in str(moved[0])
    assert _ids(out) == ["english"]  # the previous version, whole
    with outputs.Lock(out):
        outputs.recover(out)
    assert _ids(out) == ["english", "no_audio"] and not (out / outputs.STAGING).exists()
    assert len(list((out / "data").glob("*.parquet"))) == 1


def _probe(test_media, tmp_path) -> Path:
    out = tmp_path / "probed"
    run_recipe("probe", _videos(tmp_path / "pv", test_media.english, test_media.no_audio), out)
    return out


# -- 4. the work dir is verified, not trusted -------------------------------------------------


def test_a_damaged_or_deleted_work_dir_file_is_recomputed(test_media, tmp_path):
    videos = _videos(tmp_path / "videos", test_media.english)
    out = tmp_path / "out"
    assert _cli("run", "probe", "--videos", videos, "--out", out).returncode == 0
    good = load_dataset(str(out), split="train")[0]
    (arrow,) = (out / ".lomo-work").glob("00-probe-*/data/*.arrow")
    raw = arrow.read_bytes()
    at = raw.index(struct.pack("<d", good["duration"]))
    arrow.write_bytes(raw[:at] + struct.pack("<d", 9999.5) + raw[at + 8:])  # 8 bytes, same size

    proc = _cli("run", "probe", "--videos", videos, "--out", out)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "work dir:" in line]
    assert len(warnings) == 1 and "checksum differs" in warnings[0] and "recomputing" in warnings[0]
    assert load_dataset(str(out), split="train")[0]["duration"] == good["duration"]

    (arrow,) = (out / ".lomo-work").glob("00-probe-*/data/*.arrow")
    arrow.unlink()
    proc = _cli("run", "probe", "--videos", videos, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "is missing; recomputing" in proc.stderr
    assert load_dataset(str(out), split="train")[0] == good


# -- 5. an empty result is a result -----------------------------------------------------------


def test_a_run_where_every_row_fails_writes_a_loadable_empty_folder_and_fails_loudly(test_media, tmp_path):
    videos = _videos(tmp_path / "videos", test_media.corrupt, test_media.zero_byte)
    out = tmp_path / "out"
    proc = _cli("run", "livecc-pretrain", "--videos", videos, "--out", out, "--embedded")
    assert proc.returncode == 1, proc.stderr
    assert "NOTHING SURVIVED: 0 rows written" in proc.stdout and "from 2 inputs" in proc.stdout
    causes = next(line for line in proc.stdout.splitlines() if line.startswith("top causes:"))
    assert "probe: EmptyMediaError" in causes and "probe: CorruptMediaError" in causes
    stream = load_dataset(str(out), split="train", streaming=True)
    assert list(stream) == []
    card = yaml_header((out / "README.md").read_text())
    assert {"content", "lm_loss", "talking_head"} <= {f["name"] for f in card["dataset_info"]["features"]}
    assert len((out / "failed.jsonl").read_text().splitlines()) == 2
    # 0 clips: no livecc.jsonl (LiveCC's loader cannot open one without clips), and it says so
    assert not (out / "livecc.jsonl").exists() and "no clips to export" in proc.stderr


def yaml_header(text: str) -> dict:
    import yaml

    return yaml.safe_load(text.split("---", 2)[1])


# -- 6. URL input keeps the recipe whole; duplicates ------------------------------------------


def test_url_input_keeps_the_recipes_exports_and_settings(test_media, tmp_path, monkeypatch):
    from tests.media_server import MediaServer

    for name in ("livecc-pretrain", "livecc-sft", "lomo"):
        recipe = get_recipe(name)
        with_download = _with_download(recipe, _url_rows(), {}, {}, tmp_path)
        assert with_download.step_names() == ["download", *recipe.step_names()]
        assert with_download.exports == recipe.exports and with_download.exports
        assert with_download.demo_settings == recipe.demo_settings
        assert all(with_download.defaults[k] == v for k, v in recipe.defaults.items())

    exported = []

    def export(data, folder):
        exported.append(data.to_list())
        (folder / "videos.txt").write_text("\n".join(data["video_id"]) + "\n")

    probe = get_recipe("probe")
    monkeypatch.setitem(RECIPES, "probe-export", Recipe("probe-export", "probe + export", probe.steps, exports=[export]))
    server = MediaServer({"english.mp4": test_media.english}).start()
    try:
        listing = tmp_path / "urls.txt"
        listing.write_text(server.url("english.mp4") + "\n")
        out = tmp_path / "out"
        summary = run_recipe("probe-export", listing, out, overrides=["download.attempts=1", "download.retries=0", "download.backoff=0"])
    finally:
        server.stop()
    assert summary.rows == 1 and (out / "videos.txt").read_text() == "english\n"
    assert exported[0][0]["duration"] > 2 and "videos.txt" in outputs.read_marker(out)["files"]


def _url_rows():
    from datasets import Dataset

    return Dataset.from_list([{"video": "https://example.org/a.mp4"}])


def test_one_file_listed_twice_is_one_row_and_a_duplicate_error(test_media, tmp_path):
    videos = _videos(tmp_path / "videos", test_media.english)
    (videos / "link.mp4").symlink_to(videos / "english.mp4")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in [
        {"video": str(videos / "english.mp4"), "video_id": "first"},
        {"video": str(videos / "english.mp4"), "video_id": "second"},
        {"video": str(videos / "link.mp4"), "video_id": "third"},
    ]))
    out = tmp_path / "out"
    proc = _cli("run", "probe", "--videos", manifest, "--out", out)
    assert proc.returncode == 0, proc.stderr
    rows = {r["video_id"]: r for r in load_dataset(str(out), split="train")}
    assert rows["first"]["errors"] == [] and rows["first"]["duration"] > 2
    failed = {r["video_id"]: r["errors"] for r in map(json.loads, (out / "failed.jsonl").read_text().splitlines())}
    assert set(failed) == {"second", "third"}
    assert all(e[0]["stage"] == "ingest" and "duplicate" in e[0]["error"] and "'first'" in e[0]["error"] for e in failed.values())
