"""One result assembly for both schedulers: what a run returns, gathered as its work finishes.

The local runner (``pipeline.Runner``) and the Ray executor (``ray_executor.RayExecutor``) only
schedule; what they hand back is made here, the same way:

- **kept rows**: the last step's rows in input order (the local runner's last step output; under
  Ray the rows no filter marked, assembled part by part, ``BlockAssembly``);
- **dropped rows**: every enabled filter's rows, annotated by the filter's ``dropped_rows`` and
  joined on the columns every filter saw (``join_dropped``);
- **failed rows**: the rows with errors, kept or dropped (``failed_rows``, ``write_failed_report``);
- **per-step timings**: wall seconds per step (local steps run one after the other) or worker
  seconds summed per step (Ray streams blocks through all steps at once; ``timings_kind``);
- **model loads**: per model step, the models each worker loaded (one entry per worker);
- **reuse**: per step, what a rerun took from the work dir.

Memory: nothing here holds a whole column in Python. Ray's part files are read one at a time
(or a few whose input rows interleave) and written to Arrow files on local disk that the
returned datasets map, so the driver's memory does not grow with the rows.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from datasets import Dataset, Features, concatenate_datasets

from lomo_datasets.core.arrow_files import ArrowFileWriter, temp_folder

logger = logging.getLogger(__name__)

#: ``RunResult.timings_kind`` of the Ray executor
WORKER_SECONDS = "worker seconds summed over the Ray workers; the steps overlap"


@dataclass
class RunResult:
    dataset: Dataset
    dropped: Dataset | None
    work_dir: Path
    timings: dict[str, float]
    inputs: int = 0  #: rows the steps started from (after ``shard``)
    #: Per model step: how many models each worker loaded for it (1 each when workers live
    #: for the whole step).
    model_loads: dict[str, list[int]] = field(default_factory=dict)
    #: Per step whose finished output a rerun took from the work dir: what it reused
    #: (``"4 rows"``, ``"1 of 2 chunks (256 rows)"``).
    reused: dict[str, str] = field(default_factory=dict)
    #: What ``timings`` holds: each step's wall time (local steps run one after the other), or
    #: ``WORKER_SECONDS`` (Ray streams the blocks through all steps at once)
    timings_kind: str = "wall"


def join_dropped(parts: list[Dataset]) -> Dataset | None:
    """All filters' dropped rows in one dataset; filters later in a recipe see more columns,
    so only the columns every part has (with the first part's types) are kept; every enabled
    filter's part counts, empty or not, so the columns are the same in every schedule."""
    if not parts or not sum(len(p) for p in parts):
        return None
    common = [c for c in parts[0].column_names if all(c in p.column_names for p in parts)]
    features = parts[0].select_columns(common).features
    return concatenate_datasets([p.select_columns(common).cast(features) for p in parts])


class Assembly:
    """What one run returns, recorded by its scheduler as steps (or blocks) finish; ``result``
    makes the ``RunResult``. ``row_column`` is the hidden input-index column, dropped here."""

    def __init__(self, work_dir: Any, inputs: int, row_column: str, timings_kind: str = "wall"):
        self.work_dir = work_dir
        self.inputs = inputs
        self.row_column = row_column
        self.timings_kind = timings_kind
        self.timings: dict[str, float] = {}
        self.loads: dict[str, dict[Any, int]] = {}
        self.reused: dict[str, str] = {}
        self.dropped: list[Dataset] = []

    def step_seconds(self, step: str, seconds: float) -> None:
        """``seconds`` more for ``step`` (a wall time locally, worker seconds under Ray)."""
        self.timings[step] = self.timings.get(step, 0.0) + seconds

    def step_loads(self, step: str, worker: Any, models: int) -> None:
        """``worker`` had loaded ``models`` models when it ran ``step`` (the largest count wins)."""
        per = self.loads.setdefault(step, {})
        per[worker] = max(per.get(worker, 0), models)

    def model_loads(self) -> dict[str, list[int]]:
        return {name: sorted(per.values()) for name, per in self.loads.items()}

    def note_reuse(self, step: str, what: str) -> None:
        self.reused[step] = what

    def add_dropped(self, dropped: Dataset) -> None:
        """The rows one filter dropped, annotated by its ``dropped_rows`` (empty too: the
        columns must not depend on which filters dropped rows)."""
        self.dropped.append(dropped)

    def result(self, kept: Dataset) -> RunResult:
        return RunResult(
            without_column(kept, self.row_column), without_column(join_dropped(self.dropped), self.row_column),
            self.work_dir, self.timings, self.inputs, self.model_loads(), self.reused, self.timings_kind,
        )


def without_column(ds: Dataset | None, column: str) -> Dataset | None:
    return ds.remove_columns(column) if ds is not None and column in ds.column_names else ds


# --------------------------------------------------------------------------------------------
# Marked blocks (Ray): rows carry their input index, the filter that dropped them, and per step
# the worker, its model count and the seconds of the call that made them
# --------------------------------------------------------------------------------------------

DROPPED = "_lomo_dropped"  #: index of the filter step that dropped the row; KEPT while kept
KEPT = -1
VANISHED = -2  #: a placeholder for an input row a fan-out stage turned into no rows
PID = "_lomo_pid_{}"  #: per model step: the worker that ran the row ...
LOADS = "_lomo_loads_{}"  #: ... and how many models that worker had loaded
SECS = "_lomo_secs_{}"  #: per stage step: the seconds of the call that made the row, shared by its rows


def scratch_folder(parent: Path | None, name: str) -> Path:
    """A new local folder for one run's assembled Arrow files: under ``parent`` (a local work
    dir; older ones of the same ``name`` are removed) or a temp folder removed at exit. A new
    name each run: ``datasets`` keys its caches by the file's path."""
    if parent is None:
        return temp_folder(name)
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.glob(f"{name}-*"):
        shutil.rmtree(old, ignore_errors=True)
    folder = parent / f"{name}-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    return folder


class BlockAssembly:
    """Ray's part files into the kept and dropped rows, one part (or one run of parts whose input
    rows interleave) at a time, in input order: a stable sort by input index, the order that
    sorting all parts together gives (an input row's rows all sit in one part)."""

    def __init__(self, assembly: Assembly, steps: list, features: list[Features], folder: Path):
        self.assembly = assembly
        self.steps = steps
        self.features = features
        self.folder = folder
        self.kept = ArrowFileWriter(folder / "kept.arrow", features[-1])
        self.filters = {
            index: ArrowFileWriter(folder / f"dropped-{index:02d}.arrow", features[index])
            for index, step in enumerate(steps) if step.active and step.drops_rows
        }

    def add(self, table: Any) -> None:
        """One sorted-or-not table of marked rows whose input rows no other table interleaves."""
        import pyarrow.compute as pc

        row = self.assembly.row_column
        table = table.take(pc.sort_indices(table, sort_keys=[(row, "ascending")]))  # stable
        for index, step in enumerate(self.steps):
            pid, count, secs = PID.format(index), LOADS.format(index), SECS.format(index)
            if pid in table.column_names:
                for p, c in zip(table[pid].to_pylist(), table[count].to_pylist()):
                    if p is not None:
                        self.assembly.step_loads(step.name, p, c)
            if secs in table.column_names:
                self.assembly.step_seconds(step.name, float(pc.sum(table[secs]).as_py() or 0.0))
        state = table[DROPPED]
        self.kept.write(table.filter(pc.equal(state, KEPT)))
        for index, writer in self.filters.items():
            writer.write(table.filter(pc.equal(state, index)))

    def finish(self) -> RunResult:
        for index, writer in self.filters.items():
            self.assembly.add_dropped(self.steps[index].dropped_rows(writer.dataset()))
        return self.assembly.result(self.kept.dataset())


def runs_of_parts(spans: list[tuple[Any, int, int]]) -> list[list[Any]]:
    """Parts ``(part, first row, last row)`` in runs whose row ranges do not overlap another
    run's, in row order: usually one part a run (blocks are whole groups of consecutive rows);
    parts written by runs with other block sizes may interleave and go together."""
    runs: list[list[Any]] = []
    end = None
    for part, low, high in sorted(spans, key=lambda s: (s[1], s[2])):
        if runs and end is not None and low <= end:
            runs[-1].append(part)
            end = max(end, high)
        else:
            runs.append([part])
            end = high
    return runs


# --------------------------------------------------------------------------------------------
# Failed rows
# --------------------------------------------------------------------------------------------


def failed_rows(*parts: Dataset | None) -> Iterable[dict[str, Any]]:
    """``video_id``, ``video``, ``source`` and ``errors`` of every row that has errors, in
    batches (never a whole column at once)."""
    for ds in parts:
        if ds is None or "errors" not in ds.column_names or not len(ds):
            continue
        columns = [c for c in ("video_id", "video", "source", "errors") if c in ds.column_names]
        for batch in ds.select_columns(columns).iter(batch_size=1000):
            for i, errors in enumerate(batch["errors"]):
                if errors:
                    yield {c: batch[c][i] for c in columns}


def write_failed_report(path: str | os.PathLike, *parts: Dataset | None) -> int:
    """Write the failed-rows report (JSON lines, one per failed row; empty when none failed)
    atomically to ``path``; returns the number of failed rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    count = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in failed_rows(*parts):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, path)
    return count


def column_batches(ds: Dataset | None, columns: list[str], batch_size: int = 1000) -> Iterable[dict[str, list]]:
    """``columns`` of ``ds`` (those it has) a batch at a time; nothing for None."""
    if ds is None or not len(ds):
        return
    have = [c for c in columns if c in ds.column_names]
    if not have:
        return
    yield from ds.select_columns(have).iter(batch_size=batch_size)


class ColumnValues:
    """The values of one column of ``ds``, iterable any number of times, read a batch at a time
    (what a whole-column read, ``ds[column]``, gives, without holding it)."""

    def __init__(self, ds: Dataset, column: str):
        self.ds = ds
        self.column = column

    def __len__(self) -> int:
        return len(self.ds)

    def __iter__(self):
        for batch in column_batches(self.ds, [self.column]):
            yield from batch[self.column]


__all__ = [
    "ColumnValues",
    "DROPPED", "KEPT", "LOADS", "PID", "SECS", "VANISHED", "Assembly", "BlockAssembly", "ArrowFileWriter", "RunResult", "WORKER_SECONDS", "column_batches", "failed_rows", "join_dropped",
    "runs_of_parts", "scratch_folder", "without_column", "write_failed_report",
]
