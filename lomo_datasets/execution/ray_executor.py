"""The Ray executor: a recipe's steps as Ray Data operators, streaming from step to step.

It runs the same step objects as the local runner (``pipeline.Runner``) and returns the same
``RunResult``, so ``recipes.run_recipe`` publishes its rows through the same code. Only this
module imports Ray; the stage contract does not know it exists. A stage is used only through
its public call ``stage(batch, rank)`` and its ``output_features(...)``.

How steps map to Ray Data:

- a stage that holds a model (``has_model``) runs in a fixed pool of actors
  (``ActorPoolStrategy``): each actor loads the model once and keeps it for the whole run. An
  actor asks Ray for ``gpus_per_actor`` GPUs when the cluster has GPUs and the stage's device
  is not ``cpu``; Ray then sets ``CUDA_VISIBLE_DEVICES`` so the device rule gives ``cuda:0``.
  Without a GPU the actor's copy of the stage is pinned to ``cpu`` (an actor that asked for no
  GPU would otherwise see every GPU of its node);
- a stage without a model runs as Ray tasks;
- a filter (a stage whose ``keep_rows`` drops rows) marks the rows it drops instead of removing them: later steps pass marked rows
  through without running on them, and the rows come back to the driver for the card and
  ``dropped.jsonl`` (Ray Data has no side output; its ``filter`` would lose them).

Batches are Arrow tables (``batch_format="pyarrow"``) typed by the stage's declared features,
so nested list-of-struct columns (segments, words) survive; the numpy format loses them.

Faults: a bad row is a row error (the contract's own: a batch that raises runs again item by
item), so a bad row never fails a Ray task; a worker that dies (SIGKILL,
out of memory) is restarted and its task retried, at most ``retries`` times (Ray Data's
defaults retry forever). Every input row carries its index through the steps; the last
operator writes each block to one Parquet file, atomically (written aside, then renamed). A
rerun of the same input and settings, after the driver died, skips the rows those files hold
and redoes only the blocks that were in flight (at most about ``2 x workers`` blocks of
``block_rows`` input rows per step).

Output order is the input's: the driver assembles the written parts in input-index order
(``result.BlockAssembly``), so the result equals the local runner's row for row.

The driver streams: it writes the input rows to the work dir as blocks (``store.write_blocks``,
a slice of the input at a time) and hands Ray only their numbers, each task reads its block
(``read_input``), the written list is iterated, not collected, and the part files are assembled
one at a time into Arrow files the returned datasets map. So its memory does not grow with the
rows (``benchmarks/bench_scale.py --driver-memory``).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Value

from lomo_datasets.execution.pipeline import (
    DEFAULT_GROUP_SIZE, ROW, Plan, check_group_size, map_grouped, models_loaded, shard_range, with_row_index,
)
from lomo_datasets.execution import store
from lomo_datasets.execution.result import (
    DROPPED, KEPT, LOADS as _LOADS, PID as _PID, SECS as _SECS, VANISHED, WORKER_SECONDS, Assembly, BlockAssembly, RunResult,
    runs_of_parts, scratch_folder,
)
from lomo_datasets.core.stage import MissingDependencyError, SettingError, Stage, cpu_threads, thread_environment

logger = logging.getLogger(__name__)

INSTALL_HINT = "the Ray executor needs Ray Data: pip install 'lomo-datasets[ray]'"

#: Hidden columns the executor adds (dropped before anything is returned); the marks
#: (``DROPPED``, ``KEPT``, ``VANISHED``, per step ``_PID``, ``_LOADS``, ``_SECS``) are the
#: result assembly's (``result.BlockAssembly`` reads them back).
_HIDDEN = Features({ROW: Value("int64"), DROPPED: Value("int32")})
#: Blocks per input file the driver writes to the work dir for the tasks to read.
BLOCKS_PER_FILE = 64


class ClusterLostError(RuntimeError):
    """A Ray node or actor died and Ray's bounded retries could not place the work again."""


