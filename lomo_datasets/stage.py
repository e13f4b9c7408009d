"""The stage contract: one small class per processing step, applied with ``Dataset.map``.

A stage's constructor takes only settings (dataclass fields, validated in ``__post_init__``);
its call is a batched map over Arrow columns::

    ds = ds.map(Transcribe(model="large-v3"), batched=True, with_rank=True, num_proc=2)

or, with the right arguments filled in (features, fingerprint, start method, progress bar)::

    ds = apply_stage(ds, Transcribe(model="large-v3"), num_proc=2)

Models load lazily (``Stage.loaded_model``), once per process, from a cache keyed by the
stage's settings and device.
A row that fails gets empty outputs and an ``{"stage", "error"}`` entry in its ``errors``
column; the other rows of the batch are untouched. A bad setting raises at construction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

from datasets import Dataset, Features

from lomo_datasets import features as F
from lomo_datasets.redact import redact

logger = logging.getLogger(__name__)


class SettingError(ValueError):
    """A stage or recipe setting is invalid; the message says how to fix it."""


class MissingDependencyError(ImportError):
    """A stage needs an optional dependency that is not installed."""


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------


def cuda_device_count() -> int:
    """Number of visible CUDA devices; 0 when torch is missing or has no CUDA."""
    if importlib.util.find_spec("torch") is None:
        return 0
    import torch

    try:
        return int(torch.cuda.device_count())
    except Exception:  # a broken driver is the same as no GPU for our purposes
        return 0


def resolve_device(rank: int | None = None, override: str | None = None) -> str:
    """The device a worker of process rank ``rank`` uses.

    ``override`` ("cpu", "cuda:1", ...) wins when given and not "auto". Otherwise the rule
    is ``cuda:{rank % device_count}`` when GPUs exist (rank None counts as 0), else ``"cpu"``.
    This is the only place in the package that picks a device.
    """
    if override and override != "auto":
        return override
    count = cuda_device_count()
    if count == 0:
        return "cpu"
    return f"cuda:{(rank or 0) % count}"


def split_device(device: str) -> tuple[str, int]:
    """``"cuda:1"`` -> ``("cuda", 1)``, ``"cpu"`` -> ``("cpu", 0)``: the (device, index) pair
    CTranslate2 and faster-whisper take."""
    kind, _, index = device.partition(":")
    return kind, int(index or 0)


# --------------------------------------------------------------------------------------------
# Per-process model cache
# --------------------------------------------------------------------------------------------

_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()


def clear_model_cache() -> None:
    """Drop every model this process loaded (tests and long-lived notebooks use this)."""
    with _MODELS_LOCK:
        _MODELS.clear()


@contextlib.contextmanager
def start_method(method: str | None) -> Iterator[None]:
    """Use ``method`` ("spawn") for the worker pools ``datasets`` starts inside the block.

    ``datasets`` starts its ``num_proc`` workers with ``multiprocess``; with ``fork`` a worker
    can hang when the parent already ran multithreaded torch, so model stages use ``spawn``.
    """
    if method is None:
        yield
        return
    import multiprocess

    previous = multiprocess.get_start_method(allow_none=True)
    multiprocess.set_start_method(method, force=True)
    try:
        yield
    finally:
        multiprocess.set_start_method(previous, force=True)


# --------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------


def format_error(exc: BaseException) -> str:
    """One line for a row's ``errors`` entry: exception type and message, secrets masked."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


