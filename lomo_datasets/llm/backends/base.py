"""What every LLM backend shares: tasks, settings, validation, the retry loop and the registry.

The package docstring (``lomo_datasets.llm.backends``) describes the public API; each backend
lives in its own module of the package and registers itself with ``@register_backend``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from lomo_datasets.core.stage import SettingError
from lomo_datasets.llm.json_shape import with_feedback

logger = logging.getLogger(__name__)


def choice_schema(field: str, kind: str, values: list) -> dict[str, Any]:
    """The JSON schema of a reply that is one field holding one of ``values`` (a pick, a letter)."""
    return {"type": "object", "properties": {field: {"type": kind, "enum": list(values)}},
            "required": [field], "additionalProperties": False}


GUIDED_MODES = ("json_schema", "json_object", "guided_json", "none")
DEFAULT_MODEL = "Qwen/Qwen2.5-7B-Instruct"

Messages = list[dict[str, str]]


class LLMOutputError(ValueError):
    """An item got no valid output after the bounded number of tries."""


class LLMTransportError(RuntimeError):
    """The HTTP server did not answer usefully after the bounded number of retries."""


# --------------------------------------------------------------------------------------------
# Tasks and validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """One kind of structured request: the output schema, a token budget and a semantic check."""

    name: str
    schema: dict[str, Any]
    max_new_tokens: int = 128
    check: Callable[[dict[str, Any]], None] | None = None

    def schema_json(self) -> str:
        return json.dumps(self.schema, sort_keys=True)

    def first_property(self) -> str | None:
        props = self.schema.get("properties") or {}
        order = self.schema.get("required") or list(props)
        return order[0] if order else None


def validate_json(obj: Any, schema: dict[str, Any]) -> None:
    """Raise ``ValueError`` when ``obj`` does not validate against ``schema``."""
    import jsonschema

    try:
        jsonschema.validate(obj, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "$"
        # Lengths and counts as numbers: the message goes back to the model on a retry.
        if exc.validator in ("maxLength", "minLength") and isinstance(exc.instance, str):
            bound = "at most" if exc.validator == "maxLength" else "at least"
            raise ValueError(f"schema: {where}: {len(exc.instance)} characters, {bound} {exc.validator_value} allowed") from None
        if exc.validator in ("maxItems", "minItems") and isinstance(exc.instance, list):
            sub = exc.schema if isinstance(exc.schema, dict) else {}
            exact = sub.get("minItems") == sub.get("maxItems")
            bound = "exactly" if exact else "at most" if exc.validator == "maxItems" else "at least"
            raise ValueError(f"schema: {where}: {len(exc.instance)} items, {bound} {exc.validator_value} wanted") from None
        raise ValueError(f"schema: {where}: {exc.message[:200]}") from None



def parse_output(text: str, task: TaskSpec) -> dict[str, Any]:
    """Parse one completion as the task's JSON object; raise ``ValueError`` saying why not."""
    text = (text or "").strip()
    if not text:
        raise ValueError("empty output")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if exc.msg.startswith("Expecting") and "delimiter" in exc.msg and text[: exc.pos].rstrip().endswith('"'):
            # A string closed early: most often an unescaped double quote inside it.
            hint = '; a double quote inside a string must be written as \\" (or use single quotes)'
        raise ValueError(f"not JSON ({exc.msg} at {exc.pos}, near {text[max(0, exc.pos - 24):exc.pos + 8]!r}){hint}") from None
    validate_json(obj, task.schema)
    if task.check is not None:
        task.check(obj)
    return obj


