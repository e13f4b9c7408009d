"""The Ray executor on a local Ray instance with 2 CPUs: the same rows and features as the local
runner, a killed worker or driver loses and doubles no rows, the missing extra says how to
install it. One Ray instance serves the whole module (it takes seconds to start)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from datasets import Dataset, load_dataset

from lomo_datasets.execution.pipeline import Filter, Runner
from lomo_datasets.core.stage import SettingError
from tests.toy_stages import ToyBatchRaises, ToyFanOut, ToyMissingModel, ToyModelStage, ToySlowModel

ROOT = Path(__file__).resolve().parent.parent
TEST_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _cli(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "lomo_datasets.cli", *args], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, **TEST_ENV, **(env or {})}, timeout=timeout,
    )


def test_without_ray_the_ray_executor_says_how_to_install_it(tmp_path, test_media):
    """`--executor ray` where Ray is not installed (hidden from this interpreter): one line."""
    code = (
        "import sys; sys.modules['ray'] = None; from lomo_datasets.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "run", "probe", "--videos", str(test_media.english), "--out", str(tmp_path / "out"), "--executor", "ray"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["lomo-datasets: error: the Ray executor needs Ray Data: pip install 'lomo-datasets[ray]'"]
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    os.environ.update(TEST_ENV)
    ray.init(
        num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
        _temp_dir=str(tmp_path_factory.mktemp("ray")), logging_level="WARNING",
        # workers import the toy stages from tests/
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    yield ray
    ray.shutdown()


def _executor(work, **settings):
    from lomo_datasets.execution.ray_executor import RayExecutor, RaySettings

    return RayExecutor(work, RaySettings(**settings))


def _rows(ds: Dataset, drop=("pid", "rank", "device", "loads")) -> list[dict]:
    return ds.remove_columns([c for c in drop if c in ds.column_names]).to_list()


def test_recipe_steps_give_the_local_runners_rows_and_features(ray_cluster, test_media, tmp_path):
    """Probe (tasks), Whisper (an actor pool), clips (fan-out) and a filter: the rows, their
    nested list-of-struct columns, the errors and the dropped rows equal the local runner's."""
    from lomo_datasets.processors.asr import Transcribe
    from lomo_datasets.processors.clip import Clip
    from lomo_datasets.processors.ingest import Probe, ingest

    listing = tmp_path / "videos.txt"
    paths = [test_media.english, test_media.english2, test_media.no_audio, test_media.silent, test_media.corrupt]
    listing.write_text("\n".join(str(p) for p in paths))
    ds = ingest(listing)
    steps = [
        Probe(),
        Transcribe(model="embedded:whisper-tiny.en", temperature=0.0),
        Clip(min_clip_sec=1.0, max_clip_sec=20.0),
        Filter("keep_wps", "wps", low=1.0, high=4.0),
    ]
    local = Runner(tmp_path / "local").run(ds, steps)
    remote = _executor(tmp_path / "ray", workers=2, block_rows=2).run(ds, steps)
    assert remote.dataset.features == local.dataset.features
    assert remote.dataset.to_list() == local.dataset.to_list()
    assert len(local.dataset) >= 2 and local.dataset[0]["content"]  # clips with timed words
    assert remote.dropped.features == local.dropped.features
    assert remote.dropped.to_list() == local.dropped.to_list()
    failed = {r["video_id"]: [e["stage"] for e in r["errors"]] for r in local.dropped if r["errors"]}
    # a silent video gives no clip: its row fails at the clip step (every input is accounted for)
    assert failed == {"no_audio": ["asr"], "corrupt": ["probe"], "silent": ["clip"]}
    assert remote.model_loads["asr"] and set(remote.model_loads["asr"]) == {1}  # once per actor
    # per step: the seconds the workers spent on it, not one "all steps" figure (not compared
    # between steps: a fresh Ray worker's first call also imports what the step needs)
    # (every step, a filter too, as locally: one step kind)
    assert list(remote.timings) == list(local.timings) == ["probe", "asr", "clip", "keep_wps"] and remote.timings_kind != "wall"
    assert all(seconds > 0 for seconds in remote.timings.values())


