"""``backend=openai``: chat completions from any OpenAI-compatible server (vLLM, SGLang,
llama.cpp), concurrently, with guided JSON.

Structured output: the server's guided JSON: ``response_format={"type": "json_schema", ...}``
(OpenAI, vLLM, SGLang), ``{"type": "json_object", "schema": ...}`` (llama.cpp server), or vLLM's
``guided_json`` field; chosen by ``guided``. Requests go through one ``httpx.Client`` (a
connection pool sized to ``concurrency``, connect and read timeouts), ``concurrency`` at a time,
with bounded retries and exponential backoff; the API key comes from the environment variable
named by ``api_key_env`` and is never logged.

The model is the server's (``remote``): ``model`` is the name the server knows it by, and
``base_url`` must be given.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from typing import Any

from lomo_datasets.core.redact import redact
from lomo_datasets.core.stage import SettingError
from lomo_datasets.llm.backends.base import (
    Backend,
    Completion,
    LLMSettings,
    LLMTransportError,
    Messages,
    TaskSpec,
    _per_item,
    register_backend,
)
from lomo_datasets.models.zoo import is_embedded


@register_backend
class OpenAIBackend(Backend):
    """Chat completions from an OpenAI-compatible server, concurrently, with guided JSON."""

    name = "openai"
    modules = {"httpx": "llm"}
    library = None
    remote = True
    list_order = 2

    def __init__(self, settings: LLMSettings, device: str = "cpu"):
        super().__init__(settings, device)
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self.api_key = os.environ.get(settings.api_key_env or "", "")

    @classmethod
    def check_settings(cls, settings: LLMSettings, prefix: str) -> None:
        if not settings.base_url or not str(settings.base_url).startswith(("http://", "https://")):
            raise SettingError(
                f"{prefix}.base_url={settings.base_url!r}: the openai backend needs the server's URL, "
                "e.g. --set <step>.base_url=http://127.0.0.1:8000/v1"
            )
        if is_embedded(settings.model):
            raise SettingError(f"{prefix}.model={settings.model!r}: the openai backend takes the server's model name")

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