@dataclass
class Stage:
    """Base class of every stage. Subclasses are dataclasses whose fields are settings.

    Class attributes declare what the stage is:

    - ``name``: the stage's name in recipes, ``--set name.setting=value`` and row errors;
    - ``version``: bump it when the stage's output changes for the same settings;
    - ``reads``: input columns; ``features()`` declares the output columns;
    - ``requires``: importable module -> extra that provides it (checked at construction);
    - ``uses_torch``: holds a torch model (``apply_stage`` then starts workers with spawn);
    - ``fan_out``: one input row may give many output rows (clipping);
    - ``embedded_setting``/``embedded_model``: the setting ``--embedded`` points at a model
      that ships inside a package.
    """

    name: ClassVar[str] = "stage"
    version: ClassVar[str] = "1"
    reads: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[dict[str, str]] = {}
    uses_torch: ClassVar[bool] = False
    fan_out: ClassVar[bool] = False
    rows_per_batch: ClassVar[int] = 8
    embedded_setting: ClassVar[str | None] = None
    embedded_model: ClassVar[str | None] = None

    #: "auto" follows the rank rule of ``resolve_device``; "cpu" or "cuda:N" pins a device.
    device: str = "auto"

    # -- construction ----------------------------------------------------------------------

    def __post_init__(self) -> None:
        self.check_requirements()
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu") or self.device.startswith(("cuda", "mps"))
        ):
            raise SettingError(
                f"{self.name}.device={self.device!r}: use 'auto' (GPU by rank, else CPU), "
                "'cpu' or 'cuda:N'"
            )
        self.validate()

    def check_requirements(self) -> None:
        for module, extra in self.requires.items():
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError(
                    f"stage '{self.name}' needs the Python module '{module}': "
                    f"pip install 'lomo-datasets[{extra}]'"
                )

    def validate(self) -> None:
        """Check settings; raise ``SettingError`` with a message that says how to fix it."""

    def settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    # -- what it writes --------------------------------------------------------------------

    def features(self) -> Features:
        """The columns this stage writes (``errors`` is added by the contract)."""
        raise NotImplementedError

    def output_features(self, input_features: Features | None = None) -> Features:
        """Full schema of the mapped dataset: input columns, this stage's, and ``errors``."""
        return F.merge(input_features or {}, self.features(), {"errors": F.ERRORS})

    # -- models ----------------------------------------------------------------------------

    def load_model(self, device: str) -> Any:
        """Load and return this stage's model on ``device``. Called once per process."""
        return None

    def model_key(self) -> tuple:
        """Settings that determine the loaded model (default: all settings)."""
        return tuple(sorted((k, repr(v)) for k, v in self.settings().items()))

    @property
    def current_device(self) -> str:
        return getattr(self, "_device", None) or resolve_device(None, self.device)

    @property
    def current_rank(self) -> int | None:
        """The process rank ``datasets`` passed to the current call (None in a single process)."""
        return getattr(self, "_rank", None)

    @property
    def loaded_model(self) -> Any:
        """The model for this process and device, loaded on first use and then cached.

        (Not called ``model``: most stages have a ``model`` setting, the name or path.)"""
        device = self.current_device
        key = (type(self).__module__, type(self).__qualname__, self.model_key(), device)
        with _MODELS_LOCK:
            if key not in _MODELS:
                logger.info("%s: loading model on %s (pid %d)", self.name, device, os.getpid())
                _MODELS[key] = self.load_model(device)
            return _MODELS[key]

    # Only settings are pickled: no model, no device picked by a worker.
    def __getstate__(self) -> dict[str, Any]:
        return self.settings()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- processing ------------------------------------------------------------------------

    def process_row(self, row: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        """Outputs for one row (a list of output dicts when ``fan_out``)."""
        raise NotImplementedError

    def process(self, rows: list[dict[str, Any]]) -> list[Any]:
        """Outputs for a batch of rows: per row a dict (list of dicts when ``fan_out``) or the
        exception that row raised. Batched stages (one model call per batch) override this."""
        results: list[Any] = []
        for row in rows:
            try:
                results.append(self.process_row(row))
            except Exception as exc:  # the row fails, the batch goes on
                results.append(exc)
        return results

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        self._rank = rank
        self._device = resolve_device(rank, self.device)
        names = list(batch)
        n = len(batch[names[0]]) if names else 0
        rows = [{k: batch[k][i] for k in names} for i in range(n)]
        # A row that already failed upstream is passed through with empty outputs.
        todo = [i for i, row in enumerate(rows) if not row.get("errors")]
        results: list[Any] = [None] * n
        if todo:
            done = self.process([rows[i] for i in todo])
            if len(done) != len(todo):
                raise RuntimeError(f"{self.name}.process returned {len(done)} results for {len(todo)} rows")
            for i, res in zip(todo, done):
                results[i] = res
        return self._assemble(rows, results, names)

    def _assemble(self, rows: list[dict], results: list[Any], names: list[str]) -> dict[str, list]:
        feats = self.features()
        columns = list(names) + [k for k in feats if k not in names] if self.fan_out else list(feats)
        if "errors" not in columns:
            columns.append("errors")
        out: dict[str, list] = {k: [] for k in columns}
        empty = {k: F.empty_value(f) for k, f in feats.items()}
        for row, res in zip(rows, results):
            errors = list(row.get("errors") or [])
            if isinstance(res, BaseException):
                logger.warning("%s: row %s failed: %s", self.name, row.get("video_id", "?"), format_error(res))
                errors.append({"stage": self.name, "error": format_error(res)})
                produced = [empty]
            elif res is None:
                produced = [empty]
            elif self.fan_out:
                produced = list(res)
            else:
                produced = [res]
            for item in produced:
                for k in columns:
                    if k == "errors":
                        out[k].append(errors)
                    elif k in feats:
                        out[k].append(item[k] if k in item else empty[k])
                    else:
                        out[k].append(row[k])
        return out

    # -- caching ---------------------------------------------------------------------------

    @classmethod
    def code_hash(cls) -> str:
        """Hash of the source files that define this stage (its class and its bases)."""
        digest = hashlib.sha256()
        for klass in cls.__mro__:
            if klass is object or not issubclass(klass, Stage):
                continue
            try:
                path = inspect.getsourcefile(klass)
                with open(path, "rb") as fh:  # type: ignore[arg-type]
                    digest.update(fh.read())
            except (OSError, TypeError):
                digest.update(klass.__qualname__.encode())
        return digest.hexdigest()[:16]

    def fingerprint(self, previous: str = "") -> str:
        """Changes when the input, the settings, the stage's version or its code change."""
        payload = json.dumps(
            {
                "previous": previous,
                "stage": f"{type(self).__module__}.{type(self).__qualname__}",
                "version": self.version,
                "settings": {k: repr(v) for k, v in sorted(self.settings().items())},
                "code": self.code_hash(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:32]


def apply_stage(
    ds: Dataset,
    stage: Stage,
    num_proc: int | None = None,
    batch_size: int | None = None,
    desc: str | None = None,
    load_from_cache_file: bool | None = None,
    **map_kwargs: Any,
) -> Dataset:
    """``ds.map(stage)`` with the contract's arguments filled in.

    batched + with_rank, the declared output features, a fingerprint that includes the stage's
    version and code, a progress bar named after the stage, and the ``spawn`` start method when
    the stage holds a torch model and runs in several processes.
    """
    num_proc = num_proc if num_proc and num_proc > 1 and len(ds) > 1 else None
    kwargs: dict[str, Any] = dict(
        batched=True,
        with_rank=True,
        batch_size=batch_size or stage.rows_per_batch,
        num_proc=num_proc,
        features=stage.output_features(ds.features),
        desc=desc or stage.name,
        new_fingerprint=stage.fingerprint(ds._fingerprint),
        load_from_cache_file=load_from_cache_file,
    )
    if stage.fan_out:
        kwargs["remove_columns"] = ds.column_names
    kwargs.update(map_kwargs)
    with start_method("spawn" if stage.uses_torch and num_proc else None):
        return ds.map(stage, **kwargs)


def in_band(value: float | None, low: float | None, high: float | None) -> bool:
    """Whether a filter keeps ``value``: ``low <= value <= high`` (a missing bound is open);
    a missing value (a row that failed upstream) is not kept."""
    if value is None:
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def split_by_threshold(
    ds: Dataset,
    column: str,
    low: float | None = None,
    high: float | None = None,
    reason: str | None = None,
    num_proc: int | None = None,
) -> tuple[Dataset, Dataset]:
    """The filter half of a two-step filter: rows with ``low <= column <= high`` are kept.

    Returns ``(kept, dropped)``; dropped rows carry a ``drop_reason`` column so they can be kept
    aside and counted. Rows with no score (``None``, failed upstream) are dropped too.
    """
    if column not in ds.column_names:
        raise SettingError(f"cannot filter on '{column}': the dataset has {ds.column_names}")
    reason = reason or f"{column} outside [{low}, {high}]"

    def keep(value: float | None) -> bool:
        return in_band(value, low, high)

    kept = ds.filter(keep, input_columns=column, num_proc=num_proc, desc=f"keep {column}")
    dropped = ds.filter(lambda v: not keep(v), input_columns=column, num_proc=num_proc, desc=f"drop {column}")
    dropped = dropped.add_column("drop_reason", [reason] * len(dropped))
    return kept, dropped
