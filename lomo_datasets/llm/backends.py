"""LLM backends: settings, tasks, validation and the generate loop every LLM stage goes through.

(The stage base is ``lomo_datasets.llm.stage.LLMStage``; model files and loaders are in
``lomo_datasets.models.zoo``.)

Public API
----------

``TaskSpec(name, schema, max_new_tokens, check=None)``
    What a stage asks for: a JSON schema (the output must validate against it), a token budget
    and an optional semantic ``check(obj)`` that raises ``ValueError`` (e.g. "options repeat").

``LLMSettings(backend, model, ...)``
    Frozen, hashable settings: ``backend`` is ``"transformers"``, ``"ctranslate2"`` or
    ``"openai"`` (any OpenAI-compatible server: vLLM, SGLang, llama.cpp).

``make_backend(settings, device) -> Backend``
    A backend with two methods:

    - ``generate(messages_list, task, sample=0) -> list[Completion]`` (raw text + whether
      it ended on EOS; exceptions per item for transport failures),
    - ``generate_json(messages_list, task) -> list[dict | LLMOutputError]``: constrained
      decoding where the backend can, then parse + validate every output; items that fail are
      retried (sampling, bounded by ``settings.max_tries``) and finally become an
      ``LLMOutputError`` for that item only.

    ``task`` may also be a list with one ``TaskSpec`` per item (e.g. a schema whose enum lists
    that row's subtitle numbers); the items still share batches.

Model files (``lomo_datasets.models.zoo``): ``load_causal_lm(model, device, dtype)`` loads a
transformers causal LM once per process; ``embedded:smollm2-135m`` and ``*.gguf`` files are
dequantized once into ``$LOMO_DATASETS_CACHE/models`` (``hf_model_dir``); ``ct2_model_dir``
makes a CTranslate2 conversion once.

Structured output
-----------------

- transformers: xgrammar (``xgr.contrib.hf.LogitsProcessor``) masks the logits with the task's
  JSON-schema grammar at every step. Chosen because it works with the installed transformers 5.x
  and a GGUF-loaded tokenizer (``TokenizerInfo.from_huggingface``), handles a left-padded batch,
  and costs nothing measurable per step; lm-format-enforcer and outlines pin older transformers
  APIs. A fresh processor is made per ``generate`` call (it keeps per-row matcher state); the
  compiled grammar is cached per schema.
- ctranslate2: ``Generator.generate_batch`` has no logits-processor hook in CTranslate2 4.x (only
  ``callback``, which can stop but not mask). So this backend shows the reply's JSON template
  in the prompt (``json_shape.with_shape``: fields, lengths, choices), forces the JSON opening
  (``{"<first property>":``) into the assistant turn, decodes greedily, keeps the first complete
  JSON value (``json.JSONDecoder.raw_decode``; text after it is dropped), then validates; invalid
  items are retried with sampling, then get an error. It is the fast path for well-behaved
  (larger) models such as ``embedded:qwen2.5-coder-1.5b`` (what ``--embedded`` uses); for a 135M
  model prefer transformers + xgrammar.

ctranslate2's retries tell the model why its last reply was refused (the validation error, with
lengths and counts as numbers), without showing the reply: small models repeat it.
- openai: the server's guided JSON: ``response_format={"type": "json_schema", ...}`` (OpenAI,
  vLLM, SGLang), ``{"type": "json_object", "schema": ...}`` (llama.cpp server), or vLLM's
  ``guided_json`` field; chosen by ``guided``. Requests go through one ``httpx.Client`` (a
  connection pool sized to ``concurrency``, connect and read timeouts), ``concurrency`` at a
  time, with bounded retries and exponential backoff; the API key comes from the environment
  variable named by ``api_key_env`` and is never logged.

Every output is validated with ``jsonschema`` and must have ended on EOS (a cut-off output is an error, never repaired).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from lomo_datasets.llm.json_shape import with_feedback, with_shape
from lomo_datasets.models.zoo import ct2_model_dir, is_embedded, load_causal_lm
from lomo_datasets.core.redact import redact
from lomo_datasets.core.stage import SettingError, resolve_device, split_device

logger = logging.getLogger(__name__)

BACKENDS = ("transformers", "ctranslate2", "openai")


def choice_schema(field: str, kind: str, values: list) -> dict[str, Any]:
    """The JSON schema of a reply that is one field holding one of ``values`` (a pick, a letter)."""
    return {"type": "object", "properties": {field: {"type": kind, "enum": list(values)}},
            "required": [field], "additionalProperties": False}


#: The library whose GPUs each local backend uses (``resolve_device``); a server backend has none.
LLM_LIBRARIES = {"transformers": "torch", "ctranslate2": "ctranslate2"}
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
        if self.backend not in BACKENDS:
            raise SettingError(f"{prefix}.backend={self.backend!r}: use one of {BACKENDS}")
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
        if self.backend == "openai":
            if not self.base_url or not str(self.base_url).startswith(("http://", "https://")):
                raise SettingError(
                    f"{prefix}.base_url={self.base_url!r}: the openai backend needs the server's URL, "
                    "e.g. --set <step>.base_url=http://127.0.0.1:8000/v1"
                )
            if is_embedded(self.model):
                raise SettingError(f"{prefix}.model={self.model!r}: the openai backend takes the server's model name")


def chat_text(tokenizer: Any, messages: Messages, prefill: str = "") -> str:
    """The prompt string for ``messages`` via the tokenizer's chat template, ready for the
    assistant's turn, plus an optional forced start of the answer."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + prefill