@dataclass
class Completion:
    text: str
    finished: bool  # ended on EOS / stop (not cut by the token budget)


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass
class LLMSettings:
    backend: str = "transformers"
    model: str = DEFAULT_MODEL
    batch_size: int = 16
    max_tries: int = 3
    temperature: float = 0.7  # used on retries (the first try is greedy)
    dtype: str = "auto"  # transformers: auto | float32 | bfloat16 | float16
    quantization: str = "int8"  # ctranslate2 conversion / compute type
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"
    guided: str = "json_schema"
    concurrency: int = 8
    timeout: float = 120.0
    http_retries: int = 3
    backoff: float = 0.5
    cpu_threads: int = 1  # torch/CTranslate2 CPU threads per call: fixed, the output depends on it

    def validate(self, prefix: str = "llm") -> None:
        names = backend_names()
        if self.backend not in names:
            raise SettingError(f"{prefix}.backend={self.backend!r}: use one of {names}")
        if not self.model:
            raise SettingError(f"{prefix}.model is empty: give a hub id, a local path or embedded:smollm2-135m")
        for name in ("batch_size", "max_tries", "concurrency"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise SettingError(f"{prefix}.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.cpu_threads, int) or self.cpu_threads < 1:
            raise SettingError(f"{prefix}.cpu_threads must be an integer >= 1 (CPU threads per model call)")
        if not isinstance(self.http_retries, int) or self.http_retries < 0:
            raise SettingError(f"{prefix}.http_retries must be an integer >= 0")
        if self.guided not in GUIDED_MODES:
            raise SettingError(f"{prefix}.guided={self.guided!r}: use one of {GUIDED_MODES}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise SettingError(f"{prefix}.dtype={self.dtype!r}: use auto, float32, bfloat16 or float16")
        backend_class(self.backend).check_settings(self, prefix)  # the backend's own checks


def chat_text(tokenizer: Any, messages: Messages, prefill: str = "") -> str:
    """The prompt string for ``messages`` via the tokenizer's chat template, ready for the
    assistant's turn, plus an optional forced start of the answer."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + prefill


# --------------------------------------------------------------------------------------------
# The backend base
# --------------------------------------------------------------------------------------------


TaskOrTasks = "TaskSpec | list[TaskSpec]"


def _seed(texts: list[str], attempt: int) -> int:
    """A sampling seed from the prompts and the try number (reruns reproduce, tries differ)."""
    return int(hashlib.sha256(("\x1f".join(texts) + f"\x1e{int(attempt)}").encode()).hexdigest()[:8], 16)


def _per_item(task: TaskSpec | list[TaskSpec], n: int) -> list[TaskSpec]:
    if isinstance(task, TaskSpec):
        return [task] * n
    if len(task) != n:
        raise ValueError(f"{len(task)} tasks for {n} prompts")
    return list(task)


class Backend:
    """Shared retry/validate loop; subclasses implement ``generate``.

    A backend class declares what it is (class attributes, read by the registry, the settings
    check and the LLM stage) and registers itself with ``@register_backend``:

    - ``name``: the value of the ``backend`` setting that picks it;
    - ``modules``: importable module -> the pip extra that provides it (checked when an LLM
      stage with this backend is made, in this order);
    - ``library``: the library whose GPUs it runs on (``"torch"``, ``"ctranslate2"``; what
      ``resolve_device`` counts), None for a backend whose model runs elsewhere;
    - ``remote``: the model is a server's, not a local file (nothing to find or download);
    - ``feedback``: retries say why the last reply was refused (for backends that cannot
      enforce the schema);
    - ``list_order``: where its name goes in lists of backends (``BACKENDS``, messages);
    - ``check_settings(settings, prefix)``: its own setting checks (classmethod; raise
      ``SettingError``), after the shared ones.

    ``make_backend`` builds it as ``cls(settings, device)``.
    """

    name: ClassVar[str] = "backend"
    modules: ClassVar[dict[str, str]] = {}
    library: ClassVar[str | None] = None
    remote: ClassVar[bool] = False
    list_order: ClassVar[int] = 100
    #: Retries say why the last reply was refused (for backends that cannot enforce the schema).
    feedback: ClassVar[bool] = False

    def __init__(self, settings: LLMSettings, device: str = "cpu"):
        self.settings = settings

    @classmethod
    def check_settings(cls, settings: LLMSettings, prefix: str) -> None:
        """The backend's own setting checks (``LLMSettings.validate`` calls it last)."""

    def generate(self, messages_list: list[Messages], task: TaskOrTasks, sample: int = 0) -> list[Completion | Exception]:
        """Raw completions. ``sample`` is the try number: 0 decodes greedily, n > 0 samples
        with a seed derived from the prompts and n."""
        raise NotImplementedError

    def generate_json(self, messages_list: list[Messages], task: TaskOrTasks) -> list[dict[str, Any] | Exception]:
        """Validated JSON per item, or an ``LLMOutputError`` after ``max_tries`` tries. With
        ``feedback``, a retry's prompt says why the last reply was refused
        (``json_shape.with_feedback``)."""
        tasks = _per_item(task, len(messages_list))
        results: list[Any] = [None] * len(messages_list)
        last_error: dict[int, str] = {}
        pending = list(range(len(messages_list)))
        for attempt in range(self.settings.max_tries):
            if not pending:
                break
            prompts = [
                with_feedback(messages_list[i], last_error[i]) if self.feedback and i in last_error else messages_list[i]
                for i in pending
            ]
            outputs = self.generate(prompts, [tasks[i] for i in pending], sample=attempt)
            still = []
            for i, out in zip(pending, outputs):
                try:
                    if isinstance(out, Exception):
                        raise out
                    if not out.finished:
                        raise ValueError(f"output cut at max_new_tokens={tasks[i].max_new_tokens}")
                    results[i] = parse_output(out.text, tasks[i])
                except (ValueError, LLMTransportError) as exc:
                    last_error[i] = str(exc)
                    still.append(i)
            if still:
                logger.info("%s: %d/%d outputs invalid on try %d", tasks[0].name, len(still), len(pending), attempt + 1)
            pending = still
        for i in pending:
            results[i] = LLMOutputError(
                f"{tasks[i].name}: no valid output after {self.settings.max_tries} tries ({last_error.get(i, '?')})"
            )
        return results


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: ``backend=<cls.name>`` picks ``cls``. A name already taken by another
    class is an error (the same class re-imported replaces itself)."""
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"register_backend: {cls!r} is not a Backend subclass")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_backend: {cls.__qualname__} declares no name (name = '...')")
    taken = _REGISTRY.get(name)
    if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"register_backend: backend name {name!r} is taken by {taken.__module__}.{taken.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def unregister_backend(name: str) -> type[Backend]:
    """Remove the backend registered as ``name`` and return its class (``KeyError`` if none)."""
    return _REGISTRY.pop(name)


def backend_class(name: Any) -> type[Backend] | None:
    """The class registered as ``name``; None for a name no backend has."""
    return _REGISTRY.get(name) if isinstance(name, str) else None


def backend_names() -> tuple[str, ...]:
    """The registered backends' names (by ``list_order``, then registration)."""
    order = {name: n for n, name in enumerate(_REGISTRY)}
    return tuple(sorted(_REGISTRY, key=lambda name: (_REGISTRY[name].list_order, order[name])))


def backend_library(name: Any) -> str | None:
    """The library whose GPUs backend ``name`` uses (``Stage.model_library``); None for a
    server backend or an unknown name."""
    cls = backend_class(name)
    return cls.library if cls is not None else None


def backend_libraries() -> dict[str, str]:
    """``{name: library}`` for the registered backends that run on a local library."""
    return {name: _REGISTRY[name].library for name in backend_names() if _REGISTRY[name].library is not None}


def make_backend(settings: LLMSettings, device: str = "cpu") -> Backend:
    """The backend for ``settings`` on ``device`` (validate settings first)."""
    settings.validate()
    return backend_class(settings.backend)(settings, device)
