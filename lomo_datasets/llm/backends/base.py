"""What every LLM backend shares: tasks, settings, validation, the retry loop and the registry.

The package docstring (``lomo_datasets.llm.backends``) describes the public API; each backend
lives in its own module of the package and registers itself with ``@register_backend``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from lomo_datasets.core.stage import SettingError
from lomo_datasets.llm.json_shape import LENGTH_MARGIN, repair_json, with_feedback

logger = logging.getLogger(__name__)


def choice_schema(field: str, kind: str, values: list) -> dict[str, Any]:
    """The JSON schema of a reply that is one field holding one of ``values`` (a pick, a letter)."""
    return {"type": "object", "properties": {field: {"type": kind, "enum": list(values)}},
            "required": [field], "additionalProperties": False}


GUIDED_MODES = ("json_schema", "json_object", "guided_json", "none")
DEFAULT_MODEL = "Qwen/Qwen2.5-7B-Instruct"

Messages = list[dict[str, str]]


class LLMOutputError(ValueError):
    """An item got no valid output after the bounded number of tries. ``reason`` and ``advice``
    are the last try's (a caller that asks again, e.g. in another round, can say them)."""

    def __init__(self, message: str, reason: str = "", advice: str = ""):
        super().__init__(message)
        self.reason = reason or message
        self.advice = advice


class ReplyError(ValueError):
    """Why a reply was refused, and ``advice``: what the retry's prompt tells the model to do
    instead (the concrete field and limit), or "" when the message says it all."""

    def __init__(self, message: str, advice: str = ""):
        super().__init__(message)
        self.advice = advice


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
    #: Top-level array properties where a reply with more items than ``maxItems`` keeps its
    #: first valid, distinct ones (``keep_first``): four distractors for three is a usable
    #: reply. Never for lists whose items must line up with something (translated lines).
    surplus: tuple[str, ...] = ()

    def schema_json(self) -> str:
        return json.dumps(self.schema, sort_keys=True)

    def first_property(self) -> str | None:
        props = self.schema.get("properties") or {}
        order = self.schema.get("required") or list(props)
        return order[0] if order else None