# --------------------------------------------------------------------------------------------
# Backends
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
    """Shared retry/validate loop; subclasses implement ``generate``."""

    name: ClassVar[str] = "backend"
    #: Retries say why the last reply was refused (for backends that cannot enforce the schema).
    feedback: ClassVar[bool] = False

    def __init__(self, settings: LLMSettings):
        self.settings = settings

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


class TransformersBackend(Backend):
    """Batched ``model.generate`` with left padding, the chat template and xgrammar."""

    name = "transformers"

    def __init__(self, settings: LLMSettings, device: str):
        super().__init__(settings)
        self.device = resolve_device(None, device, "torch")
        if self.device == "cpu":
            import torch

            torch.set_num_threads(settings.cpu_threads)  # per worker process
        self.lm, self.tokenizer = load_causal_lm(settings.model, self.device, settings.dtype)
        self._compiler = None
        self._grammars: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _grammar(self, task: TaskSpec) -> Any:
        import xgrammar as xgr

        key = task.schema_json()
        with self._lock:
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.lm.config.vocab_size)
                self._compiler = xgr.GrammarCompiler(info)
            if key not in self._grammars:
                self._grammars[key] = self._compiler.compile_json_schema(key, any_whitespace=False)
            return self._grammars[key]

    def generate(self, messages_list, task, sample=0):
        import torch

        tasks = _per_item(task, len(messages_list))
        texts = [chat_text(self.tokenizer, m) for m in messages_list]
        # Similar lengths together: less padding per batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list[Any] = [None] * len(texts)
        eos_ids = self._eos_ids()
        bs = self.settings.batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            try:
                outs = self._generate_batch([texts[i] for i in idx], [tasks[i] for i in idx], sample, eos_ids, torch)
            except Exception as exc:  # a failed batch fails its items, not the call
                logger.warning("%s: generate failed: %s", tasks[idx[0]].name, exc)
                outs = [exc] * len(idx)
            for i, out in zip(idx, outs):
                results[i] = out
        return results

    def _eos_ids(self) -> set[int]:
        ids = self.lm.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, (list, tuple)) else [ids]) if ids is not None else set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _generate_batch(self, texts, tasks, sample, eos_ids, torch):
        import xgrammar as xgr

        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        grammars = [self._grammar(t) for t in tasks]
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max(t.max_new_tokens for t in tasks),
            pad_token_id=self.tokenizer.pad_token_id,
            # one grammar per row (the same object for all rows when the task is shared)
            logits_processor=[xgr.contrib.hf.LogitsProcessor(grammars if len(set(map(id, grammars))) > 1 else grammars[0])],
        )
        if sample:
            # Retries sample; seeded from the prompts so reruns give the same rows.
            torch.manual_seed(_seed(texts, sample))
            kwargs.update(do_sample=True, temperature=self.settings.temperature, top_p=0.95)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.lm.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        completions = []
        for ids, t in zip(new, tasks):
            cut = next((k for k, tok in enumerate(ids) if tok in eos_ids), None)
            finished = cut is not None and cut <= t.max_new_tokens
            body = ids if cut is None else ids[:cut]
            completions.append(Completion(self.tokenizer.decode(body, skip_special_tokens=True), finished))
        return completions


