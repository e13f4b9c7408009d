"""Crash safety: a runner killed with SIGKILL in the middle of a stage resumes from its finished
chunks, and the final rows equal an uninterrupted run. Changing a stage's settings or version
recomputes that stage and the later ones, nothing before."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lomo_datasets.execution.pipeline import DONE, Runner
from tests.resume_stages import AddOffset, SlowNumber, Square, toy_records

ROOT = Path(__file__).resolve().parents[1]
ROWS, CHUNK, DELAY = 12, 2, 0.12


def _counts(log: Path, stage: str | None = None) -> Counter:
    if not log.exists():
        return Counter()
    lines = [line.split() for line in log.read_text().splitlines()]
    return Counter(vid for name, vid in lines if stage is None or name == stage)


def _start(work: Path, log: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.resume_stages", str(work), str(log), str(out), str(ROWS), str(DELAY), str(CHUNK)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _finished_chunks(work: Path) -> list[Path]:
    return sorted(p.parent for p in work.glob(f"00-number-*/chunk-*/{DONE}"))


def test_sigkill_mid_stage_then_rerun_recomputes_only_unfinished_chunks(tmp_path):
    work, log, out = tmp_path / "work", tmp_path / "calls.log", tmp_path / "out.json"
    proc = _start(work, log, out)
    try:
        deadline = time.monotonic() + 120
        while len(_finished_chunks(work)) < 2:
            assert proc.poll() is None, f"runner ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no chunk finished within 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert not out.exists()  # it really died mid-run
    done_before = _finished_chunks(work)
    assert 2 <= len(done_before) < ROWS // CHUNK
    first_calls = _counts(log, "number")
    assert sum(first_calls.values()) < ROWS

    rerun = _start(work, log, out)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()[-3000:]
    calls = _counts(log, "number")

    # Rows of chunks finished before the kill were computed once; every row at least once;
    # at most the one chunk that was in progress was computed twice.
    finished_ids = set()
    for chunk in done_before:
        start, end = (int(x) for x in chunk.name.split("-")[1:])
        finished_ids |= {f"toy-{i:03d}" for i in range(start, end)}
    assert finished_ids and all(calls[vid] == 1 for vid in finished_ids)
    assert set(calls) == {f"toy-{i:03d}" for i in range(ROWS)}
    assert sum(calls.values()) <= ROWS + CHUNK
    assert sum(calls.values()) - ROWS == sum(first_calls.values()) - len(finished_ids)

    # The final rows equal an uninterrupted run's.
    clean = Runner(tmp_path / "clean-work", chunk_size=CHUNK).run(
        toy_records(ROWS), [SlowNumber(log="", factor=3), AddOffset(offset=1), Square()]
    )
    resumed = json.loads(out.read_text())
    assert resumed == clean.dataset.to_list()
    assert [r["squared"] for r in resumed[:3]] == [1, 16, 49]
    assert resumed[4]["errors"][0]["stage"] == "number"  # a failed row stays failed, not lost
    assert not list(work.glob("*/chunk-*"))  # chunk folders are gone once a step is whole


def _steps(logs: Path, factor=1, offset=0):
    return [SlowNumber(log=str(logs), factor=factor), AddOffset(log=str(logs), offset=offset), Square(log=str(logs))]


def test_changed_settings_or_version_recompute_that_stage_and_later_only(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    ds = toy_records(6)
    runner = Runner(tmp_path / "work", chunk_size=4)

    def run(**kwargs):
        before = {s: sum(_counts(log, s).values()) for s in ("number", "add", "square")}
        result = runner.run(ds, _steps(log, **kwargs))
        after = {s: sum(_counts(log, s).values()) for s in ("number", "add", "square")}
        return result, {s: after[s] - before[s] for s in after}

    # failing rows (toy-004) are computed by "number" only
    first, calls = run()
    assert calls == {"number": 6, "add": 5, "square": 5}
    _, calls = run()
    assert calls == {"number": 0, "add": 0, "square": 0}
    changed, calls = run(offset=10)
    assert calls == {"number": 0, "add": 5, "square": 5}
    assert [r["squared"] for r in changed.dataset.to_list()][:2] == [100, 121]
    monkeypatch.setattr(AddOffset, "version", "2")
    _, calls = run(offset=10)
    assert calls == {"number": 0, "add": 5, "square": 5}
    monkeypatch.setattr(SlowNumber, "version", "2")
    _, calls = run(offset=10)
    assert calls == {"number": 6, "add": 5, "square": 5}
    # Back to the first settings and versions: every step's folder is still there.
    monkeypatch.undo()
    again, calls = run()
    assert calls == {"number": 0, "add": 0, "square": 0} and again.dataset.to_list() == first.dataset.to_list()


def test_a_chunk_killed_while_saving_is_recomputed(tmp_path):
    """A chunk folder without its marker (data half written) is not trusted."""
    log = tmp_path / "calls.log"
    runner = Runner(tmp_path / "work", chunk_size=2)
    ds = toy_records(4)
    runner.run(ds, _steps(log)[:1])
    (step,) = (tmp_path / "work").glob("00-number-*")
    # Fake the state of a crash in the second chunk: the step is not whole, the first chunk is
    # done, the second has data but no marker.
    data = step / "data"
    from datasets import load_from_disk

    from lomo_datasets.execution.store import save as _save

    # the first chunk finished (data, then its marker with what it wrote)
    _save(load_from_disk(str(data)).select([0, 1]).flatten_indices(), step / "chunk-000000000-000000002")
    # the second has data but no marker
    load_from_disk(str(data)).select([2, 3]).save_to_disk(str(step / "chunk-000000002-000000004" / "data"))
    (step / DONE).unlink()
    before = _counts(log, "number")
    result = runner.run(ds, _steps(log)[:1])
    after = _counts(log, "number")
    assert after - before == Counter({"toy-002": 1, "toy-003": 1})
    assert [r["value"] for r in result.dataset.to_list()] == [0, 1, 2, 3]


@pytest.mark.parametrize("chunk_size", [3])
def test_another_chunk_size_never_reuses_chunks_of_other_rows(tmp_path, chunk_size):
    log = tmp_path / "calls.log"
    ds = toy_records(4)
    work = tmp_path / "work"
    Runner(work, chunk_size=2).run(ds, _steps(log)[:1])
    (step,) = work.glob("00-number-*")
    (step / DONE).unlink()  # as if the run had died before the step was whole
    (step / "chunk-000000000-000000002").mkdir()
    (step / "chunk-000000000-000000002" / DONE).write_text("{}")
    before = sum(_counts(log, "number").values())
    result = Runner(work, chunk_size=chunk_size).run(ds, _steps(log)[:1])
    assert sum(_counts(log, "number").values()) - before == 4
    assert len(result.dataset) == 4
