"""The local runner's step pool: with --num-proc N one pool of N workers serves a whole step,
each worker loads its model once for the step, outputs equal one process's, and a worker that
dies fails the step without losing finished chunks."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from datasets import Dataset

from lomo_datasets.execution.pipeline import DONE, Filter, Runner
from tests.toy_stages import ToyFanOut, ToyModelStage, ToySlowModel

WORKER_COLUMNS = ("pid", "rank", "device", "loads")


def _numbers(n: int) -> Dataset:
    return Dataset.from_dict({"video_id": [f"v{i:02d}" for i in range(n)], "x": [float(i) for i in range(n)]})


def test_two_workers_load_their_model_once_for_a_step_of_three_chunks(tmp_path):
    ds = _numbers(12)
    result = Runner(tmp_path / "work", num_proc=2, chunk_size=4).run(ds, [ToyModelStage(scale=2.0)])
    rows = result.dataset
    assert rows["y"] == [2.0 * i for i in range(12)]
    assert len(set(rows["pid"])) == 2 and set(rows["rank"]) == {0, 1}  # one pool, both ranks
    assert set(rows["loads"]) == {1}  # every row ran in a worker that had loaded the model once
    assert result.model_loads == {"toy": [1, 1]}
    chunks = {(pid, rank) for pid, rank in zip(rows["pid"], rows["rank"])}
    assert len(chunks) == 2  # the same two processes served all three chunks


def test_pool_output_equals_one_process(tmp_path):
    ds = Dataset.from_dict({"video_id": list("abcdefgh"), "x": [1.0, 2.0, -1.0, 3.0, 0.0, 2.0, 1.0, 3.0]})
    steps = [ToyFanOut(), ToyModelStage(scale=1.0), Filter("y_band", "y", low=1.5)]
    one = Runner(tmp_path / "one", num_proc=1, chunk_size=3).run(ds, steps)
    two = Runner(tmp_path / "two", num_proc=2, chunk_size=3).run(ds, steps)
    assert two.dataset.features == one.dataset.features
    for kind in ("dataset", "dropped"):
        got, want = getattr(two, kind), getattr(one, kind)
        assert got.remove_columns(list(WORKER_COLUMNS)).to_list() == want.remove_columns(list(WORKER_COLUMNS)).to_list()
    assert one.model_loads["toy"] in ([1], [0])  # this process (0: cached by an earlier test)


def test_a_step_in_this_process_releases_its_model_when_it_ends(tmp_path):
    from lomo_datasets.core import stage as contract

    ds = _numbers(6)
    stage = ToyModelStage(scale=7.25)  # a setting no other test uses: no model of it is cached yet
    first = Runner(tmp_path / "a", num_proc=1, chunk_size=4).run(ds, [stage])
    assert first.model_loads == {"toy": [1]}  # one load for both chunks of the step
    # not kept after the step (the cache key: load_model's module and name, model_key's name, the key, the device)
    assert not [key for key in contract._MODELS if key[1] == "ToyModelStage.load_model" and key[3] == stage.model_key()]
    again = Runner(tmp_path / "b", num_proc=1, chunk_size=4).run(ds, [stage])
    assert again.model_loads == {"toy": [1]} and again.dataset["y"] == first.dataset["y"]


def test_a_killed_worker_fails_the_step_and_the_rerun_keeps_finished_chunks(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    ds = _numbers(24)
    work = tmp_path / "work"
    stage = ToySlowModel(delay=0.2, pid_dir=str(pids))

    def kill_a_worker() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not list(work.glob(f"00-slow-*/chunk-*/{DONE}")):
            time.sleep(0.05)
        os.kill(int(next(pids.iterdir()).name), signal.SIGKILL)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    with pytest.raises(RuntimeError, match="a worker process died.*rerun the same command"):
        Runner(work, num_proc=2, chunk_size=4).run(ds, [stage])
    killer.join()
    finished = list(work.glob(f"00-slow-*/chunk-*/{DONE}"))
    assert 1 <= len(finished) < 6
    result = Runner(work, num_proc=2, chunk_size=4).run(ds, [stage])
    assert result.dataset["y"] == [3.0 * i for i in range(24)]
    assert result.model_loads["slow"] == [1, 1]