class CTranslate2Backend(Backend):
    """``ctranslate2.Generator.generate_batch`` on a converted model (no grammar hook: a forced
    JSON opening, then validate and retry; see the module docstring)."""

    name = "ctranslate2"
    feedback = True

    def __init__(self, settings: LLMSettings, device: str):
        super().__init__(settings)
        import ctranslate2
        from transformers import AutoTokenizer

        path = ct2_model_dir(settings.model, settings.quantization)
        kind, index = split_device(resolve_device(None, device, "ctranslate2"))
        # The folder's config.json is CTranslate2's, which transformers 5 takes for an old Mistral
        # tokenizer's and warns about; these tokenizers are not Mistral's.
        self.tokenizer = AutoTokenizer.from_pretrained(path, fix_mistral_regex=False)
        compute = settings.quantization if kind == "cpu" else "auto"
        self.generator = ctranslate2.Generator(
            path, device=kind, device_index=index, compute_type=compute,
            inter_threads=1, intra_threads=settings.cpu_threads if kind == "cpu" else 0,
        )

    def _prefill(self, task: TaskSpec) -> str:
        first = task.first_property()
        return f'{{"{first}":' if first else "{"

    def generate(self, messages_list, task, sample=0):
        tasks = _per_item(task, len(messages_list))
        prefills = [self._prefill(t) for t in tasks]
        # No grammar: the prompt shows the reply's JSON template (fields, lengths, choices).
        tokens = [
            self.tokenizer.convert_ids_to_tokens(
                self.tokenizer.encode(chat_text(self.tokenizer, with_shape(m, t.schema), p), add_special_tokens=False)
            )
            for m, t, p in zip(messages_list, tasks, prefills)
        ]
        kwargs: dict[str, Any] = dict(
            max_batch_size=self.settings.batch_size, max_length=max(t.max_new_tokens for t in tasks),
            include_prompt_in_result=False, return_end_token=True,
        )
        if self.tokenizer.eos_token:
            kwargs["end_token"] = self.tokenizer.eos_token
        if sample:
            import ctranslate2

            ctranslate2.set_random_seed(_seed([str(t) for t in tokens], sample))
            kwargs.update(sampling_topk=40, sampling_topp=0.95, sampling_temperature=self.settings.temperature)
        try:
            results = self.generator.generate_batch(tokens, **kwargs)
        except Exception as exc:
            return [exc] * len(tokens)
        eos = self.tokenizer.eos_token_id
        out = []
        decoder = json.JSONDecoder()
        for res, prefill, t in zip(results, prefills, tasks):
            ids = res.sequences_ids[0]
            finished = bool(ids) and ids[-1] == eos and len(ids) <= t.max_new_tokens + 1
            body = ids[:-1] if finished else ids
            text = prefill + self.tokenizer.decode(body, skip_special_tokens=True)
            # Unconstrained models often keep writing after the object closes: keep the first
            # complete JSON value (parsed by the JSON decoder, not by pattern matching).
            try:
                _, end = decoder.raw_decode(text)
                text, finished = text[:end], True
            except json.JSONDecodeError:
                pass
            out.append(Completion(text, finished))
        return out


class OpenAIBackend(Backend):
    """Chat completions from an OpenAI-compatible server, concurrently, with guided JSON."""

    name = "openai"

    def __init__(self, settings: LLMSettings):
        super().__init__(settings)
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self.api_key = os.environ.get(settings.api_key_env or "", "")

    def _body(self, messages: Messages, task: TaskSpec, sample: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": messages,
            "max_tokens": task.max_new_tokens,
            "temperature": self.settings.temperature if sample else 0.0,
        }
        if sample:
            body["seed"] = int(sample)
        mode = self.settings.guided
        if mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": task.name.replace(".", "_"), "schema": task.schema, "strict": True},
            }
        elif mode == "json_object":
            body["response_format"] = {"type": "json_object", "schema": task.schema}
        elif mode == "guided_json":
            body["guided_json"] = task.schema
        return body

    def _client(self) -> Any:
        """One ``httpx.Client`` per backend: a connection pool sized to ``concurrency``, connect
        and read timeouts (``_post`` retries)."""
        import httpx

        if self.__dict__.get("_http") is None:
            headers = {"Content-Type": "application/json"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            timeout = self.settings.timeout
            self._http = httpx.Client(
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
                limits=httpx.Limits(max_connections=self.settings.concurrency, max_keepalive_connections=self.settings.concurrency),
            )
        return self._http

    def _post(self, body: dict[str, Any]) -> Completion:
        """One request; 408/409/429/5xx and timeouts are retried ``http_retries`` times with
        exponential backoff, other client errors are not."""
        import httpx

        client = self._client()
        last = "no attempt"
        for attempt in range(self.settings.http_retries + 1):
            if attempt:
                time.sleep(self.settings.backoff * (2 ** (attempt - 1)))
            try:
                resp = client.post(self.url, json=body)
            except httpx.TransportError as exc:  # connect/read timeouts, refused connections
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code >= 400:
                last = f"HTTP {resp.status_code}"
                if resp.status_code not in (408, 409, 429) and resp.status_code < 500:
                    break  # a client error will not improve by retrying
                continue
            try:
                choice = resp.json()["choices"][0]
                text = choice["message"].get("content") or ""
                return Completion(text, choice.get("finish_reason") in ("stop", "eos", None))
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                last = f"malformed response ({type(exc).__name__})"
        raise LLMTransportError(redact(f"{self.url}: {last} after {self.settings.http_retries + 1} tries"))

    def generate(self, messages_list, task, sample=0):
        tasks = _per_item(task, len(messages_list))
        bodies = [self._body(m, t, sample) for m, t in zip(messages_list, tasks)]
        # Requests run concurrently on the client's pool; results keep the input order.
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            futures = [pool.submit(self._post, body) for body in bodies]
        results: list[Any] = []
        for future in futures:
            exc = future.exception()
            results.append(exc if exc is not None else future.result())
        return results


def make_backend(settings: LLMSettings, device: str = "cpu") -> Backend:
    """The backend for ``settings`` on ``device`` (validate settings first)."""
    settings.validate()
    if settings.backend == "transformers":
        return TransformersBackend(settings, device)
    if settings.backend == "ctranslate2":
        return CTranslate2Backend(settings, device)
    return OpenAIBackend(settings)


