"""The recipe runner: ingest, then each step of a recipe, persisted chunk by chunk.

A recipe is an ordered list of steps: stages (maps) and threshold filters. The runner builds
every step from the recipe defaults, the ``--config`` file and ``--set`` overrides *before*
running anything (a bad setting fails at once), then runs them in order. Each step's output is
saved under the work dir in chunks with completion markers, in a folder named by a fingerprint
chained from the input and every earlier step. A rerun with unchanged settings reuses it;
changing a step's settings, version or code recomputes that step and the steps after it.

Crash safety: a chunk is written to a temporary folder and renamed into place before its
``_SUCCESS`` marker is written, so after a crash (even SIGKILL) a rerun reuses every finished
chunk and recomputes only the unfinished ones. The marker records the size and SHA-256 of
every file the chunk (or step) wrote; reuse checks them, and a damaged or missing file makes
that part recompute (one log line says which file), so recorded bytes are all that is reused
(``store``: the one work-dir store of both executors). Chunk folders are named by their row range, so a
rerun with another ``chunk_size`` never reuses a chunk that covers other rows.

Sameness: the output is a function of the inputs and the settings, never of the schedule.
Every row carries the index of the input row it comes from (``ROW``; a clip keeps its video's);
input rows form groups of ``group_size`` (``--group-size``), and a step's batches are cut from
one group's rows in input order (``batch_cuts``), so after filters and fan-out every model call
sees the same rows together. Chunks, the shards of a chunk that the workers share, ``--shard``
parts and Ray blocks all hold whole groups; CPU threads per model call are a stage setting
(``stage.cpu_threads``), not a share of the cores.

Many nodes: ``--shard i/n`` runs part i of n of the ingested input (contiguous whole groups);
``merge_outputs`` checks that the parts are the shards of one run (same recipe, settings and
input; none twice, none overlapping, none missing) and joins them into the folder one unsharded
run writes.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from datasets import Dataset, Features, concatenate_datasets


from lomo_datasets.core import progress

from lomo_datasets.core import safe_yaml
from lomo_datasets.core.bounds import check_settings, did_you_mean
from lomo_datasets.models.check import check_model
from lomo_datasets.core.redact import shorten
from lomo_datasets.core.stage import (  # noqa: F401 (Filter, models_loaded: re-exported)
    Filter, SettingError, Stage, cpu_threads, models_loaded, split_kept, thread_environment,
)
from lomo_datasets.execution import store
from lomo_datasets.execution.result import (  # noqa: F401 (RunResult, WORKER_SECONDS, failed_rows, write_failed_report: re-exported)
    WORKER_SECONDS, Assembly, RunResult, failed_rows, join_dropped as _join_dropped, write_failed_report,
)
from lomo_datasets.execution.store import DONE  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)



@dataclass
class Recipe:
    """An ordered list of steps. ``steps`` holds (name, step class) pairs: a ``Stage``
    dataclass whose fields are the step's settings (``defaults`` fill them); a filter is a stage
    too (``Filter``: one class, so the step's name is its recipe name). ``exports`` write extra files beside the
    published folder: a function ``(dataset, out_folder) -> None``, or a dataclass whose fields
    are the settings of the ``export`` section (``--set export.video_root=...``) and whose
    instances are such functions; ``demo_settings`` are what ``lomo-datasets demo`` adds so
    the recipe gives a useful result on the short sample videos with the small embedded models."""

    name: str
    description: str
    steps: list[tuple[str, type[Stage]]]
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    exports: list[Callable[[Dataset, Path], Any] | type] = field(default_factory=list)
    demo_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: What the published folder is (``publish.card.OUTPUT_KINDS``): its card template, review
    #: layout, yield wording; declared here, never guessed from columns (older folders: guessed).
    output: str = "generic"
    #: Steps that run first only when the input needs them: ``download`` when it has URLs.
    optional: tuple[str, ...] = ("download",)

    def __post_init__(self) -> None:
        from lomo_datasets.publish.card import OUTPUT_KINDS

        if self.output not in OUTPUT_KINDS:
            raise ValueError(f"recipe {self.name!r}: output {self.output!r} is not one of {OUTPUT_KINDS}")
        unknown = set(self.optional) - {"download"}
        if unknown:
            raise ValueError(f"recipe {self.name!r}: optional steps {sorted(unknown)}: only 'download' exists")

    def step_names(self) -> list[str]:
        return [name for name, _ in self.steps]

    def setting_sections(self) -> list[str]:
        """The names ``--set`` and ``--config`` take: the steps, and ``export`` when an export
        has settings."""
        return self.step_names() + (["export"] if any(isinstance(e, type) for e in self.exports) else [])


def load_config(path: str | os.PathLike | None) -> dict[str, dict[str, Any]]:
    """A YAML file mapping step name -> {setting: value} (plain YAML: no anchors, aliases, tags)."""
    if not path:
        return {}
    source = f"--config {path}"
    if not os.path.exists(path):
        raise SettingError(f"{source}: no such file; give a YAML file that maps step names to settings")
    if not os.path.isfile(path):
        kind = "a directory" if os.path.isdir(path) else "not a regular file"
        raise SettingError(f"{source}: is {kind}; give a YAML file that maps step names to settings")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(safe_yaml.MAX_CHARS + 1)
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SettingError(f"{source}: not UTF-8 text; save the config as UTF-8 YAML") from None
    except OSError as exc:
        raise SettingError(f"{source}: cannot read it ({exc.strerror}); check the path and its permissions") from None
    data = safe_yaml.load(text, source) or {}
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in data.items()):
        raise SettingError(f"{source}: the config must map step names to settings, e.g. 'probe: {{verify: true}}'")
    return data


def parse_overrides(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["asr.batch_size=8", ...]`` -> ``{"asr": {"batch_size": 8}}`` (values parsed as plain YAML)."""
    result: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        step, dot, setting = key.strip().partition(".")
        if not sep or not dot or not step or not setting:
            raise SettingError(f"--set {shorten(item)}: use STEP.SETTING=VALUE, e.g. --set probe.verify=false")
        parsed = safe_yaml.load(value, f"--set {shorten(key.strip(), 40)}") if value.strip() else None
        result.setdefault(step, {})[setting] = parsed
    return result


def build_steps(
    recipe: Recipe,
    config: dict[str, dict[str, Any]] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    embedded: bool = False,
) -> list[Stage]:
    """Construct every step of ``recipe`` with its settings; unknown names fail here."""
    names = recipe.setting_sections()
    for source, given in (("--config", config or {}), ("--set", overrides or {})):
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise SettingError(f"{source}: unknown step(s) {shorten(unknown)} for recipe '{recipe.name}'; its steps are {names}")
    steps = []
    for name, step_class in recipe.steps:
        settings: dict[str, Any] = dict(recipe.defaults.get(name, {}))
        settings.update((config or {}).get(name, {}))
        settings.update((overrides or {}).get(name, {}))
        chosen = set((config or {}).get(name, {})) | set((overrides or {}).get(name, {}))
        target = getattr(step_class, "embedded_setting", None)
        if embedded and target and target not in chosen:
            settings[target] = step_class.embedded_model
            # what that model needs with it (the 1.5B LLM runs on CTranslate2), unless set
            settings.update({k: v for k, v in getattr(step_class, "embedded_settings", {}).items() if k not in chosen})
        valid = _valid_settings(step_class)
        _refuse_unknown(name, settings, valid)
        if getattr(step_class, "named_by_recipe", False):
            settings["name"] = name
        try:
            step = step_class.create(**settings)  # the variant its settings pick (talking_head.method)
        except TypeError as exc:
            raise SettingError(f"step '{name}': {shorten(str(exc), 200)}; valid settings: {valid}") from None
        check_model(step)  # a model that cannot be had fails here, before any row
        steps.append(step)
    return steps


def build_exports(
    recipe: Recipe, config: dict[str, dict[str, Any]] | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> list[Callable[[Dataset, Path], Any]]:
    """The recipe's exports, those with settings constructed from the ``export`` section (a bad
    setting fails here, before anything runs)."""
    settings = {**(config or {}).get("export", {}), **(overrides or {}).get("export", {})}
    exports = []
    for export in recipe.exports:
        if isinstance(export, type):
            valid = _valid_settings(export)
            _refuse_unknown("export", settings, valid)
            try:
                export = export(**settings)
            except TypeError as exc:
                raise SettingError(f"step 'export': {shorten(str(exc), 200)}; valid settings: {valid}") from None
            if dataclasses.is_dataclass(export):
                check_settings(export, "export", error=SettingError)
        exports.append(export)
    return exports


def _refuse_unknown(step: str, settings: dict[str, Any], valid: list[str]) -> None:
    """A ``SettingError`` naming the first unknown setting, a near miss and the valid ones."""
    unknown = [key for key in settings if key not in valid]
    if unknown:
        hint = did_you_mean(str(unknown[0]), valid)
        raise SettingError(f"step '{step}': unknown setting {shorten(unknown[0], 40)}{hint}; valid settings: {valid}")


def _valid_settings(step_class: type) -> list[str]:
    skip = {"name"} if getattr(step_class, "named_by_recipe", False) else set()
    return [f.name for f in dataclasses.fields(step_class) if f.name not in skip]


def _fingerprint_dataset(ds: Dataset) -> str:
    """A content fingerprint of the ingested input (so runs in a new process match)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(ds.features.to_dict(), sort_keys=True).encode())
    for batch in ds.iter(batch_size=1000):
        digest.update(json.dumps(batch, sort_keys=True, default=str).encode())
        # each local file's identity: a video replaced in place (same path, new bytes) is new input
        digest.update(json.dumps([file_identity(v) for v in batch.get("video") or []]).encode())
    return digest.hexdigest()[:32]


def file_identity(video: Any) -> list | None:
    """``[size, mtime_ns, inode]`` of a local file; ``[size, ETag or modification time]`` of an
    object in a store read through fsspec (``s3://``: an object replaced under the same key is
    new input); None for an http(s) link or a missing file."""
    if not isinstance(video, str):
        return None
    if "://" in video:
        from lomo_datasets.media.remote import is_remote, info

        if not is_remote(video):
            return None
        try:
            facts = info(video)  # fsspec serves it from the listing's cache when --videos listed a prefix
        except Exception:  # missing, or no access: the probe step says so on its row
            return None
        version = next((str(facts[k]) for k in ("ETag", "etag", "VersionId", "LastModified", "mtime", "updated") if facts.get(k)), None)
        return [facts.get("size"), version]
    try:
        st = os.stat(video)
    except (OSError, ValueError):
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


#: The hidden column of the input row index every row carries through the steps (dropped from
#: what a run returns and publishes).
ROW = "_lomo_row"
#: Input rows per batch group (``--group-size``): a step's batches never mix rows of two groups.
DEFAULT_GROUP_SIZE = 16


def check_group_size(group_size: Any) -> int:
    if not isinstance(group_size, int) or isinstance(group_size, bool) or not 1 <= group_size <= 1_000_000:
        raise SettingError(f"--group-size {group_size!r}: use a whole number of input rows from 1 to 1000000 (default {DEFAULT_GROUP_SIZE})")
    return group_size


def run_fingerprint(ds: Dataset, group_size: int) -> str:
    """The fingerprint the steps' fingerprints chain from: the input rows and the group size."""
    return hashlib.sha256(f"{_fingerprint_dataset(ds)}/groups={group_size}".encode()).hexdigest()[:32]


def batch_cuts(rows: list[int], group_size: int, batch: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: the batches of a sequence of rows given their input indices
    ``rows`` (in input order; a fan-out's rows repeat their input's index): a batch never
    spans two groups (``index // group_size``), and a group's rows are cut every ``batch`` rows
    from the group's first row. So the batches depend only on which rows a group holds, not on
    where a chunk, a worker's shard, a ``--shard`` part or a Ray block starts."""
    cuts: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i] // group_size != rows[start] // group_size or i - start == batch:
            cuts.append((start, i))
            start = i
    return cuts


def batch_bounds(rows: list[int], group_size: int, batch: int, per_part: int) -> list[tuple[int, int]]:
    """Row ranges of at least ``per_part`` rows (the last may be shorter) that end where a
    ``batch_cuts`` batch ends: a chunk, or a worker's share of one, holds whole batches, and
    ``batch_cuts`` of a range that starts at a batch boundary gives the same batches."""
    bounds: list[tuple[int, int]] = []
    start = 0
    for _, end in batch_cuts(rows, group_size, batch):
        if end - start >= per_part or end == len(rows):
            bounds.append((start, end))
            start = end
    return bounds


def map_grouped(stage: Stage, batch: dict[str, list], rank: int | None, group_size: int) -> dict[str, list]:
    """``stage`` over ``batch`` (whole groups, in input order) one ``batch_cuts`` batch at a
    time: the stage's output columns, with the input's other columns (its ``ds.map`` result)."""
    rows = batch[ROW]
    out: dict[str, list] = {}
    for start, end in batch_cuts(rows, group_size, stage.rows_per_batch):
        part = {k: v[start:end] for k, v in batch.items()}
        result = stage(part, rank)
        if not stage.fan_out:
            result = {**part, **result}
        for k, v in result.items():
            out.setdefault(k, []).extend(v)
    return out


def _map_to_file(ds: Dataset, stage: Stage, rank: int | None, group_size: int, path: str) -> Dataset:
    """``ds`` (whole groups) through ``stage``, batch by ``batch_cuts``, written to ``path``."""
    from datasets.arrow_writer import ArrowWriter

    stage.check_input(ds.column_names)
    features = stage.output_features(ds.features)
    rows = ds[ROW]
    with ArrowWriter(features=features, path=path) as writer:
        for start, end in batch_cuts(rows, group_size, stage.rows_per_batch):
            out = map_grouped(stage, ds[start:end], rank, group_size)
            writer.write_batch({k: out.get(k, []) for k in features})
        writer.finalize()
    return Dataset.from_file(path)


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"2/4"`` -> ``(2, 4)``: part 2 of 4 (1-based). ``None`` means the whole input."""
    if text is None or text == "":
        return None
    if isinstance(text, tuple):
        index, count = text
    else:
        left, sep, right = str(text).partition("/")
        try:
            index, count = int(left), int(right)
        except ValueError:
            index = count = None  # type: ignore[assignment]
        if not sep or index is None:
            raise SettingError(f"--shard {text!r}: use I/N with whole numbers, e.g. --shard 1/4 for the first of 4 parts")
    if count < 1 or not 1 <= index <= count:
        raise SettingError(f"--shard {index}/{count}: I must be between 1 and N (N >= 1), e.g. --shard 1/{max(count, 2)}")
    return index, count


def shard_range(rows: int, shard: tuple[int, int] | None, group_size: int = 1) -> tuple[int, int]:
    """The input rows ``[start, end)`` of part ``i`` of ``n``: contiguous whole groups of
    ``group_size`` rows (the split of ``datasets.distributed.split_dataset_by_node`` over the
    groups), so a part never splits a batch group. Parts 1..n in order cover ``[0, rows)``."""
    if shard is None or shard[1] == 1:
        return 0, rows
    index, count = shard
    groups = -(-rows // group_size)
    size, extra = divmod(groups, count)
    first = size * (index - 1) + min(index - 1, extra)
    last = first + size + (1 if index - 1 < extra else 0)
    return min(rows, first * group_size), min(rows, last * group_size)


def take_shard(ds: Dataset, shard: tuple[int, int] | None, group_size: int = 1) -> Dataset:
    """Part ``i`` of ``n`` of ``ds`` (``shard_range``; parts 1..n in order give back ``ds``)."""
    if shard is None or shard[1] == 1:
        return ds
    start, end = shard_range(len(ds), shard, group_size)
    part = _select(ds, start, end)
    logger.info("shard %d/%d: %d of %d rows (groups of %d)", shard[0], shard[1], len(part), len(ds), group_size)
    return part


def with_row_index(ds: Dataset, start: int = 0) -> Dataset:
    """``ds`` with the hidden ``ROW`` column: each row's index in the whole input."""
    from datasets import Value

    if ROW in ds.column_names:
        return ds
    import numpy as np

    return ds.add_column(ROW, np.arange(start, start + len(ds), dtype=np.int64), feature=Value("int64"))


def row_indices(ds: Dataset) -> Any:
    """The ``ROW`` column of ``ds`` as a NumPy array (8 bytes a row, no Python object per row)."""
    import numpy as np

    if not len(ds):
        return np.zeros(0, dtype=np.int64)
    return ds.with_format("numpy", columns=[ROW])[ROW]


def without_row_index(ds: Dataset | None) -> Dataset | None:
    return ds.remove_columns(ROW) if ds is not None and ROW in ds.column_names else ds


def _select(ds: Dataset, start: int, end: int) -> Dataset:
    """Rows ``[start, end)``; ``datasets`` rejects an empty range at the end, so empty is []."""
    return ds.select(range(start, end)) if end > start else ds.select([])


@dataclass
class Plan:
    """What every executor runs, computed once the same way: per step its fingerprint
    (chained from the input rows and the group size through every earlier step: the work dir's
    key) and the schema before it (``features[i]``; ``features[-1]`` after the last step).
    A filter is a stage whose schema does not change and whose ``keep_rows`` drops rows; fan-out is
    a stage that writes rows."""

    steps: list[Stage]
    fingerprints: list[str]
    features: list[Features]
    start: str = ""  #: the input rows' and group size's fingerprint the chain starts from

    @classmethod
    def make(cls, ds: Dataset, steps: list[Stage], group_size: int) -> "Plan":
        """``ds`` holds the ``ROW`` column (``with_row_index``)."""
        fingerprint = run_fingerprint(ds, group_size)
        fingerprints, features = [], [Features({k: f for k, f in ds.features.items() if k != ROW})]
        for step in steps:
            fingerprint = step.fingerprint(fingerprint)
            fingerprints.append(fingerprint)
            features.append(step.output_features(features[-1]))
        return cls(list(steps), fingerprints, features, run_fingerprint(ds, group_size) if not steps else "")

    @property
    def fingerprint(self) -> str:
        """The whole run's key (the last step's fingerprint)."""
        return self.fingerprints[-1] if self.fingerprints else ""


class Executor(Protocol):
    """Runs a recipe's steps over the ingested rows; every executor returns the same
    ``RunResult`` for the same input and settings (only ``timings_kind`` says how it timed).
    ``Runner`` runs them on this machine, ``ray_executor.RayExecutor`` on a Ray cluster."""

    work_dir: Path

    def run(self, ds: Dataset, steps: list[Stage], shard: tuple[int, int] | None = None) -> RunResult: ...


def cap_workers(num_proc: int, rows: int, stage: Any = None) -> int:
    """``num_proc`` capped at the rows of the step and at this machine's CPU cores (its GPUs for
    a model stage when it has any); one log line says so when it caps."""
    from lomo_datasets.core.stage import cuda_device_count

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    gpus = cuda_device_count() if getattr(stage, "has_model", False) else 0
    limit, what = (gpus, f"{gpus} GPUs") if gpus else (cores, f"{cores} CPU cores")
    workers = max(1, min(num_proc, rows, limit))
    if workers < num_proc:
        logger.warning("%s: --num-proc %d capped at %d workers (%d rows, %s)",
                       getattr(stage, "name", "step"), num_proc, workers, rows, what)
    return workers


class StepPool:
    """The workers of one stage step: ``num_proc`` processes that live for the whole step.

    Each worker takes a rank (0..N-1, for the device rule) and the stage's CPU threads
    (``stage.cpu_threads``: a setting, not a share of the cores) when it starts, and keeps its
    model for every chunk of the step: one model load per worker per step, not per chunk. A
    chunk is cut into contiguous shards of whole batch groups (so the stage sees the same
    batches as in one process, ``batch_cuts``), the shards go to
    whichever worker is free, and the chunk is the shards' outputs in order; the runner saves
    it as before, so crash safety per chunk is unchanged. A worker that dies fails the step
    (rerun to resume from the finished chunks). With ``num_proc=1`` the stage runs in this
    process. Workers start with the stage's ``start_method`` (``spawn`` for stages that hold
    torch or CTranslate2 models), else with ``fork``.
    """

    #: Shards per worker and chunk: enough to even out rows of different lengths.
    SHARDS_PER_WORKER = 4

    def __init__(self, stage: Stage, num_proc: int, group_size: int = DEFAULT_GROUP_SIZE):
        self.stage = stage
        self.num_proc = num_proc
        self.group_size = group_size
        self.used = False
        self._executor: Any = None
        self._loads: dict[int, int] = {}
        self._loaded_before = models_loaded()

    def __enter__(self) -> "StepPool":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        # Ctrl-C stops the workers at once; after a failure they finish the shard in hand.
        self.close(abort=exc_type is not None and not issubclass(exc_type, Exception))

    def _start(self) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context(self.stage.start_method or "fork")
        ranks = context.Queue()
        for rank in range(self.num_proc):
            ranks.put(rank)
        threads = cpu_threads(self.stage)
        logger.info("%s: starting %d workers (%d CPU threads per model call)", self.stage.name, self.num_proc, threads)
        started = context.Barrier(self.num_proc)
        executor = ProcessPoolExecutor(
            max_workers=self.num_proc, mp_context=context, initializer=_start_worker,
            initargs=(self.stage, ranks, threads, started, self.group_size),
        )
        # The executor starts workers only when none is idle: N tasks that wait for each other
        # start all N now (every rank, every GPU), not one per small chunk.
        for future in [executor.submit(_wait_for_all_workers) for _ in range(self.num_proc)]:
            future.result()
        return executor

    def map(self, ds: Dataset, scratch: Path, desc: str) -> Dataset:
        """``ds`` through the stage; the map's Arrow files go under ``scratch``."""
        self.used = True
        if self.num_proc == 1:
            part = _map_to_file(ds, self.stage, None, self.group_size, str(scratch / "map.arrow"))
            self._loads[os.getpid()] = models_loaded() - self._loaded_before
            return part
        from concurrent.futures.process import BrokenProcessPool

        # Shards of whole batches (``batch_bounds``), however few: two groups of one row are two
        # shards, so 2 workers share them (a floor of one batch's rows left one worker idle).
        size = math.ceil(len(ds) / (self.num_proc * self.SHARDS_PER_WORKER))
        bounds = batch_bounds(ds[ROW], self.group_size, self.stage.rows_per_batch, size)  # whole batches
        from concurrent.futures import as_completed

        from datasets.utils import tqdm

        try:
            if self._executor is None:
                self._executor = self._start()
            futures = [
                self._executor.submit(_map_in_worker, _select(ds, a, b), str(scratch / f"shard-{k:05d}.arrow"))
                for k, (a, b) in enumerate(bounds)
            ]
            with tqdm(total=len(ds), desc=desc, unit=" examples") as bar:
                for future in as_completed(futures):
                    bar.update(len(future.result()[0]))
            results = [future.result() for future in futures]
        except BrokenProcessPool:
            raise RuntimeError(
                f"{self.stage.name}: a worker process died (killed or out of memory) during {desc}; "
                "rerun the same command to resume from the finished chunks"
            ) from None
        for _, pid, loads in results:
            self._loads[pid] = max(self._loads.get(pid, 0), loads)
        logger.info("%s: %d shards on %d workers", desc, len(bounds), len({pid for _, pid, _ in results}))
        parts = [part for part, _, _ in results]
        return concatenate_datasets(parts) if len(parts) > 1 else parts[0]

    def loads(self) -> list[int]:
        """Models each worker loaded for this step (one entry per worker that ran)."""
        return sorted(self._loads.values())

    def worker_loads(self) -> dict[int, int]:
        """Models loaded for this step by worker (process id)."""
        return dict(self._loads)

    def close(self, abort: bool = False) -> None:
        """Stop the workers: after their work, or at once with ``abort`` (Ctrl-C: waiting for
        the shards in progress would hang the interrupted run). A step that ran in this
        process drops its models here (the workers' go with them)."""
        if self._executor is None:
            if self.used and self.num_proc == 1:
                from lomo_datasets.core.stage import release_models

                release_models(self.stage)
            return
        executor, self._executor = self._executor, None
        if not abort:
            executor.shutdown(wait=True, cancel_futures=True)
            return
        processes = list((getattr(executor, "_processes", None) or {}).values())
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)
        executor.shutdown(wait=True, cancel_futures=True)  # quick now: its workers are gone
        del executor
        gc.collect()  # release the pool's semaphores now (no "leaked semaphore" warning at exit)


#: What a step worker holds: its stage and its rank.
_WORKER: dict[str, Any] = {}


def _start_worker(stage: Stage, ranks: Any, threads: int, started: Any, group_size: int) -> None:
    # the stage's threads, whatever the environment says: before torch/CTranslate2 start their pools
    os.environ.update(thread_environment(threads))
    # a forked worker starts with its parent's models: count only the ones it loads
    _WORKER.update(stage=stage, rank=ranks.get(), started=started, loaded=models_loaded(), group_size=group_size)
    import datasets

    datasets.disable_progress_bars()  # the parent reports progress per chunk


def _wait_for_all_workers() -> None:
    _WORKER["started"].wait(timeout=600)


def _map_in_worker(shard: Dataset, cache_file: str) -> tuple[Dataset, int, int]:
    part = _map_to_file(shard, _WORKER["stage"], _WORKER["rank"], _WORKER["group_size"], cache_file)
    return part, os.getpid(), models_loaded() - _WORKER["loaded"]


class Runner:
    """Runs steps over a dataset, persisting each step's output in chunks under ``work_dir``.

    With ``num_proc > 1`` each stage step runs on one ``StepPool`` of that many workers. A chunk
    is about ``chunk_size`` rows, cut where a batch ends (``batch_bounds``)."""

    def __init__(self, work_dir: str | os.PathLike, num_proc: int = 1, chunk_size: int = 256, group_size: int = DEFAULT_GROUP_SIZE,
                 remote: str | None = None):
        if num_proc < 1:
            raise SettingError(f"--num-proc must be >= 1, got {num_proc}")
        if chunk_size < 1:
            raise SettingError(f"chunk_size must be >= 1, got {chunk_size}")
        self.work_dir = Path(work_dir)
        #: A work dir in object storage that ``work_dir`` is this machine's copy of: each finished
        #: chunk and step is uploaded there, and a step or chunk found there (and not here) is
        #: fetched, so a run resumes on another machine.
        self.remote = remote
        self.num_proc = num_proc
        self.group_size = check_group_size(group_size)
        self.chunk_size = chunk_size
        self.reused: dict[str, str] = {}

    def run(self, ds: Dataset, steps: list[Stage], shard: tuple[int, int] | None = None) -> RunResult:
        """Run ``steps`` over ``ds`` (or over part ``shard = (i, n)`` of it)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        start, end = shard_range(len(ds), shard, self.group_size)
        ds = with_row_index(_select(ds, start, end) if (start, end) != (0, len(ds)) else ds, start)
        plan = Plan.make(ds, steps, self.group_size)
        self._assembly = assembly = Assembly(self.work_dir, len(ds), ROW)
        self.model_loads: dict[str, list[int]] = {}
        self.reused = assembly.reused  # filled as steps reuse their work
        for index, (step, fingerprint) in enumerate(zip(steps, plan.fingerprints)):
            step_dir = self.work_dir / f"{index:02d}-{step.name}-{fingerprint[:16]}"
            if step_dir.is_symlink() or (step_dir.exists() and not step_dir.is_dir()):
                raise SettingError(
                    f"{step_dir} is {'a link' if step_dir.is_symlink() else 'a file'} where lomo-datasets keeps the "
                    f"'{step.name}' step's output; move it away (it is left alone) and rerun the same command"
                )
            started = time.perf_counter()
            with progress.step_bar(step.name, len(ds)) as bar:
                if step.active:
                    ds = self._stage(ds, step, step_dir, bar)
                    ds, dropped = split_kept(ds, step)
                    if dropped is not None:  # also when empty: the columns must not depend on which filters dropped rows
                        assembly.add_dropped(dropped)
                else:
                    bar.update(len(ds))
            assembly.step_seconds(step.name, time.perf_counter() - started)
            logger.info("%s: %d rows (%.1fs)", step.name, len(ds), assembly.timings[step.name])
        result = assembly.result(ds)
        self.model_loads = result.model_loads
        return result

    def _stage(self, ds: Dataset, stage: Stage, step_dir: Path, bar=None) -> Dataset:
        bar = bar or progress.NO_BAR
        if not stage.maps_rows:  # writes nothing (a filter): no pass, only its keep
            bar.update(len(ds))
            return ds
        reused_step = self._reuse(step_dir)
        if reused_step is not None:
            logger.info("%s: reusing %s", stage.name, step_dir)
            self._note_reuse(stage.name, f"{len(reused_step[0])} rows", bar)
            bar.update(len(ds))
            return reused_step[0]
        parts = []
        chunks = batch_bounds(row_indices(ds), self.group_size, stage.rows_per_batch, self.chunk_size) or [(0, 0)]
        n_chunks = len(chunks)
        reused = reused_rows = 0
        with StepPool(stage, cap_workers(self.num_proc, len(ds), stage), self.group_size) as pool:  # its workers start with the first computed chunk
            for chunk, (start, end) in enumerate(chunks):
                chunk_dir = step_dir / f"chunk-{start:09d}-{end:09d}"
                found = self._reuse(chunk_dir)
                if found is not None:
                    parts.append(found[0])
                    reused += 1
                    reused_rows += len(found[0])
                    bar.update(end - start)
                    continue
                if end == start:  # an empty input (a shard with no rows) still gets the full schema
                    features = stage.output_features(ds.features)
                    parts.append(self._save(Dataset.from_dict({k: [] for k in features}, features=features), chunk_dir))
                    continue
                scratch = chunk_dir / "map.partial"
                shutil.rmtree(scratch, ignore_errors=True)  # left by a crash
                scratch.mkdir(parents=True)
                # the map's own Arrow files go in the chunk folder, not beside the input's
                part = pool.map(_select(ds, start, end), scratch, desc=f"{stage.name} [{chunk + 1}/{n_chunks}]")
                parts.append(self._save(part, chunk_dir))
                bar.update(end - start)
                del part
                shutil.rmtree(scratch, ignore_errors=True)
        if pool.used and stage.has_model:
            for worker, models in pool.worker_loads().items():
                self._assembly.step_loads(stage.name, worker, models)
            logger.info("%s: model loads per worker: %s", stage.name, pool.loads())
        if reused:
            logger.info("%s: reused %d of %d finished chunks in %s", stage.name, reused, n_chunks, step_dir)
            self._note_reuse(stage.name, f"{reused} of {n_chunks} chunks ({reused_rows} rows)", bar)
        result = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        result = self._save(result, step_dir)
        for chunk_dir in step_dir.glob("chunk-*"):
            shutil.rmtree(chunk_dir, ignore_errors=True)
            if self.remote:
                store.remove_tree(self._url(chunk_dir))
        return result

    def _url(self, folder: Path) -> str:
        return store.join(self.remote, folder.relative_to(self.work_dir).as_posix())

    def _reuse(self, folder: Path) -> list[Dataset] | None:
        """The finished ``folder`` (``store.reuse``), fetched first from the remote work dir when
        only it has the folder."""
        if self.remote:
            store.pull(folder, self._url(folder))
        return store.reuse(folder, ("data",))

    def _save(self, ds: Dataset, folder: Path) -> Dataset:
        saved = store.save(ds, folder)
        if self.remote:
            store.push(folder, self._url(folder))
        return saved

    def _note_reuse(self, name: str, what: str, bar=None) -> None:
        """Record (for the summary) and show on the step's bar what a step took from the work
        dir; ``store.reuse`` checked the size and SHA-256 of every file its marker lists."""
        self._assembly.note_reuse(name, what)
        if bar is not None:
            bar.set_postfix_str(f"reused {what} (markers verified)")


#: Row reports a run writes beside its published data; ``merge_outputs`` joins them too.
REPORTS = ("failed.jsonl", "dropped.jsonl")


def _split_files(folder: Path) -> dict[str, list[Path]]:
    """The Parquet shards of a published folder by split: those its card names (older folders:
    every ``data/<split>-XXXXX-of-YYYYY*.parquet``)."""
    from lomo_datasets.publish.layout import split_patterns

    patterns = split_patterns(folder)
    if patterns:
        return {split: sorted(folder.glob(pattern)) for split, pattern in patterns.items() if list(folder.glob(pattern))}
    files: dict[str, list[Path]] = {}
    for path in sorted((folder / "data").glob("*.parquet")):
        files.setdefault(path.stem.split("-", 1)[0], []).append(path)
    return files


def _read_parquet(paths: list[Path]) -> Dataset:
    """Parquet shards written by ``publish`` as one Dataset, features from their metadata
    (also when a part has no rows, which ``load_dataset`` refuses)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    return Dataset(InMemoryTable(pa.concat_tables([pq.read_table(str(p)) for p in paths])))
