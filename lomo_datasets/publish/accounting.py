"""Every input accounted for: each input video ends in exactly one of kept / failed / dropped.

The invariant, per row (a fan-out stage makes one row per clip, and each clip counts): a row
without errors in the data is *kept*, a row with errors (in the data or set aside by a filter)
is *failed* (``failed.jsonl``), a row a filter set aside without errors is *dropped*
(``dropped.jsonl``). Every input video has at least one row, no row (``video_id`` and
``clip_id``) is counted twice, and no row comes from a video that was not an input.

``check`` runs at the end of every run, before anything is published: a broken invariant fails
the run loudly (``AccountingError``, exit 1) and nothing is written. The counts are kept beside
the data (``.lomo-accounting.json``, not published) and in the card; ``verify_folder`` checks
them again against the folder's files before ``publish`` pushes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

LEDGER = ".lomo-accounting.json"


class AccountingError(RuntimeError):
    """An input went missing or a row was counted twice: a bug, never a bad input."""


@dataclass
class Ledger:
    inputs: int
    kept: int
    failed: int
    dropped: int
    videos: dict[str, int] = field(default_factory=dict)  #: input videos with a kept/failed/dropped row

    def card_line(self) -> str:
        return (
            f"**Accounting.** {self.inputs} input videos gave {self.kept + self.failed + self.dropped} rows: "
            f"{self.kept} kept, {self.failed} failed (`failed.jsonl`), {self.dropped} dropped by filters "
            "(`dropped.jsonl`). Every input video has at least one of them and no row is counted twice."
        )

    def save(self, folder: Path) -> None:
        (Path(folder) / LEDGER).write_text(json.dumps(asdict(self), indent=1, sort_keys=True), encoding="utf-8")


def _rows(ds: Any) -> Iterable[tuple[tuple, bool]]:
    """``((video_id, clip_id), has_errors)`` of each row of a Dataset (read a batch at a time)
    or of a list of dicts."""
    if ds is None:
        return
    if not hasattr(ds, "column_names"):
        yield from (((r.get("video_id"), r.get("clip_id")), bool(r.get("errors"))) for r in ds)
        return
    columns = [c for c in ("video_id", "clip_id", "errors") if c in ds.column_names]
    if not columns:
        yield from (((None, None), False) for _ in range(len(ds)))
        return
    for batch in ds.select_columns(columns).iter(batch_size=1000):
        n = len(batch[columns[0]])
        none = [None] * n
        yield from zip(zip(batch.get("video_id", none), batch.get("clip_id", none)), map(bool, batch.get("errors", none)))


KINDS = ("kept", "failed", "dropped")


def tally(input_ids: Iterable[str], data: Any, dropped: Any) -> tuple[Ledger, list[str]]:
    """The counts and what breaks the invariant (an empty list when nothing does).

    Memory: a row costs 17 bytes here (the hashes of its key and video, its kind), not a Python
    object: equal values have equal hashes, so the sets are compared as arrays of hashes; the
    names in a message come from a second pass over the rows, only when something is wrong.
    ``input_ids`` is read once, or twice when an input is missing (give a list, not an iterator)."""
    import numpy as np
    from array import array

    inputs = array("q", (hash(v) for v in input_ids))
    keys, videos, kinds = array("q"), array("q"), array("b")
    for part, name in ((data, "kept"), (dropped, "dropped")):
        for key, failed in _rows(part):
            keys.append(hash(key))
            videos.append(hash(key[0]))
            kinds.append(KINDS.index("failed" if failed else name))
    inputs_, keys_, videos_ = (np.frombuffer(a, dtype=np.int64) if len(a) else np.zeros(0, np.int64) for a in (inputs, keys, videos))
    kinds_ = np.frombuffer(kinds, dtype=np.int8) if len(kinds) else np.zeros(0, np.int8)
    known = np.unique(inputs_)
    seen = np.unique(videos_)
    counts = np.bincount(kinds_.astype(np.int64), minlength=3)
    problems = []
    missing = np.setdiff1d(known, seen, assume_unique=True)
    if len(missing):
        names = _first(input_ids, missing, lambda v: hash(v))
        problems.append(f"{len(missing)} of {len(known)} inputs are in none of kept/failed/dropped ({', '.join(map(str, names))})")
    unique_keys, times = np.unique(keys_, return_counts=True)
    twice = unique_keys[times > 1]
    if len(twice):
        names = _first((key for part in (data, dropped) for key, _ in _rows(part)), twice, lambda k: hash(k))
        problems.append(f"{len(twice)} rows are counted twice ({', '.join('/'.join(str(p) for p in k if p) for k in names)})")
    strangers = np.setdiff1d(seen, known, assume_unique=True)
    if len(strangers):
        names = _first((key[0] for part in (data, dropped) for key, _ in _rows(part)), strangers, lambda v: hash(v))
        problems.append(f"{len(strangers)} rows come from no input ({', '.join(map(str, names))})")
    ledger = Ledger(len(known), int(counts[0]), int(counts[1]), int(counts[2]))
    ledger.videos = {kind: int(np.isin(known, videos_[kinds_ == i]).sum()) for i, kind in enumerate(KINDS)}
    return ledger, problems


def _first(values: Iterable[Any], hashes: Any, hashed: Any, most: int = 5) -> list[Any]:
    """The first ``most`` distinct ``values`` (in their order) whose hash is in ``hashes``."""
    import numpy as np

    wanted = set(np.asarray(hashes).tolist())
    found: list[Any] = []
    for value in values:
        if hashed(value) in wanted and value not in found:
            found.append(value)
            if len(found) == most:
                break
    return found


def check(input_ids: Iterable[str], data: Any, dropped: Any) -> Ledger:
    """The ledger of a finished run; ``AccountingError`` when the invariant is broken."""
    ledger, problems = tally(input_ids, data, dropped)
    if problems:
        raise AccountingError(
            "accounting: " + "; ".join(problems) + "; nothing was published. This is a bug in lomo-datasets or in "
            "a stage: rerun with -v and report it"
        )
    return ledger


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def verify_folder(folder: str | os.PathLike) -> Ledger | None:
    """Check a published folder's rows against its ledger (None when it has none, e.g. a folder
    written by ``write_folder``); ``AccountingError`` naming the difference when they disagree."""
    import pyarrow.parquet as pq

    from lomo_datasets.audit.checks import parquet_errors

    folder = Path(folder)
    path = folder / LEDGER
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        want = {k: int(recorded[k]) for k in ("inputs", "kept", "failed", "dropped")}
    except (OSError, ValueError, KeyError, TypeError):
        raise AccountingError(f"{path} is damaged; rerun the same `lomo-datasets run` to write the folder again") from None
    kept = 0
    for shard in sorted((folder / "data").glob("*.parquet")):
        with parquet_errors(shard):
            table = pq.read_table(shard, columns=[c for c in ("errors",) if c in pq.read_schema(shard).names])
        errors = table.column("errors").to_pylist() if "errors" in table.column_names else [None] * table.num_rows
        kept += sum(1 for e in errors if not e)
    try:
        failed = len(_jsonl(folder / "failed.jsonl"))
        dropped = len(_jsonl(folder / "dropped.jsonl"))
    except ValueError as exc:
        raise AccountingError(f"{folder}: failed.jsonl or dropped.jsonl is damaged ({exc}); rerun the same `lomo-datasets run`") from None
    found = {"kept": kept, "failed": failed, "dropped": dropped}
    wrong = {k: (want[k], v) for k, v in found.items() if want[k] != v}
    if wrong:
        detail = ", ".join(f"{k}: {a} recorded, {b} found" for k, (a, b) in wrong.items())
        raise AccountingError(
            f"{folder}: the rows do not add up to what the run recorded ({detail}); the folder was changed after "
            "the run: rerun the same `lomo-datasets run` to write it again, then publish"
        )
    return Ledger(want["inputs"], kept, failed, dropped, recorded.get("videos") or {})