def _lost_node(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it wraps) says a node or an actor was lost."""
    names = ("ActorUnavailableError", "ActorDiedError", "NodeDiedError", "RayActorError", "ObjectLostError",
             "OwnerDiedError", "WorkerCrashedError")
    seen = 0
    while exc is not None and seen < 10:
        if any(k.__name__ in names for k in type(exc).__mro__):
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
        seen += 1
    return False


def import_ray() -> Any:
    """``ray`` (with Ray Data), or a one-line error that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingDependencyError(INSTALL_HINT) from None
    return ray


@dataclass
class RaySettings:
    """How the executor uses the cluster; checked before Ray starts."""

    #: Ray cluster address ("auto", "ray://host:10001", ...); None starts or joins a local one.
    address: str | None = None
    #: Actors per model stage (``--num-proc``): one per GPU on a GPU cluster.
    workers: int = 1
    gpus_per_actor: float = 1.0
    #: Input rows per block: the unit of parallelism and of what a rerun may redo, rounded to
    #: whole batch groups. None: one group.
    block_rows: int | None = None
    #: Input rows per batch group (``--group-size``), as for the local runner.
    group_size: int = DEFAULT_GROUP_SIZE
    #: Restarts of a dead actor and retries of a lost task (never unbounded).
    retries: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise SettingError(f"--num-proc must be >= 1 (actors per model stage under Ray), got {self.workers!r}")
        if not isinstance(self.gpus_per_actor, (int, float)) or not 0 < self.gpus_per_actor <= 64:
            raise SettingError(f"gpus_per_actor must be a number in (0, 64], got {self.gpus_per_actor!r}")
        if self.block_rows is not None and (not isinstance(self.block_rows, int) or self.block_rows < 1):
            raise SettingError(f"block_rows must be an integer >= 1 or null, got {self.block_rows!r}")
        check_group_size(self.group_size)
        if not isinstance(self.retries, int) or not 0 <= self.retries <= 100:
            raise SettingError(f"retries must be an integer in 0..100, got {self.retries!r}")


# --------------------------------------------------------------------------------------------
# What runs on the workers
# --------------------------------------------------------------------------------------------


def _to_table(columns: dict[str, list], features: Features) -> Any:
    import pyarrow as pa

    return pa.Table.from_pydict(features.encode_batch(columns), schema=features.arrow_schema)


def _nulls(n: int, features: Features) -> dict[str, list]:
    return {k: [None] * n for k in features}