def test_cli_ray_executor_publishes_the_same_folder(ray_cluster, test_media, tmp_path):
    """`run --executor ray --ray-address` (joining this module's instance) writes the folder the
    local runner writes: same rows, features, failed.jsonl and card layout."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for path in (test_media.english, test_media.no_audio, test_media.corrupt):
        shutil.copy(path, videos / path.name)
    address = ray_cluster.get_runtime_context().gcs_address
    local = _cli("run", "probe", "--videos", str(videos), "--out", str(tmp_path / "local"))
    remote = _cli("run", "probe", "--videos", str(videos), "--out", str(tmp_path / "ray"), "--executor", "ray", "--ray-address", address)
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    assert "3 rows written" in remote.stdout and "rows with errors: 1" in remote.stdout
    assert re.search(r"^time per step \(worker seconds summed over the Ray workers; the steps overlap\): probe \d+\.\ds$",
                     remote.stdout, re.M), remote.stdout
    want = load_dataset(str(tmp_path / "local"), split="train")
    got = load_dataset(str(tmp_path / "ray"), split="train")
    assert got.features == want.features
    assert sorted(got.to_list(), key=lambda r: r["video_id"]) == sorted(want.to_list(), key=lambda r: r["video_id"])
    for name in ("failed.jsonl",):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "local" / name).read_text()
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(p.name for p in (tmp_path / "local").iterdir())


def test_a_batch_that_raises_becomes_row_errors_not_a_failed_task(ray_cluster, tmp_path):
    ds = Dataset.from_dict({"video_id": list("abcdef"), "x": [1.0, 2.0, -1.0, 3.0, 4.0, 5.0]})
    steps = [ToyBatchRaises(), ToyFanOut(), ToyModelStage(scale=1.0), Filter("y_band", "y", low=2.5)]
    result = _executor(tmp_path / "ray", block_rows=4).run(ds, steps)
    parts: dict[str, list[int]] = {}
    for row in result.dataset:
        parts.setdefault(row["video_id"], []).append(row["part"])
    assert parts == {"d": [0, 1, 2], "e": [0, 1, 2, 3], "f": [0, 1, 2, 3, 4]}  # y = x >= 2.5
    assert all(r["z"] == r["x"] + 1 for r in result.dataset)
    errors = {r["video_id"]: r["errors"] for r in result.dropped if r["errors"]}
    assert errors == {"c": [{"stage": "batch_raises", "error": "ValueError: a negative x in the batch"}]}
    assert sorted(result.dropped["video_id"]) == ["a", "b", "b", "c"]


def test_a_model_that_cannot_load_stops_the_run_with_its_own_error(ray_cluster, tmp_path):
    """As locally: a setting error in an actor is the run's error (one line in the CLI), not
    a row error on every row and not Ray's wrapped report."""
    ds = Dataset.from_dict({"video_id": ["a", "b"], "x": [1.0, 2.0]})
    with pytest.raises(SettingError) as caught:
        _executor(tmp_path / "ray").run(ds, [ToyMissingModel()])
    assert str(caught.value) == "missing_model.path='/nonexistent/model' does not exist: give the model's folder"
    with pytest.raises(SettingError, match="does not exist"):
        Runner(tmp_path / "local").run(ds, [ToyMissingModel()])


def test_a_killed_worker_is_restarted_and_no_row_is_lost_or_doubled(ray_cluster, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    ds = Dataset.from_dict({"video_id": [f"v{i:02d}" for i in range(16)], "x": [float(i) for i in range(16)]})
    steps = [ToySlowModel(delay=0.25, pid_dir=str(pids))]
    killed: list[int] = []

    def kill_first_worker() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not list(pids.iterdir()):
            time.sleep(0.1)
        time.sleep(1.0)  # mid-run: the worker holds a task
        pid = int(next(pids.iterdir()).name)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_first_worker)
    killer.start()
    result = _executor(tmp_path / "ray", block_rows=2, group_size=2).run(ds, steps)
    killer.join()
    assert killed and len(list(pids.iterdir())) >= 2  # the killed actor was replaced
    assert sorted(result.dataset["video_id"]) == [f"v{i:02d}" for i in range(16)]  # each row once
    assert result.dataset["y"] == [3.0 * i for i in range(16)]


