"""The stage contract: one small class per processing step, applied with ``Dataset.map``.

A stage's constructor takes only settings (dataclass fields, validated in ``__post_init__``);
its call is a batched map over Arrow columns::

    ds = ds.map(Transcribe(model="large-v3"), batched=True, with_rank=True, num_proc=2)

or, with the right arguments filled in (features, fingerprint, start method, progress bar)::

    ds = apply_stage(ds, Transcribe(model="large-v3"), num_proc=2)

A stage writes three hooks (docs/DESIGN.md, "The stage hook"), all optional:

- ``prepare(row) -> item``: what the batched call needs from one row (raise: that row fails;
  ``Ready(outputs)``: the row is done without the batched call);
- ``run_batch(items) -> results``: one call for the whole batch (a model's batched forward);
  a result may be an exception for its item alone;
- ``finish(row, result) -> outputs``: the row's output columns (a list of them with
  ``fan_out``) from its result (raise: that row fails).

A stage with no batched call writes ``process_row(row) -> outputs`` instead. The contract owns,
once for every stage: the declared input columns are checked before the first batch; the model
loads (``load_model``, once per process, cached by settings and device) before the first batch;
a batch whose ``run_batch`` raises is run again item by item, so only the bad rows fail; output
keys that ``features()`` does not declare are refused; a class-level name that would become a
setting (``name: str = "x"`` in a subclass) is refused when the class is defined.

A row that fails gets empty outputs and an ``{"stage", "error"}`` entry in its ``errors``
column; the other rows of the batch are untouched. A bad setting raises at construction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import random
import sys
import threading
import types
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

from datasets import Dataset, Features

from lomo_datasets.core import features as F
from lomo_datasets.core.redact import redact, shorten

logger = logging.getLogger(__name__)


class SettingError(ValueError):
    """A stage or recipe setting is invalid; the message says how to fix it."""


class MissingDependencyError(ImportError):
    """A stage needs an optional dependency that is not installed."""


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------


def cuda_device_count(library: str | None = None) -> int:
    """Number of CUDA devices ``library`` sees ("torch" or "ctranslate2"; None: either, the
    larger count). 0 when the library is missing or has no CUDA: a CPU-only torch beside a CUDA
    CTranslate2 still puts CTranslate2 models on the GPUs."""
    counts = []
    if library in (None, "torch") and importlib.util.find_spec("torch") is not None:
        import torch

        try:
            counts.append(int(torch.cuda.device_count()))
        except Exception:  # a broken driver is the same as no GPU for our purposes
            counts.append(0)
    if library in (None, "ctranslate2") and importlib.util.find_spec("ctranslate2") is not None:
        import ctranslate2

        try:
            counts.append(int(ctranslate2.get_cuda_device_count()))
        except Exception:
            counts.append(0)
    return max(counts, default=0)


def resolve_device(rank: int | None = None, override: str | None = None, library: str | None = None) -> str:
    """The device a worker of process rank ``rank`` uses.

    ``override`` ("cpu", "cuda:1", ...) wins when given and not "auto". Otherwise the rule
    is ``cuda:{rank % device_count}`` when GPUs exist (rank None counts as 0), else ``"cpu"``,
    counting the GPUs that ``library`` (the model's: "torch", "ctranslate2", None for either)
    sees. This is the only place in the package that picks a device.
    """
    if override and override != "auto":
        return override
    count = cuda_device_count(library)
    if count == 0:
        return "cpu"
    return f"cuda:{(rank or 0) % count}"


def split_device(device: str) -> tuple[str, int]:
    """``"cuda:1"`` -> ``("cuda", 1)``, ``"cpu"`` -> ``("cpu", 0)``: the (device, index) pair
    CTranslate2 and faster-whisper take."""
    kind, _, index = device.partition(":")
    return kind, int(index or 0)


# --------------------------------------------------------------------------------------------
# CPU threads: a setting, never the machine's cores
# --------------------------------------------------------------------------------------------

#: CPU threads per model call for a model stage with no ``cpu_threads`` setting of its own.
#: Threads change a model's numerics on CPU (the order of its sums), so the count is a fixed
#: setting, never derived from the cores or the number of workers: the same rows on any machine,
#: in one process, in N workers or in Ray actors. More speed on a CPU comes from ``--num-proc``.
DEFAULT_CPU_THREADS = 1


def cpu_threads(stage: Any) -> int:
    """The CPU threads ``stage``'s model uses per call: its ``cpu_threads`` setting, else
    ``DEFAULT_CPU_THREADS``."""
    value = getattr(stage, "cpu_threads", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else DEFAULT_CPU_THREADS


#: The environment a worker process gets before it imports a model library: every thread pool
#: (OpenMP, OpenBLAS, MKL) starts with the stage's count (``thread_environment``).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_environment(threads: int) -> dict[str, str]:
    return {name: str(threads) for name in THREAD_VARIABLES}


def _openblas_controls() -> list[tuple[Any, Any]]:
    """``(set, get)`` of every OpenBLAS loaded in this process (numpy's ``scipy_openblas``;
    Linux, found in /proc/self/maps); threads of a BLAS change the sums of a matrix product
    (Whisper's features go through numpy's)."""
    import ctypes
    import re

    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", fh.read())))
    except OSError:
        return []
    controls = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", "")):
            setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            if setter is not None and getter is not None:
                setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
                controls.append((setter, getter))
                break
    return controls


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op CPU threads, OpenCV's and every loaded OpenBLAS's set to ``threads`` inside the
    block, then back to what they were: a stage's model calls get its thread count in any
    process (this one, a pool worker, a Ray actor), whatever its cores or environment."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None and before != threads:
        torch.set_num_threads(threads)
    cv2 = sys.modules.get("cv2")  # OpenCV's parallel loops (the face detector's scales)
    cv2_before = cv2.getNumThreads() if cv2 is not None and hasattr(cv2, "getNumThreads") else None
    if cv2_before is not None and cv2_before != threads:
        cv2.setNumThreads(threads)
    blas = [(setter, getter, getter()) for setter, getter in _openblas_controls()]
    for setter, _, old in blas:
        if old != threads:
            setter(threads)
    try:
        yield
    finally:
        for setter, getter, old in blas:
            if getter() != old:
                setter(old)
        if cv2_before is not None and cv2.getNumThreads() != cv2_before:
            cv2.setNumThreads(cv2_before)
        if torch is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# Per-process model cache
# --------------------------------------------------------------------------------------------

#: Models one process keeps at once: loading another drops the least recently used (a worker
#: runs one step at a time, and a notebook or test process that calls many stages would
#: otherwise hold every model it ever loaded: the suite's process held ~6 GB of them).
MAX_MODELS = 2
_MODELS: dict[tuple, Any] = {}  # in order of last use
_MODELS_LOCK = threading.Lock()
_LOADS = [0]  #: models this process has loaded, ever (``models_loaded``)


def _return_memory() -> None:
    """Collect the dropped models and hand the freed heap back to the system (glibc keeps freed
    small allocations in its arenas otherwise: a process that dropped a model still showed its
    size in RSS)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        import ctypes
        import ctypes.util

        try:
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


def models_loaded() -> int:
    """How many models this process has loaded (a dropped and reloaded model counts twice)."""
    return _LOADS[0]


def clear_model_cache() -> None:
    """Drop every model this process loaded (tests and long-lived notebooks use this)."""
    with _MODELS_LOCK:
        _MODELS.clear()
    _return_memory()


def _model_owner(stage: "Stage") -> tuple[str, str, str]:
    """Whose models ``stage`` shares: the functions that load it and key it. Stages whose class
    inherits both (every LLM step: ``LLMStage.load_model``) share one loaded model when their
    ``model_key`` is equal, so a process holds one copy of it, not one per stage class."""
    load, key = type(stage).load_model, type(stage).model_key
    return (load.__module__, load.__qualname__, key.__qualname__)


#: The packages whose modules count as a stage's code when its module uses them (see
#: ``Stage.code_files``): the processors' helpers and the prompts. Not the core: it runs stages,
#: it does not make their rows.
CODE_PACKAGES = ("lomo_datasets.processors", "lomo_datasets.llm.prompts", "lomo_datasets.llm.json_shape",
                 "lomo_datasets.audit.checks")


def used_modules(module: types.ModuleType) -> list[types.ModuleType]:
    """``module`` and the ``CODE_PACKAGES`` modules it uses (a module, or a function or class of
    one, among its globals), followed transitively; ``module`` first, the rest by name."""
    found: dict[str, types.ModuleType] = {}
    todo = [module]
    while todo:
        current = todo.pop()
        if current.__name__ in found:
            continue
        found[current.__name__] = current
        for value in list(vars(current).values()):
            if isinstance(value, types.ModuleType):
                name = value.__name__
            else:
                try:
                    name = getattr(value, "__module__", None)
                except Exception:  # an object whose attribute lookup raises
                    name = None
            if isinstance(name, str) and name not in found and name.startswith(CODE_PACKAGES) and name in sys.modules:
                todo.append(sys.modules[name])
    rest = sorted((m for n, m in found.items() if n != module.__name__), key=lambda m: m.__name__)
    return [module, *rest]


def release_models(stage: "Stage") -> int:
    """Drop the models this process loaded for ``stage``'s kind (see ``_model_owner``); returns
    how many. The runner calls it when a step that ran in this process ends: otherwise every
    LLM step of a recipe keeps its model to the end of the run."""
    owner = _model_owner(stage)
    with _MODELS_LOCK:
        keys = [key for key in _MODELS if key[:3] == owner]
        for key in keys:
            del _MODELS[key]
    if keys:
        _return_memory()
    return len(keys)


@contextlib.contextmanager
def worker_start_method(method: str | None) -> Iterator[None]:
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
# Precision: the one rule per device, beside the device rule
# --------------------------------------------------------------------------------------------


def auto_precision(device: str, library: str = "torch", quantized: bool = False) -> str:
    """The precision a model on ``device`` uses when its setting is "auto".

    torch: float32 on CPU, bfloat16 on a GPU. CTranslate2: int8 on CPU; on a GPU float16, or
    int8_float16 for a ``quantized`` (int8-converted) model. Every stage asks here.
    """
    on_cpu = split_device(device)[0] == "cpu"
    if library == "torch":
        return "float32" if on_cpu else "bfloat16"
    if library == "ctranslate2":
        return "int8" if on_cpu else ("int8_float16" if quantized else "float16")
    raise ValueError(f"auto_precision: unknown library {library!r}")


def torch_dtype(device: str, dtype: str = "auto") -> Any:
    """The ``torch.dtype`` for a ``dtype`` setting ("auto": ``auto_precision``) on ``device``."""
    import torch

    return getattr(torch, auto_precision(device) if dtype == "auto" else dtype)


# --------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """What ``prepare`` returns for a row that needs no batched call: its outputs, as is
    (``run_batch`` and ``finish`` are skipped for it, and no model loads for it)."""

    outputs: Any


class StageContractError(TypeError):
    """A stage class breaks the contract (a programming error, not a row error)."""


def model_fix(step: str) -> str:
    """What to do about a step's model that cannot be had (on the command line and in Python;
    ``unset HF_HUB_OFFLINE`` only when it is set)."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return (
        f"give --set {step}.model=PATH (a local model folder; in Python the stage's model=PATH), use "
        "--embedded or an embedded:NAME model (the small models that ship in packages), or fetch it "
        + ("once while online (unset HF_HUB_OFFLINE)" if offline else "once with the network reachable")
    )