class StageOp:
    """One stage as a Ray Data batch function over Arrow tables.

    ``carried`` are the executor's own columns on the way in (the row index, the drop mark,
    earlier steps' load counters); they travel past the stage unchanged."""

    def __init__(self, stage: Stage, index: int, in_features: Features, out_features: Features, carried: Features, count_loads: bool,
                 group_size: int = DEFAULT_GROUP_SIZE):
        self.stage = stage
        self.group_size = group_size
        self.index = index
        self.in_features = in_features
        self.out_features = out_features
        self.carried = carried
        self.count_loads = count_loads
        self.fan_out = bool(getattr(stage, "fan_out", False))

    def columns(self) -> Features:
        """The output schema: the stage's, the carried columns, and this step's load counters."""
        own = {_PID.format(self.index): Value("int64"), _LOADS.format(self.index): Value("int64")} if self.count_loads else {}
        return Features({**self.out_features, **self.carried, **own, _SECS.format(self.index): Value("float64")})

    def __call__(self, table: Any) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        schema = self.columns()
        marked = pc.not_equal(table[DROPPED], KEPT)
        parts = []
        todo = table.filter(pc.invert(marked))
        if todo.num_rows:
            parts.append(self._run(todo))
        passed = table.filter(marked)
        if passed.num_rows:  # dropped by an earlier filter: carried along, not processed
            columns = passed.to_pydict()
            parts.append(_to_table({k: columns.get(k, [None] * passed.num_rows) for k in schema}, schema))
        if not parts:
            return _to_table(_nulls(0, schema), schema)
        return pa.concat_tables(parts)

    def _run(self, table: Any) -> Any:
        import pyarrow.compute as pc

        started = time.perf_counter()
        # Blocks hold whole batch groups; in input order, the stage gets the local runner's batches.
        table = table.take(pc.sort_indices(table, sort_keys=[(ROW, "ascending")]))  # stable: fan-out order kept
        columns = table.to_pydict()
        carried = {k: columns.pop(k) for k in self.carried}
        batch = self.in_features.decode_batch(columns)
        n = table.num_rows
        if not self.stage.maps_rows:  # writes nothing (a filter): only its keep below
            out = {**batch, **carried}
        elif self.fan_out:
            out = self._fan_out(batch, carried, n)
        else:
            out = {**self._call({**batch, ROW: carried[ROW]}, n), **carried}
        rows = len(out[ROW])
        if self.stage.drops_rows:  # the rows it does not keep are marked with this step's index
            live = [i for i, state in enumerate(out[DROPPED]) if state == KEPT]
            keep = self.stage.keep_rows({k: [out[k][i] for i in live] for k in self.stage.input_columns()})
            for i, kept in zip(live, keep):
                if not kept:
                    out[DROPPED][i] = self.index
        if self.count_loads:
            out[_PID.format(self.index)] = [os.getpid()] * rows
            out[_LOADS.format(self.index)] = [models_loaded()] * rows
        out[_SECS.format(self.index)] = [(time.perf_counter() - started) / rows] * rows if rows else []
        return _to_table({k: out.get(k, [None] * rows) for k in self.columns()}, self.columns())

    def _call(self, batch: dict[str, list], n: int) -> dict[str, list]:
        """The stage's outputs for ``batch``. The contract turns a bad row into a row error (a
        batch that raises runs again item by item), so a Ray task fails only for what stops a
        local run too: a model that cannot load, a missing input column, a bug in a stage."""
        return map_grouped(self.stage, batch, None, self.group_size) if ROW in batch else self.stage(batch, None)

    def _fan_out(self, batch: dict[str, list], carried: dict[str, list], n: int) -> dict[str, list]:
        """A stage that makes any number of rows per input row. The carried columns travel
        in the batch (a fan-out stage copies its input columns); an input row that makes no
        rows leaves a placeholder, so that a rerun knows it is done."""
        out = self._call({**batch, **carried}, n)
        if ROW not in out:  # the stage did not copy its input columns: call it row by row
            out = {}
            for i in range(n):
                part = self._call({k: v[i : i + 1] for k, v in batch.items()}, 1)
                made = len(next(iter(part.values()), []))
                for k, v in {**part, **{k: v[i : i + 1] * made for k, v in carried.items()}}.items():
                    out.setdefault(k, []).extend(v)
        missing = sorted(set(carried[ROW]) - set(out.get(ROW, [])))
        if missing:
            for k in {**self.out_features, **self.carried}:
                out.setdefault(k, []).extend([None] * len(missing))
            out[ROW][-len(missing):] = missing
            out[DROPPED][-len(missing):] = [VANISHED] * len(missing)
        return out


class ActorStageOp:
    """``StageOp`` as the callable class an actor pool needs (the model lives in the actor)."""

    def __init__(self, op: StageOp):
        self.op = op

    def __call__(self, table: Any) -> Any:
        return self.op(table)


def _input_name(index: int) -> str:
    return f"input-{index:06d}.arrow"


def read_input(ids: Any, folder: str, ends: list[int]) -> Any:
    """The input blocks numbered ``ids["id"]`` (``RayExecutor._write_inputs``), read from the
    work dir by the task that runs them."""
    import bisect

    import pyarrow as pa

    tables = []
    for k in ids["id"].to_pylist():
        index = bisect.bisect_right(ends, k)
        tables.append(store.read_block(store.join(folder, _input_name(index)), k - (ends[index - 1] if index else 0)))
    return pa.concat_tables(tables) if len(tables) != 1 else tables[0]


def write_block(table: Any, folder: str) -> Any:
    """Write one block to the work dir's store as one part file (``store.write_part``: named by
    the input rows it holds, its size and checksum, checked when a rerun reuses it)."""
    import pyarrow as pa

    name = store.write_part(table, folder, table[ROW].to_pylist())
    return pa.table({"file": [name], "rows": [table.num_rows]})


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


#: Seconds to wait for a TCP connection to ``--ray-address`` before giving up.
CONNECT_TIMEOUT = 10.0