DRIVER = """
import sys, ray
sys.path.insert(0, {root!r})
from datasets import Dataset
from lomo_datasets.execution.ray_executor import RayExecutor, RaySettings
from tests.toy_stages import ToySlowModel
ray.init(address={address!r}, logging_level="WARNING", runtime_env={{"env_vars": {{"PYTHONPATH": {root!r}}}}})
ds = Dataset.from_dict({{"video_id": [f"v{{i:02d}}" for i in range(16)], "x": [float(i) for i in range(16)]}})
RayExecutor({work!r}, RaySettings(block_rows=2, group_size=2)).run(ds, [ToySlowModel(delay={delay})])
"""


def test_a_killed_driver_is_resumed_without_redoing_written_rows(ray_cluster, tmp_path, caplog):
    """The driver dies (SIGKILL) after some blocks are written; the rerun runs only the rows
    that no written file holds, and the result has every row once."""
    work = tmp_path / "work"
    address = ray_cluster.get_runtime_context().gcs_address
    script = DRIVER.format(root=str(ROOT), address=address, work=str(work), delay=0.15)
    driver = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, **TEST_ENV}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(work.glob("ray-*/part-*.parquet"))) < 2 and driver.poll() is None:
            time.sleep(0.1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    written = list(work.glob("ray-*/part-*.parquet"))
    assert 2 <= len(written) < 8, "the driver should die mid-run"
    import pyarrow.parquet as pq

    before = sum(pq.read_table(p).num_rows for p in written)
    ds = Dataset.from_dict({"video_id": [f"v{i:02d}" for i in range(16)], "x": [float(i) for i in range(16)]})
    with caplog.at_level("WARNING", logger="lomo_datasets.execution.ray_executor"):
        result = _executor(work, block_rows=2, group_size=2).run(ds, [ToySlowModel(delay=0.15)])
    assert result.dataset["video_id"] == [f"v{i:02d}" for i in range(16)]
    resumed = [r.getMessage() for r in caplog.records if "already written" in r.getMessage()]
    assert resumed and resumed[0].startswith(f"ray: {before} of 16 input rows already written")
    assert resumed[0].endswith(f"running the other {16 - before}")  # nothing written is redone


def test_a_damaged_part_file_is_found_and_its_rows_recomputed(ray_cluster, tmp_path, caplog):
    ds = Dataset.from_dict({"video_id": list("abcdef"), "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    steps = [ToyModelStage(scale=2.0)]
    first = _executor(tmp_path / "work", block_rows=2, group_size=2).run(ds, steps)
    parts = sorted((tmp_path / "work").glob("ray-*/part-*.parquet"))
    assert len(parts) == 3
    data = bytearray(parts[0].read_bytes())
    data[len(data) // 2] ^= 0xFF  # altered in place after it was written
    parts[0].write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="lomo_datasets.execution"):
        again = _executor(tmp_path / "work", block_rows=2, group_size=2).run(ds, steps)
    assert any(f"{parts[0]} was changed after it was written (checksum differs); recomputing its rows" in r.getMessage()
               for r in caplog.records)
    assert any("4 of 6 input rows already written" in r.getMessage() for r in caplog.records)
    assert again.dataset["y"] == first.dataset["y"] == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]


def test_a_lost_node_is_one_line_that_says_to_rerun():
    """Ray's node and actor death errors (also wrapped in a task error) become one line with
    what is kept; other errors are not taken for them."""
    from lomo_datasets.core.errors import explain
    from lomo_datasets.execution.ray_executor import ClusterLostError, _lost_node

    class ActorDiedError(Exception):  # the name Ray's class has
        pass

    class Wrapped(Exception):
        def __init__(self, cause):
            super().__init__("task failed")
            self.cause = cause

    assert _lost_node(ActorDiedError()) and _lost_node(Wrapped(ActorDiedError()))
    assert not _lost_node(ValueError("bad row")) and not _lost_node(Wrapped(KeyError("x")))
    message, status = explain(ClusterLostError("ray: a node or worker was lost ...; rerun the same command: 3 of 8 input rows are written"))
    assert status == 1 and message.startswith("ray: a node or worker was lost") and "unexpected" not in message