def format_error(exc: BaseException) -> str:
    """One line for a row's ``errors`` entry: exception type and message, secrets masked."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


#: Names the contract declares on the class; a subclass field with one of them would
#: silently become a setting.
_DECLARATIONS = (
    "name", "version", "reads", "requires", "start_method", "fan_out", "rows_per_batch",
    "embedded_setting", "embedded_model", "embedded_settings", "kept_on_error",
)
#: Methods the contract owns: a stage writes the hooks, never its own batch loop.
_OWNED = ("process", "__call__")
#: Contract methods and properties a setting must not shadow (a field ``keep: str`` would
#: replace ``keep_rows``'s neighbours the executors call on every step).
_RESERVED = ("keep_rows", "drops_rows", "maps_rows", "active", "dropped_rows", "settings", "features",
             "output_features", "fingerprint", "variant_class", "create")


@dataclass
class Stage:
    """Base class of every stage. Subclasses are dataclasses whose fields are settings.

    Class attributes declare what the stage is:

    - ``name``: the stage's name in recipes, ``--set name.setting=value`` and row errors;
    - ``version``: bump it when the stage's output changes for the same settings;
    - ``reads``: input columns the stage needs (``input_columns()`` when a setting names
      them); ``features()`` declares the output columns;
    - ``requires``: importable module -> extra that provides it (checked at construction);
    - ``start_method``: how ``apply_stage`` starts worker processes (``"spawn"`` for stages
      that hold a torch or CTranslate2 model: a forked worker can inherit a busy thread pool);
    - ``fan_out``: one input row may give many output rows (clipping);
    - ``embedded_setting``/``embedded_model``: the setting ``--embedded`` points at a model
      that ships inside a package; ``embedded_settings``: other settings that go with that
      model (each unless given);
    - ``kept_on_error``: output columns that also are input columns and keep the input's value
      where the stage wrote none (a failed download keeps its URL).
    """

    name: ClassVar[str] = "stage"
    version: ClassVar[str] = "1"
    reads: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[dict[str, str]] = {}
    start_method: ClassVar[str | None] = None
    fan_out: ClassVar[bool] = False
    rows_per_batch: ClassVar[int] = 8
    embedded_setting: ClassVar[str | None] = None
    embedded_model: ClassVar[str | None] = None
    embedded_settings: ClassVar[dict[str, Any]] = {}
    kept_on_error: ClassVar[tuple[str, ...]] = ()
    #: The step takes its ``name`` as an argument from the recipe (filters: one class, many
    #: steps) instead of declaring it on the class.
    named_by_recipe: ClassVar[bool] = False
    #: Variants: the setting whose value picks the class that runs (``"method"``); each value's
    #: class registers itself with ``@Family.variant("value")`` (see ``variant_class``).
    variant_setting: ClassVar[str | None] = None
    _variants: ClassVar[dict[str, type] | None] = None

    #: "auto" follows the rank rule of ``resolve_device``; "cpu" or "cuda:N" pins a device.
    device: str = "auto"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        annotations = cls.__dict__.get("__annotations__", {})
        for key in _DECLARATIONS:
            if key == "name" and cls.named_by_recipe:
                continue  # a filter's name is the recipe's name for it (its first argument), not a setting
            if key in annotations and "ClassVar" not in str(annotations[key]):
                raise StageContractError(
                    f"{cls.__qualname__}.{key}: '{key}' is declared by the stage contract; an annotated "
                    f"'{key}: ... = ...' would turn it into a setting. Write '{key} = ...' (no annotation) "
                    f"or '{key}: ClassVar[...] = ...'"
                )
        for key in _RESERVED:
            if key in annotations:
                raise StageContractError(
                    f"{cls.__qualname__}.{key}: '{key}' is a method of the stage contract; name the setting otherwise"
                )
        for key in _OWNED:
            if key in cls.__dict__:
                raise StageContractError(
                    f"{cls.__qualname__}.{key}: the contract owns the batch loop; write the hooks "
                    "prepare(row), run_batch(items), finish(row, result) or process_row(row) instead"
                )

    # -- variants ----------------------------------------------------------------------------

    @classmethod
    def variant(cls, value: str) -> Any:
        """Class decorator: the decorated subclass runs when ``cls.variant_setting`` is ``value``."""
        def register(sub: type) -> type:
            if cls.variant_setting is None:
                raise StageContractError(f"{cls.__qualname__} declares no variant_setting")
            if "_variants" not in cls.__dict__ or cls._variants is None:
                cls._variants = {}
            cls._variants[value] = sub
            return sub
        return register

    @classmethod
    def variant_class(cls, settings: dict[str, Any]) -> type:
        """The class that runs with ``settings``: the registered variant for the value of
        ``variant_setting`` (its field default when not given); ``cls`` for a stage with none."""
        if cls.variant_setting is None:
            return cls
        family = next((k for k in cls.__mro__ if "_variants" in k.__dict__ and k.__dict__["_variants"]), None)
        registry = family._variants if family is not None else {}
        default = next((f.default for f in dataclasses.fields(cls) if f.name == cls.variant_setting), None)
        value = settings.get(cls.variant_setting, default)
        if value not in registry:
            raise SettingError(f"{cls.name}.{cls.variant_setting}={value!r}: use one of {sorted(registry)}")
        return registry[value]

    @classmethod
    def create(cls, **settings: Any) -> "Stage":
        """The stage for ``settings``, of the variant they pick (``TalkingHead.create(method="face")``)."""
        return cls.variant_class(settings)(**settings)

    # -- construction ----------------------------------------------------------------------

    def __post_init__(self) -> None:
        from lomo_datasets.core.bounds import check_settings

        self.check_requirements()
        check_settings(self, ranges=False, error=SettingError)  # types of every setting (finite numbers), bounds.py
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu") or self.device.startswith(("cuda", "mps"))
        ):
            raise SettingError(
                f"{self.name}.device={self.device!r}: use 'auto' (GPU by rank, else CPU), "
                "'cpu' or 'cuda:N'"
            )
        self.validate()
        check_settings(self, error=SettingError)  # and their ranges, from one table (a stage's own narrower check spoke first)

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

    # -- what it reads and writes ------------------------------------------------------------

    def input_columns(self) -> tuple[str, ...]:
        """The columns every input row must have (default: ``reads``)."""
        return tuple(self.reads)

    def check_input(self, columns: Any) -> None:
        """Raise ``SettingError`` when a declared input column is missing from ``columns``."""
        missing = [c for c in self.input_columns() if c not in set(columns)]
        if missing:
            raise SettingError(
                f"stage '{self.name}' reads column(s) {missing} that the input lacks (it has "
                f"{sorted(columns)}): run the step that writes them first, or set the stage's column setting"
            )

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

    def model_library(self) -> str | None:
        """The library that runs this stage's model ("torch", "ctranslate2"; None: none or either):
        its GPUs are the ones ``resolve_device`` counts."""
        return None

    def model_key(self) -> tuple:
        """Settings that determine the loaded model (default: all settings)."""
        return tuple(sorted((k, repr(v)) for k, v in self.settings().items()))

    @property
    def current_device(self) -> str:
        return getattr(self, "_device", None) or resolve_device(None, self.device, self.model_library())

    @property
    def current_rank(self) -> int | None:
        """The process rank ``datasets`` passed to the current call (None in a single process)."""
        return getattr(self, "_rank", None)

    @property
    def has_model(self) -> bool:
        return type(self).load_model is not Stage.load_model

    @property
    def loaded_model(self) -> Any:
        """The model for this process and device, loaded on first use and then cached.

        (Not called ``model``: most stages have a ``model`` setting, the name or path.)"""
        device = self.current_device
        key = (*_model_owner(self), self.model_key(), device)
        with _MODELS_LOCK:
            if key in _MODELS:
                _MODELS[key] = _MODELS.pop(key)  # the most recently used goes last
            else:
                while len(_MODELS) >= MAX_MODELS:
                    dropped = next(iter(_MODELS))
                    del _MODELS[dropped]
                    logger.info("%s: dropping the least recently used model (%s) before loading another", self.name, dropped[1])
                    _return_memory()
                logger.info("%s: loading model on %s (pid %d)", self.name, device, os.getpid())
                _LOADS[0] += 1
                try:
                    _MODELS[key] = self.load_model(device)
                except (SettingError, MissingDependencyError):
                    raise
                except Exception as exc:  # a model that cannot be had: one setting error with the fix
                    model = getattr(self, "model", None)
                    where = f"{self.name}.model={shorten(model)}" if model else f"stage '{self.name}'"
                    raise SettingError(
                        f"{where}: the model cannot be loaded ({format_error(exc)}); {model_fix(self.name)}"
                    ) from exc
            return _MODELS[key]

    # Only settings (and a name the recipe gave) are pickled: no model, no device picked by a worker.
    def __getstate__(self) -> dict[str, Any]:
        state = self.settings()
        if "name" in self.__dict__:
            state["name"] = self.name
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- the hook ----------------------------------------------------------------------------

    def prepare(self, row: dict[str, Any]) -> Any:
        """The item ``run_batch`` needs from ``row`` (default: the row). Raise to fail the row."""
        return row

    def run_batch(self, items: list[Any]) -> list[Any]:
        """One result per item, in order; a result may be an exception for that item. When
        this raises, the contract runs the items one by one. The default runs ``process_row``
        on each item (a row stage: an item that raises fails alone)."""
        results: list[Any] = []
        for item in items:
            try:
                results.append(self.process_row(item))
            except Exception as exc:  # a row stage's rows are independent
                results.append(exc)
        return results

    def finish(self, row: dict[str, Any], result: Any) -> dict[str, Any] | list[dict[str, Any]] | None:
        """The row's outputs from its result (default: the result). Raise to fail the row."""
        return result

    def process_row(self, row: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        """Outputs for one row, for stages with no batched call (they write only this)."""
        raise NotImplementedError(f"{type(self).__qualname__}: write process_row(row) or run_batch(items)")

    # -- keeping rows: what makes a step a filter --------------------------------------------

    def keep_rows(self, batch: dict[str, list]) -> list[bool]:
        """Which rows of ``batch`` (this step's output rows, not failed upstream) go on to the
        next step. A stage keeps every row; a filter (``Filter``) is a stage whose ``keep_rows``
        says no to some: every executor sets those rows aside, annotated by ``dropped_rows``,
        and no later step runs on them."""
        return [True] * len(next(iter(batch.values()), []))

    @property
    def maps_rows(self) -> bool:
        """Whether the step writes anything (a column, or rows: fan-out); a filter does not,
        so no executor runs a pass over the rows for it, only ``keep_rows``."""
        return self.fan_out or bool(self.features())

    @property
    def drops_rows(self) -> bool:
        """Whether this step's ``keep_rows`` may drop rows (it overrides ``keep_rows``)."""
        return type(self).keep_rows is not Stage.keep_rows

    @property
    def active(self) -> bool:
        """Whether the step runs at all (a filter can be switched off: ``enabled: false``)."""
        return True

    def dropped_rows(self, dropped: Dataset) -> Dataset:
        """The rows this step dropped, with the columns that say why (``drop_reason`` ...)."""
        from datasets import Value

        return dropped.add_column("drop_reason", [self.name] * len(dropped), feature=Value("string"))

    # -- what the contract runs ----------------------------------------------------------------

    def process(self, rows: list[dict[str, Any]]) -> list[Any]:
        """Outputs for a batch of rows: per row a dict (a list of dicts with ``fan_out``) or
        the exception that row raised. prepare -> run_batch (item by item when the batch
        raises) -> finish; the model loads before the first batch; outputs are checked."""
        results: list[Any] = [None] * len(rows)
        todo: list[tuple[int, Any]] = []
        for i, row in enumerate(rows):
            try:
                item = self.prepare(row)
            except Exception as exc:  # the row fails, the batch goes on
                results[i] = exc
                continue
            if isinstance(item, Ready):
                results[i] = item.outputs
            else:
                todo.append((i, item))
        if todo:
            threads = contextlib.nullcontext()
            if self.has_model:
                self.loaded_model  # a model that cannot load is a setting error, not a row error
                if split_device(self.current_device)[0] == "cpu":  # the stage's threads, not the process's
                    threads = torch_threads(cpu_threads(self))
            with threads:
                outs = self._run_items([item for _, item in todo])
            for (i, _), out in zip(todo, outs):
                if isinstance(out, BaseException):
                    results[i] = out
                    continue
                try:
                    results[i] = self.finish(rows[i], out)
                except Exception as exc:
                    results[i] = exc
        for res in results:
            if res is not None and not isinstance(res, BaseException):
                self._check_output(res)
        return results

    def _run_items(self, items: list[Any]) -> list[Any]:
        try:
            outs = self._run_batch(items)
        except StageContractError:
            raise  # a bug in the stage, not in a row
        except Exception as exc:
            if len(items) == 1:
                return [exc]
            logger.info("%s: a batch of %d failed (%s); running its items one by one", self.name, len(items), format_error(exc))
            outs = []
            for item in items:
                try:
                    outs.extend(self._run_batch([item]))
                except Exception as one:
                    outs.append(one)
        return outs

    def _run_batch(self, items: list[Any]) -> list[Any]:
        outs = list(self.run_batch(items))
        if len(outs) != len(items):
            raise StageContractError(f"{self.name}.run_batch returned {len(outs)} results for {len(items)} items")
        return outs

    def _check_output(self, result: Any) -> None:
        produced = result if self.fan_out else [result]
        if self.fan_out and not isinstance(result, list):
            raise StageContractError(f"stage '{self.name}' has fan_out: finish/process_row must return a list of dicts")
        declared = self.features()
        for item in produced:
            if not isinstance(item, dict):
                raise StageContractError(f"stage '{self.name}' returned {type(item).__name__}, not a dict of columns")
            extra = [k for k in item if k not in declared]
            if extra:
                raise StageContractError(
                    f"stage '{self.name}' wrote column(s) {extra} that features() does not declare: "
                    "add them to features() or stop writing them"
                )

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        self._rank = rank
        self._device = resolve_device(rank, self.device, self.model_library())
        names = list(batch)
        self.check_input(names)
        n = len(batch[names[0]]) if names else 0
        rows = [{k: batch[k][i] for k in names} for i in range(n)]
        # A row that already failed upstream is passed through with empty outputs.
        todo = [i for i, row in enumerate(rows) if not row.get("errors")]
        results: list[Any] = [None] * n
        if todo:
            for i, res in zip(todo, self.process([rows[i] for i in todo])):
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
                # per row only with -v (INFO); the run's summary counts failures per step and kind
                logger.info("%s: row %s failed: %s", self.name, row.get("video_id", "?"), format_error(res))
                errors.append({"stage": self.name, "error": format_error(res)})
                produced = [empty]
            elif res is None:
                produced = [empty]
            elif self.fan_out:
                produced = list(res)
                if not produced:  # the input row never vanishes: it stays, failed, with the reason
                    errors.append({"stage": self.name, "error": f"NoOutputRows: {self.name} made no rows from this input"})
                    produced = [empty]
            else:
                produced = [res]
            for item in produced:
                for k in columns:
                    if k == "errors":
                        out[k].append(errors)
                    elif k in feats:
                        value = item[k] if k in item else empty[k]
                        if value is None and k in self.kept_on_error and k in row:
                            value = row[k]
                        out[k].append(value)
                    else:
                        out[k].append(row[k])
        return out

    # -- caching ---------------------------------------------------------------------------

    @classmethod
    def code_files(cls) -> list[str]:
        """The source files whose code makes this stage's output: those that define its class
        and its bases, and the project's helper modules they use (``CODE_PACKAGES``, followed
        from module to module). A change in a helper (translate's checks in llm_translate.py,
        compress's lexical test in grounding.py) must not let a resumed run reuse a step
        written by the old code."""
        files: dict[str, None] = {}
        for klass in cls.__mro__:
            if klass is object or not issubclass(klass, Stage):
                continue
            module = sys.modules.get(klass.__module__)
            for used in [module] if module is None else used_modules(module):
                try:
                    files.setdefault(inspect.getsourcefile(used) or used.__name__)  # type: ignore[arg-type]
                except TypeError:
                    files.setdefault(klass.__qualname__)
        return list(files)

    @classmethod
    def code_hash(cls) -> str:
        """Hash of ``code_files`` (their contents, in order)."""
        digest = hashlib.sha256()
        for path in cls.code_files():
            try:
                with open(path, "rb") as fh:
                    digest.update(fh.read())
            except OSError:
                digest.update(path.encode())
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
    version and code, a progress bar named after the stage, the stage's ``start_method`` when
    it runs in several processes. Missing input columns fail here, before any row runs.
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
    stage.check_input(ds.column_names)  # before the first batch, in this process
    with worker_start_method(stage.start_method if num_proc else None):
        return ds.map(stage, **kwargs)


def in_band(value: float | None, low: float | None, high: float | None) -> bool:
    """Whether a filter keeps ``value``: ``low <= value <= high`` (a missing bound is open);
    a missing value (a row that failed upstream) is not kept."""
    if value is None:
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def mark_dropped(dropped: Dataset, reason: str, column: str, low: float | None, high: float | None) -> Dataset:
    """``dropped`` with what the filter judged, one way for every executor: ``drop_reason``,
    its column, that row's value and the band the value was outside of."""
    from datasets import Value

    values = [float(v) if isinstance(v, (int, float)) else None for v in dropped[column]] if len(dropped) else []
    band = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
    dropped = dropped.add_column("drop_reason", [reason] * len(dropped), feature=Value("string"))
    dropped = dropped.add_column("drop_column", [column] * len(dropped), feature=Value("string"))
    dropped = dropped.add_column("drop_value", values, feature=Value("float64"))
    return dropped.add_column("drop_band", [band] * len(dropped), feature=Value("string"))


def split_kept(ds: Dataset, step: Stage) -> tuple[Dataset, Dataset | None]:
    """``(kept, dropped)``: the rows of ``ds`` (a step's output) that ``step.keep_rows`` keeps, and
    the others annotated by ``step.dropped_rows``; ``(ds, None)`` for a step that keeps every
    row. One meaning for both executors (Ray asks ``keep_rows`` per block)."""
    if not step.drops_rows:
        return ds, None
    step.check_input(ds.column_names)
    mask: list[bool] = []
    for batch in ds.select_columns(list(step.input_columns())).iter(batch_size=1024):
        mask.extend(step.keep_rows(batch))
    kept = ds.select([i for i, k in enumerate(mask) if k])
    dropped = ds.select([i for i, k in enumerate(mask) if not k])
    return kept, step.dropped_rows(dropped)


def split_by_threshold(
    ds: Dataset, column: str, low: float | None = None, high: float | None = None, reason: str | None = None,
) -> tuple[Dataset, Dataset]:
    """The filter half of a two-step filter: rows with ``low <= column <= high`` are kept
    (``Filter(reason, column, low, high).split(ds)``). Returns ``(kept, dropped)``; dropped rows
    carry ``drop_reason`` and what was judged. Rows with no score (failed upstream) are dropped too.
    """
    if column not in ds.column_names:
        raise SettingError(f"cannot filter on '{column}': the dataset has {ds.column_names}")
    return Filter(reason or f"{column} outside [{low}, {high}]", column, low, high).split(ds)


@dataclass
class Filter(Stage):
    """A threshold filter step: keep rows whose ``column`` is in [low, high] (either bound may be
    None); the other rows go to the run's dropped rows with ``drop_reason = name``, the column,
    the row's value and the band. Recipes give ``column`` and the bounds as default settings;
    the step's name is its recipe name. It writes no column: its hook is ``keep_rows``."""

    named_by_recipe = True
    device: ClassVar[str] = "cpu"  # not a setting: a filter runs no model
    rows_per_batch = 1024

    name: str = dataclasses.field()  # no default (the class attribute "stage" is not one)
    column: str = dataclasses.field()
    low: float | None = None
    high: float | None = None
    enabled: bool = True

    def validate(self) -> None:
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if value is not None and not isinstance(value, (int, float)):
                raise SettingError(f"{self.name}.{bound} must be a number or null, got {value!r}")
        if not isinstance(self.column, str) or not self.column:
            raise SettingError(f"{self.name}.column must name the column to filter on")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise SettingError(f"{self.name}: low ({self.low}) is above high ({self.high})")

    def settings(self) -> dict[str, Any]:
        return {"column": self.column, "low": self.low, "high": self.high, "enabled": self.enabled}

    @property
    def active(self) -> bool:
        return self.enabled

    def input_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def features(self) -> Features:
        return Features({})

    def output_features(self, input_features: Features | None = None) -> Features:
        return Features(dict(input_features or {}))  # the rows go on as they came

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        return {}

    def keep_rows(self, batch: dict[str, list]) -> list[bool]:
        return [in_band(v, self.low, self.high) for v in batch[self.column]]

    def dropped_rows(self, dropped: Dataset) -> Dataset:
        return mark_dropped(dropped, self.name, self.column, self.low, self.high)

    def fingerprint(self, previous: str = "") -> str:
        payload = json.dumps({"previous": previous, "filter": self.name, **self.settings()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def split(self, ds: Dataset) -> tuple[Dataset, Dataset]:
        """``(kept, dropped)`` of ``ds``, as every executor splits it (``split_kept``)."""
        return split_kept(ds, self)


def seeded_random(*parts: Any) -> random.Random:
    """A ``random.Random`` seeded from ``parts`` (row id, task...), stable across processes."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