def validate_json(obj: Any, schema: dict[str, Any]) -> None:
    """Raise ``ReplyError`` (a ``ValueError``) when ``obj`` does not validate against ``schema``;
    lengths and counts are said as numbers, and its ``advice`` names the field and the limit for
    the retry's prompt."""
    import jsonschema

    try:
        jsonschema.validate(obj, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "$"
        field = ".".join(str(p) for p in exc.absolute_path) or "the reply"
        # Lengths and counts as numbers: the message goes back to the model on a retry.
        if exc.validator in ("maxLength", "minLength") and isinstance(exc.instance, str):
            limit = exc.validator_value
            if exc.validator == "maxLength":
                aim = max(1, int(limit * LENGTH_MARGIN))
                advice = (f'"{field}" must be at most {limit} characters, and yours had {len(exc.instance)}: '
                          f"write it again in at most {aim} characters, one short phrase")
                # The schema's own word on the field (JSON Schema's "description" annotation,
                # which validation ignores): the temporal item says how long its line is.
                hint = exc.schema.get("description") if isinstance(exc.schema, dict) else None
                if hint:
                    advice += f" ({hint})"
            else:
                advice = f'"{field}" must be at least {limit} characters'
            bound = "at most" if exc.validator == "maxLength" else "at least"
            raise ReplyError(f"schema: {where}: {len(exc.instance)} characters, {bound} {limit} allowed", advice) from None
        if exc.validator in ("maxItems", "minItems") and isinstance(exc.instance, list):
            sub = exc.schema if isinstance(exc.schema, dict) else {}
            exact = sub.get("minItems") == sub.get("maxItems")
            bound = "exactly" if exact else "at most" if exc.validator == "maxItems" else "at least"
            advice = f'"{field}" must be a list of {bound} {exc.validator_value} items, and yours had {len(exc.instance)}'
            raise ReplyError(f"schema: {where}: {len(exc.instance)} items, {bound} {exc.validator_value} wanted", advice) from None
        raise ReplyError(f"schema: {where}: {exc.message[:200]}") from None


def _norm(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .!?,;:'\"")


def keep_first(obj: Any, task: TaskSpec) -> Any:
    """``obj`` with each of ``task.surplus``'s arrays that holds more than ``maxItems`` items cut
    to its first ``maxItems`` items that are valid on their own (the items' schema) and distinct
    (from each other and from the object's other text fields, compared without case, spaces and
    end punctuation: a model that lists the answer among its wrong answers). When too few such
    items remain, the first ``maxItems`` are kept and the checks say what is wrong. Too few items
    are never padded. The result is validated and checked as any reply."""
    if not task.surplus or not isinstance(obj, dict):
        return obj
    import jsonschema

    props = task.schema.get("properties") or {}
    out = dict(obj)
    for key in task.surplus:
        value, spec = out.get(key), props.get(key) or {}
        high = spec.get("maxItems")
        if not isinstance(value, list) or high is None or len(value) <= high:
            continue
        seen = {_norm(v) for k, v in out.items() if k != key and isinstance(v, str)}
        kept = []
        for item in value:
            if not jsonschema.Draft202012Validator(spec.get("items") or {}).is_valid(item):
                continue
            if isinstance(item, str):
                if not _norm(item) or _norm(item) in seen:
                    continue
                seen.add(_norm(item))
            kept.append(item)
        out[key] = kept[:high] if len(kept) >= high else value[:high]
        logger.info("%s: %s: %d items for %d wanted: kept the first %d valid, distinct ones",
                    task.name, key, len(value), high, high)
    return out


def parse_output(text: str, task: TaskSpec, ended: bool = False) -> dict[str, Any]:
    """Parse one completion as the task's JSON object; raise ``ValueError`` saying why not.

    A reply that is not JSON gets one conservative repair (``json_shape.repair_json``): double
    quotes inside strings escaped and, when ``ended`` (the model stopped by itself, not cut by
    the token budget), the brackets it left open closed. The repaired value is validated and
    checked as any reply; when it does not parse, the original error is raised. A reply with more
    items than wanted in a ``task.surplus`` list keeps its first ones (``keep_first``)."""
    text = (text or "").strip()
    if not text:
        raise ValueError("empty output")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        obj = _repaired(text, ended)
        if obj is None:
            hint = ""
            if exc.msg.startswith("Expecting") and "delimiter" in exc.msg and text[: exc.pos].rstrip().endswith('"'):
                # A string closed early: most often an unescaped double quote inside it.
                hint = '; a double quote inside a string must be written as \\" (or use single quotes)'
            raise ReplyError(
                f"not JSON ({exc.msg} at {exc.pos}, near {text[max(0, exc.pos - 24):exc.pos + 8]!r}){hint}",
                "reply with one complete JSON object that follows the template, ending with }",
            ) from None
        logger.info("%s: reply repaired (quotes escaped or brackets closed)", task.name)
    obj = keep_first(obj, task)
    validate_json(obj, task.schema)
    copied = template_copy(obj)
    if copied:
        raise ReplyError(f"{copied} is the template's placeholder, not a value",
                         "replace every <...> placeholder of the template with your own text")
    if task.check is not None:
        task.check(obj)
    return obj


#: A placeholder of ``json_shape.shape``'s template ("<text, at most 80 characters>", "<text>").
_PLACEHOLDER = re.compile(r"<(text|value|number|whole number)\b[^<>]*>")


def template_copy(obj: Any, where: str = "") -> str | None:
    """Where ``obj`` holds a string that is one of the template's placeholders copied as it is
    (the 1.5B translated a Mandarin line as "<text, at most 409 characters>"), else None."""
    if isinstance(obj, str):
        return (where or "the reply") if _PLACEHOLDER.fullmatch(obj.strip()) else None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        found = template_copy(value, f"{where}/{key}" if where else str(key))
        if found:
            return found
    return None


def _repaired(text: str, ended: bool) -> Any:
    fixed = repair_json(text, close=ended)
    if fixed is None or fixed == text:
        return None
    try:
        return json.loads(fixed)
    except json.JSONDecodeError:
        return None


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
        advice: dict[int, str] = {}
        earlier: dict[int, list[str]] = {}
        pending = list(range(len(messages_list)))
        for attempt in range(self.settings.max_tries):
            if not pending:
                break
            prompts = [
                with_feedback(messages_list[i], last_error[i], advice.get(i, "")) if self.feedback and i in last_error
                else messages_list[i]
                for i in pending
            ]
            outputs = self.generate(prompts, [tasks[i] for i in pending], sample=attempt)
            still = []
            for i, out in zip(pending, outputs):
                try:
                    if isinstance(out, Exception):
                        raise out
                    if not out.finished:
                        raise ReplyError(f"output cut at max_new_tokens={tasks[i].max_new_tokens}",
                                         "the reply was too long: write shorter values, then close the JSON object")
                    results[i] = parse_output(out.text, tasks[i], ended=True)
                except (ValueError, LLMTransportError) as exc:
                    if i in last_error:
                        earlier.setdefault(i, []).append(last_error[i])
                    last_error[i] = str(exc)
                    advice[i] = getattr(exc, "advice", "")
                    still.append(i)
            if still:
                logger.info("%s: %d/%d outputs invalid on try %d", tasks[0].name, len(still), len(pending), attempt + 1)
            pending = still
        for i in pending:
            # The last try's reason first (as before), then the earlier tries' other reasons.
            others = [e[:100] for e in dict.fromkeys(earlier.get(i, [])) if e != last_error.get(i)]
            results[i] = LLMOutputError(
                f"{tasks[i].name}: no valid output after {self.settings.max_tries} tries ({last_error.get(i, '?')})"
                + (f"; earlier tries: {' | '.join(others)}" if others else ""),
                last_error.get(i, ""), advice.get(i, ""),
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