def check_reachable(address: str | None, timeout: float = CONNECT_TIMEOUT) -> None:
    """A ``SettingError`` in one line when nothing accepts a connection at ``address``
    (``host:port`` or ``ray://host:port``) within ``timeout`` seconds; ``None``/``auto``/``local``
    are Ray's own lookups and pass."""
    import socket

    if not address or address in ("auto", "local"):
        return
    text = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = text.rstrip("/").rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingError(f"--ray-address {address!r}: use HOST:PORT (the head's GCS port, 6379 by default) or ray://HOST:10001")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise SettingError(
            f"--ray-address {address}: cannot connect within {timeout:g} s ({reason}); start the cluster "
            "(`ray start --head`) or fix the address, or leave --ray-address out to start a local Ray"
        ) from None


class RayExecutor:
    """Runs steps over a dataset on a Ray cluster; ``run`` returns what ``Runner.run`` does."""

    def __init__(self, work_dir: str | os.PathLike, settings: RaySettings | None = None):
        self.work_dir = work_dir if store.is_remote(work_dir) else Path(work_dir)  # a local folder or s3://...
        self.settings = settings or RaySettings()
        self.ray = import_ray()
        check_reachable(self.settings.address)  # bounded: Ray itself retries an unreachable address for minutes

    # -- cluster ---------------------------------------------------------------------------

    def _connect(self) -> bool:
        """Join the running Ray (in this process, ``address`` or ``RAY_ADDRESS``) or start a
        local one; True when this call started it (and should stop it)."""
        ray = self.ray
        if ray.is_initialized():
            return False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline machines: no usage reports
        started = time.perf_counter()
        ray.init(
            address=self.settings.address, include_dashboard=False, logging_level=logging.WARNING,
            log_to_driver=True,
        )
        logger.info("ray: connected in %.1fs: %s", time.perf_counter() - started, ray.cluster_resources())
        return True

    def _context(self) -> None:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        # One block per task output: all rows of an input row (fan-out) stay in one file.
        ctx.target_max_block_size = None
        if not logger.isEnabledFor(logging.INFO):  # Ray Data logs every execution at INFO; -v shows it
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        ctx.actor_task_retry_on_errors = False  # an error that stops a run is not retried
        ctx.raise_original_map_exception = True  # a setting error reaches the user as itself
        ctx.max_consecutive_actor_init_deaths = max(1, self.settings.retries)

    # -- run -------------------------------------------------------------------------------

    def run(self, ds: Dataset, steps: list[Stage], shard: tuple[int, int] | None = None) -> RunResult:
        """Run ``steps`` over ``ds`` (or part ``shard = (i, n)`` of it) on Ray."""
        s = self.settings
        first, last = shard_range(len(ds), shard, s.group_size)
        ds = ds.select(range(first, last)) if (first, last) != (0, len(ds)) else ds
        self._first = first  # the input index of ds's first row (ROW travels as a hidden column)
        plan = Plan.make(with_row_index(ds, first), steps, s.group_size)
        features = plan.features  # the schema before each step, then after the last
        folder = store.join(self.work_dir, f"ray-{plan.fingerprint[:16]}")
        store.makedirs(folder)
        for stale in ([] if store.is_remote(folder) else folder.glob(".part-*.tmp")):  # left by a killed writer
            stale.unlink()
        started = time.perf_counter()
        done = _rows_written(store.parts(folder))
        inputs = store.join(folder, "input")  # the input blocks, for the tasks to read (any node)
        ends = self._write_inputs(ds, done, inputs)
        todo = self._todo
        if len(done):
            (logger.warning if todo else logger.info)(
                "ray: %d of %d input rows already written in %s; running the other %d", len(done), len(ds), folder, todo
            )
        del done
        if todo:
            stop = self._connect()
            try:
                self._context()
                self._execute(steps, features, inputs, ends, folder)
            except self.ray.exceptions.RayTaskError as exc:
                # what stops a local run (a model that cannot load, a missing column) stops
                # this one with the same one-line error; anything else keeps Ray's report
                cause = exc.cause
                if isinstance(cause, (SettingError, MissingDependencyError)):
                    # Ray Data appends its retry advice to the message: keep the error's line
                    raise type(cause)(str(cause).splitlines()[0]) from None
                if _lost_node(cause):
                    raise self._lost(folder, len(ds), cause) from None
                raise
            except Exception as exc:
                if _lost_node(exc):
                    raise self._lost(folder, len(ds), exc) from None
                raise
            finally:
                if stop:
                    self.ray.shutdown()
        store.remove_tree(inputs)
        elapsed = time.perf_counter() - started
        scratch = scratch_folder(None if store.is_remote(folder) else Path(folder), "result")
        result = _assemble(folder, steps, features, Assembly(self.work_dir, len(ds), ROW, WORKER_SECONDS), scratch)
        logger.info("ray: %d rows (%.1fs)", len(result.dataset), elapsed)
        return result

    def _write_inputs(self, ds: Dataset, done: Any, folder: Any) -> list[int]:
        """Write the input rows not yet ``done`` to ``folder`` in the work dir, cut into blocks
        of whole batch groups (a file per ``BLOCKS_PER_FILE`` blocks, a record batch per block),
        a slice of ``ds`` at a time; returns the running count of blocks at the end of each file
        (block ``k`` is in the first file whose count passes ``k``). ``self._todo``: the rows."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        s = self.settings
        # A block is whole batch groups (each stage cuts its batches inside them, as locally);
        # every operator takes whole blocks (batch_size=None), so no block is split or mixed.
        per_block = max(1, (s.block_rows or s.group_size) // s.group_size)
        span = per_block * s.group_size  # input rows a block covers
        store.remove_tree(folder)  # left by a run that stopped
        store.makedirs(folder)
        arrow = ds.with_format("arrow")
        done_rows = pa.array(done, pa.int64()) if len(done) else None
        ends: list[int] = []
        self._todo = 0
        first, stop = self._first, self._first + len(ds)
        a = first
        while a < stop:
            b = min(stop, (a // (span * BLOCKS_PER_FILE) + 1) * span * BLOCKS_PER_FILE)
            table = arrow[a - first : b - first]
            table = table.append_column(ROW, pa.array(np.arange(a, b, dtype=np.int64)))
            table = table.append_column(DROPPED, pa.array(np.full(b - a, KEPT, dtype=np.int32)))
            if done_rows is not None:
                table = table.filter(pc.invert(pc.is_in(table[ROW], value_set=done_rows)))
            a = b
            if not table.num_rows:
                continue
            keys = table[ROW].to_numpy() // span
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            cuts = list(zip(starts.tolist(), np.r_[starts[1:], len(keys)].tolist()))
            store.write_blocks([table.slice(x, y - x) for x, y in cuts], folder, _input_name(len(ends)))
            ends.append((ends[-1] if ends else 0) + len(cuts))
            self._todo += table.num_rows
        return ends

    def _lost(self, folder: Path, rows: int, exc: BaseException) -> "ClusterLostError":
        kept = len(_rows_written(store.parts(folder)))
        return ClusterLostError(
            f"ray: a node or worker was lost and its work could not be placed again ({type(exc).__name__}); "
            f"rerun the same command: {kept} of {rows} input rows are written in {folder} and are kept"
        )

    def _execute(self, steps: list, features: list[Features], inputs: Any, ends: list[int], folder: Any) -> None:
        with warnings.catch_warnings():
            # Bounded retries (max_retries, max_restarts, max_task_retries) have no named
            # parameter of map_batches yet; Ray 2.60 warns about the remote arguments.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            warnings.filterwarnings("ignore", message=".*minimum number of concurrent actors")
            self._stream(steps, features, inputs, ends, folder)

    def _stream(self, steps: list, features: list[Features], inputs: Any, ends: list[int], folder: Any) -> None:
        """The steps over the input blocks (``_write_inputs``): Ray reads each block from the
        work dir in a task, so the driver hands Ray only the count of blocks."""
        import pyarrow.compute as pc
        import ray.data
        from ray.data import ActorPoolStrategy

        s = self.settings
        n_blocks = ends[-1]
        model_stages = [st for st in steps if st.active and st.has_model]
        resources = self.ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
        # Logical CPUs per operator: every actor pool plus two tasks fit at once on the smallest
        # node, else fixed pools and tasks can wait for each other forever without an error, and
        # after a node is lost its actors restart only where their share still fits.
        per_node = [float(n.get("Resources", {}).get("CPU", 0)) for n in self.ray.nodes() if n.get("Alive")]
        smallest = min([c for c in per_node if c > 0] or [cpus])
        share = min(1.0, smallest / (len(model_stages) * s.workers + 2))
        logger.info(
            "ray: %d rows in %d blocks; %d model stage(s) x %d actor(s); %.2f logical CPU per operator",
            self._todo, n_blocks, len(model_stages), s.workers, share,
        )
        # One small block per input block, made here (as from_arrow made the blocks before): a
        # read operator would ask for a whole CPU and could starve the actor pools of theirs.
        data = ray.data.from_items([{"id": k} for k in range(n_blocks)], override_num_blocks=n_blocks).map_batches(
            read_input, fn_kwargs={"folder": str(inputs), "ends": ends}, batch_format="pyarrow", batch_size=None,
            num_cpus=share, max_retries=s.retries,
        )
        carried = Features(_HIDDEN)
        for index, step in enumerate(steps):
            if not step.active:
                continue
            modelled = step.has_model
            wants_gpu = modelled and gpus > 0 and step.device != "cpu"
            stage = step if wants_gpu or not modelled else _pinned_to_cpu(step)
            if wants_gpu and step.device != "auto":
                logger.warning("%s: device %s is replaced by the GPU Ray gives the actor (cuda:0 inside it)", step.name, step.device)
                stage = _with_device(step, "auto")
            op = StageOp(stage, index, features[index], features[index + 1], carried, count_loads=modelled, group_size=s.group_size)
            carried = Features({k: f for k, f in op.columns().items() if k not in op.out_features})
            common = dict(batch_format="pyarrow", batch_size=None, num_cpus=share)
            if modelled:
                # the stage's CPU threads (a setting), as in a local worker: not Ray's share of the cores
                actor_env = {"env_vars": thread_environment(cpu_threads(step))}
                data = data.map_batches(
                    ActorStageOp, fn_constructor_kwargs={"op": op}, compute=ActorPoolStrategy(size=s.workers),
                    num_gpus=s.gpus_per_actor if wants_gpu else 0, runtime_env=actor_env,
                    max_restarts=s.retries, max_task_retries=s.retries,
                    **common,
                )
            else:
                data = data.map_batches(op, **common, max_retries=s.retries)
        data = data.map_batches(write_block, fn_kwargs={"folder": str(folder)}, batch_format="pyarrow", batch_size=None, num_cpus=share, max_retries=s.retries)
        blocks = rows = 0
        for written in data.iter_batches(batch_size=None, batch_format="pyarrow"):  # streamed: nothing collected
            blocks += written.num_rows
            rows += int(pc.sum(written["rows"]).as_py() or 0)
        logger.info("ray: wrote %d blocks (%d rows) to %s", blocks, rows, folder)


def _with_device(stage: Stage, device: str) -> Stage:
    import copy

    clone = copy.copy(stage)
    clone.device = device
    return clone


def _pinned_to_cpu(stage: Stage) -> Stage:
    return stage if stage.device == "cpu" else _with_device(stage, "cpu")


def _rows_written(parts: list[Any]) -> Any:
    """The input rows the part files hold (an Arrow array: no Python object per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = [store.read_part(path, columns=[ROW])[ROW].combine_chunks() for path in parts]
    if not arrays:
        return pa.array([], pa.int64())
    return pc.unique(pa.concat_arrays([a.cast(pa.int64()) for a in arrays]))


def _assemble(folder: Any, steps: list, features: list[Features], assembly: Assembly, scratch: Path) -> RunResult:
    """The run's result from the part files (``result.BlockAssembly``): the kept rows in input
    order with the last step's features, each filter's dropped rows with the columns that filter
    saw, model loads per step and worker, worker seconds per stage step (summed over workers;
    rows of an earlier, resumed run count with the seconds they took then). One part (or one run
    of parts whose rows interleave) in memory at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    spans = []
    for path in store.parts(folder):
        rows = store.read_part(path, columns=[ROW])[ROW]
        if len(rows):
            spans.append((path, pc.min(rows).as_py(), pc.max(rows).as_py()))
    blocks = BlockAssembly(assembly, steps, features, scratch)
    for run in runs_of_parts(spans):
        tables = [store.read_part(path) for path in run]
        blocks.add(pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0])
        del tables
    return blocks.finish()
