"""The LLM layer: real SmolLM2-135M (embedded GGUF) under xgrammar, its CTranslate2 conversion,
and the OpenAI-compatible client against a small chat-completions server on 127.0.0.1.

The HTTP server here is a loopback implementation of the chat-completions contract written for
these tests (llama-cpp-python's server takes ~5 min to build here, too long for CI): it answers
with JSON chosen per prompt, can fail with 503 a number of times, and records every request.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
from pathlib import Path

import pytest

from lomo_datasets.llm import stage as llm
from lomo_datasets.llm.stage import LLMOutputError, LLMSettings, TaskSpec, make_backend
from lomo_datasets.core.stage import SettingError

pytestmark = pytest.mark.slow

SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "minLength": 1, "maxLength": 60},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 20}, "minItems": 2, "maxItems": 2},
    },
    "required": ["topic", "count", "tags"],
    "additionalProperties": False,
}
TASK = TaskSpec("test.topic", SCHEMA, max_new_tokens=80)


def prompts(n: int) -> list[list[dict[str, str]]]:
    subjects = ["cooking pasta", "a football match", "a city walk", "repairing a bike", "a cat", "rain", "a bridge", "a concert"]
    return [
        [{"role": "user", "content": f"Describe {subjects[i % len(subjects)]} as JSON with topic, count and two tags."}]
        for i in range(n)
    ]


# --------------------------------------------------------------------------------------------
# A loopback OpenAI-compatible server
# --------------------------------------------------------------------------------------------


class ChatServer:
    """``POST /v1/chat/completions`` on 127.0.0.1. ``reply(body) -> (status, content,
    finish_reason)`` decides each answer; ``requests`` records the bodies and auth headers."""

    def __init__(self, reply):
        self.reply = reply
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                status, content, finish = server.reply(body)
                if status != 200:
                    self.send_response(status)
                    self.end_headers()
                    return
                payload = {
                    "id": "cmpl-1",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def user_text(body: dict) -> str:
    return body["messages"][-1]["content"]


# --------------------------------------------------------------------------------------------
# Validation (no model)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty"),
        ("   ", "empty"),
        ('{"topic": "x", "count": 3, "tags": ["a"', "not JSON"),  # truncated
        ("Sure! Here is the JSON you asked for.", "not JSON"),  # garbage
        ('{"topic": "x", "count": 12, "tags": ["a", "b"]}', "schema"),
        ('{"topic": "x", "count": 1, "tags": ["a", "b"], "extra": 1}', "schema"),
    ],
)
def test_parse_output_rejects_bad_text(text, why):
    with pytest.raises(ValueError, match=why):
        llm.parse_output(text, TASK)


def test_parse_output_says_where_the_json_broke():
    # Unescaped double quotes inside a string, as the 1.5B wrote them: repaired when what follows
    # each quote tells (tests/test_llm_replies.py), then validated as any reply.
    assert llm.parse_output('{"topic": "They shout, "go" now", "count": 1, "tags": ["a", "b"]}', TASK)["topic"] == 'They shout, "go" now'
    # A quote followed by a comma and another string could end it: not repaired, and the error
    # says where the JSON broke.
    with pytest.raises(ValueError) as info:
        llm.parse_output('{"topic": "They shout, "go", "now" loudly", "count": 1, "tags": []}', TASK)
    message = str(info.value)
    assert "Expecting ',' delimiter" in message and "near '" in message and 'written as \\"' in message


def test_parse_output_accepts_valid_and_runs_check():
    good = '{"topic": "pasta", "count": 2, "tags": ["food", "home"]}'
    assert llm.parse_output(good, TASK) == {"topic": "pasta", "count": 2, "tags": ["food", "home"]}

    def no_repeats(obj):
        if len(set(obj["tags"])) != len(obj["tags"]):
            raise ValueError("tags repeat")

    strict = TaskSpec("t", SCHEMA, check=no_repeats)
    with pytest.raises(ValueError, match="repeat"):
        llm.parse_output('{"topic": "pasta", "count": 2, "tags": ["a", "a"]}', strict)


def test_settings_are_checked():
    with pytest.raises(SettingError, match="backend"):
        LLMSettings(backend="vllm-magic").validate()
    with pytest.raises(SettingError, match="base_url"):
        LLMSettings(backend="openai", model="m").validate()
    with pytest.raises(SettingError, match="max_tries"):
        LLMSettings(max_tries=0).validate()


# --------------------------------------------------------------------------------------------
# transformers + xgrammar with the embedded SmolLM2
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smol_backend():
    return make_backend(LLMSettings(model="embedded:smollm2-135m", batch_size=8, max_tries=2, cpu_threads=1), "cpu")


def test_gguf_is_dequantized_once_and_reused():
    first = llm.hf_model_dir("embedded:smollm2-135m")
    assert (Path(first) / "_COMPLETE").exists() and (Path(first) / "config.json").exists()
    assert llm.hf_model_dir("embedded:smollm2-135m") == first
    model, tok = llm.load_causal_lm("embedded:smollm2-135m", "cpu")
    assert llm.load_causal_lm("embedded:smollm2-135m", "cpu")[0] is model  # cached per process
    assert tok.padding_side == "left" and tok.pad_token is not None


def test_llm_steps_share_one_loaded_model_and_releasing_it_frees_it():
    """Every LLM step loads its model through ``LLMStage.load_model``: two steps with the same
    model settings hold one copy in a process, and when the runner releases it at the end of a
    step the transformers model is freed (no second cache keeps it for the process's life)."""
    import gc
    import weakref

    from lomo_datasets.core.stage import release_models
    from lomo_datasets.processors.compress import Compress
    from lomo_datasets.processors.qa import GenerateQA

    # float32 named: a model key no other test's stage holds, so only these two use the model
    settings = {"model": "embedded:smollm2-135m", "dtype": "float32", "cpu_threads": 1, "device": "cpu"}
    compress, qa = Compress(**settings), GenerateQA(**settings)
    assert compress.loaded_model is qa.loaded_model
    lm = weakref.ref(compress.loaded_model.lm)
    # Every LLM model of the process goes (one model kind): an earlier test's step that ran
    # through apply_stage in this process may still hold its own, as a user's would.
    assert release_models(qa) >= 1
    assert release_models(compress) == 0  # nothing of that kind is left
    gc.collect()
    assert lm() is None


def test_constrained_batch_is_always_valid(smol_backend):
    results = smol_backend.generate_json(prompts(6), TASK)
    assert len(results) == 6
    for obj in results:
        assert isinstance(obj, dict), obj
        llm.validate_json(obj, SCHEMA)
        assert len(obj["tags"]) == 2 and 0 <= obj["count"] <= 9


def test_per_item_schemas_share_a_batch(smol_backend):
    tasks = [
        TaskSpec("pick", {"type": "object", "properties": {"index": {"type": "integer", "enum": allowed}},
                          "required": ["index"], "additionalProperties": False}, max_new_tokens=12)
        for allowed in ([3, 7], [10, 11, 12], [0])
    ]
    msgs = [[{"role": "user", "content": "Pick a line number as JSON with key index."}]] * 3
    results = smol_backend.generate_json(msgs, tasks)
    assert results[0]["index"] in (3, 7) and results[1]["index"] in (10, 11, 12) and results[2]["index"] == 0


def test_cut_output_is_retried_then_an_item_error(smol_backend):
    tight = TaskSpec("test.tight", SCHEMA, max_new_tokens=4)  # no valid object fits in 4 tokens
    results = smol_backend.generate_json(prompts(2), tight)
    for res in results:
        assert isinstance(res, LLMOutputError)
        assert "2 tries" in str(res) and "max_new_tokens=4" in str(res)


def test_llm_stage_loads_the_backend_once(smol_backend):
    from lomo_datasets.llm.stage import LLMStage

    stage = LLMStage(model="embedded:smollm2-135m", batch_size=8, max_tries=2, cpu_threads=1)
    assert stage.model == "embedded:smollm2-135m"  # the setting
    backend = stage.llm
    assert stage.llm is backend and backend.lm is smol_backend.lm  # one model per process


# --------------------------------------------------------------------------------------------
# CTranslate2
# --------------------------------------------------------------------------------------------


def test_ctranslate2_backend_on_converted_smollm2():
    settings = LLMSettings(backend="ctranslate2", model="embedded:smollm2-135m", batch_size=8, max_tries=2)
    path = llm.ct2_model_dir(settings.model, settings.quantization)
    assert (Path(path) / "model.bin").exists()
    assert llm.ct2_model_dir(settings.model, settings.quantization) == path  # converted once
    backend = make_backend(settings, "cpu")
    # Extra keys allowed: this checks the backend's mechanics (conversion, batch, forced opening,
    # first JSON value, validation, bounded retries), not how well a 135M model follows a schema.
    simple = TaskSpec("test.summary", {"type": "object", "properties": {"summary": {"type": "string", "minLength": 1}},
                                       "required": ["summary"]}, max_new_tokens=64)
    msgs = [[{"role": "user", "content": f"Summarize as JSON with key summary: we cook pasta number {i} with friends."}]
            for i in range(4)]
    raw = backend.generate(msgs, simple)
    assert all(isinstance(c, llm.Completion) and c.text.startswith('{"summary":') for c in raw)  # forced opening
    results = backend.generate_json(msgs, simple)
    # No grammar hook in CTranslate2: each item is valid JSON of the schema or an item error.
    for res in results:
        if isinstance(res, dict):
            llm.validate_json(res, simple.schema)
        else:
            assert isinstance(res, LLMOutputError) and "2 tries" in str(res)
    assert sum(isinstance(r, dict) for r in results) >= 2


# --------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP
# --------------------------------------------------------------------------------------------


def good_json(i: int) -> str:
    return json.dumps({"topic": f"topic {i}", "count": i % 10, "tags": [f"t{i}", f"u{i}"]})


def test_http_backend_guided_json_concurrency_and_key(monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test-secret-123456")

    def reply(body):
        i = int(user_text(body).split("#")[1])
        return 200, good_json(i), "stop"

    with ChatServer(reply) as server:
        settings = LLMSettings(backend="openai", model="served-model", base_url=server.url,
                               api_key_env="TEST_LLM_KEY", concurrency=4)
        backend = make_backend(settings)
        msgs = [[{"role": "user", "content": f"item #{i}"}] for i in range(10)]
        results = backend.generate_json(msgs, TASK)
    assert results == [json.loads(good_json(i)) for i in range(10)]  # order kept under concurrency
    assert len(server.requests) == 10
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test-secret-123456"
    fmt = first["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == SCHEMA
    assert first["body"]["max_tokens"] == TASK.max_new_tokens and first["body"]["model"] == "served-model"


@pytest.mark.parametrize("guided, key", [("json_object", "response_format"), ("guided_json", "guided_json")])
def test_http_backend_other_guided_modes(guided, key):
    with ChatServer(lambda body: (200, good_json(1), "stop")) as server:
        backend = make_backend(LLMSettings(backend="openai", model="m", base_url=server.url, guided=guided))
        assert backend.generate_json([[{"role": "user", "content": "x"}]], TASK) == [json.loads(good_json(1))]
    body = server.requests[0]["body"]
    assert key in body
    assert (body[key]["schema"] if guided == "json_object" else body[key]) == SCHEMA


def test_bad_outputs_are_retried_a_bounded_number_of_times():
    """Garbage, truncated and empty outputs: retried max_tries times, then an item error;
    the good items of the same call complete."""
    bad = {"garbage": ("I think the answer is 42.", "stop"), "truncated": ('{"topic": "a", "cou', "length"),
           "empty": ("", "stop"), "cut": (good_json(5), "length")}

    def reply(body):
        text = user_text(body)
        if text in bad:
            return (200, *bad[text])
        return 200, good_json(int(text)), "stop"

    names = ["0", "garbage", "1", "truncated", "empty", "cut", "2"]
    with ChatServer(reply) as server:
        backend = make_backend(LLMSettings(backend="openai", model="m", base_url=server.url, max_tries=3))
        results = backend.generate_json([[{"role": "user", "content": n}] for n in names], TASK)
    for name, res in zip(names, results):
        if name.isdigit():
            assert res == json.loads(good_json(int(name)))
        else:
            assert isinstance(res, LLMOutputError) and "3 tries" in str(res)
    per_prompt = {n: sum(user_text(r["body"]) == n for r in server.requests) for n in names}
    assert per_prompt == {n: 1 if n.isdigit() else 3 for n in names}
    # retries sample (temperature > 0, a seed per try); the first try is greedy
    garbage = [r["body"] for r in server.requests if user_text(r["body"]) == "garbage"]
    assert [b["temperature"] for b in garbage] == [0.0, 0.7, 0.7] and [b.get("seed") for b in garbage] == [None, 1, 2]


def test_transport_errors_back_off_then_fail_the_item_only(monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", "sk-never-in-errors-987654")
    failures = {"flaky": 2}

    def reply(body):
        text = user_text(body)
        if text == "down":
            return 503, "", "stop"
        if text == "flaky" and failures["flaky"] > 0:
            failures["flaky"] -= 1
            return 503, "", "stop"
        if text == "forbidden":
            return 403, "", "stop"
        return 200, good_json(7), "stop"

    with ChatServer(reply) as server:
        backend = make_backend(LLMSettings(backend="openai", model="m", base_url=server.url, api_key_env="TEST_LLM_KEY",
                                           max_tries=1, http_retries=2, backoff=0.01))
        results = backend.generate_json([[{"role": "user", "content": t}] for t in ("flaky", "down", "ok", "forbidden")], TASK)
    assert results[0] == json.loads(good_json(7)) and results[2] == json.loads(good_json(7))
    assert isinstance(results[1], LLMOutputError) and "HTTP 503 after 3 tries" in str(results[1])
    assert isinstance(results[3], LLMOutputError) and "HTTP 403 after" in str(results[3])
    counts = {t: sum(user_text(r["body"]) == t for r in server.requests) for t in ("flaky", "down", "ok", "forbidden")}
    assert counts == {"flaky": 3, "down": 3, "ok": 1, "forbidden": 1}  # 4xx is not retried
    assert all("sk-never" not in str(r) for r in results)


def test_unreachable_server_is_an_item_error_not_a_hang():
    backend = make_backend(LLMSettings(backend="openai", model="m", base_url="http://127.0.0.1:9/v1",
                                       max_tries=2, http_retries=1, backoff=0.01, timeout=5))
    (res,) = backend.generate_json([[{"role": "user", "content": "x"}]], TASK)
    assert isinstance(res, LLMOutputError) and "2 tries" in str(res)


# --------------------------------------------------------------------------------------------
# The backend registry
# --------------------------------------------------------------------------------------------


def test_builtin_backends_are_registered_as_before():
    from lomo_datasets.llm import backends

    assert backends.backend_names() == llm.BACKENDS == ("transformers", "ctranslate2", "openai")
    assert llm.LLM_LIBRARIES == {"transformers": "torch", "ctranslate2": "ctranslate2"}
    assert backends.backend_class("openai") is llm.OpenAIBackend and backends.backend_class("nope") is None
    assert [backends.backend_class(n).remote for n in llm.BACKENDS] == [False, False, True]
    with pytest.raises(SettingError, match=r"use one of \('transformers', 'ctranslate2', 'openai'\)"):
        LLMSettings(backend="vllm-magic").validate()
    with pytest.raises(ValueError, match="'openai' is taken"):
        @backends.register_backend
        class Impostor(backends.Backend):
            name = "openai"


def test_a_backend_defined_elsewhere_runs_an_llm_stage():
    """A backend is one class: registered by its decorator, it is a valid ``backend`` setting
    (and listed in the unknown-backend error), its own setting check runs, and an LLM stage runs on
    it; unregistered, the registry is as before."""
    from datasets import Dataset, Features, Value

    from lomo_datasets.core.stage import apply_stage, release_models
    from lomo_datasets.llm import backends
    from lomo_datasets.llm.stage import Completion, LLMStage

    before = backends.backend_names()

    @backends.register_backend
    class EchoBackend(backends.Backend):
        """Answers every request with the same valid JSON, without a model."""

        name = "test-echo"
        modules = {}
        library = None
        remote = True
        calls: list = []

        @classmethod
        def check_settings(cls, settings, prefix):
            if settings.model != "echo-model":
                raise SettingError(f"{prefix}.model={settings.model!r}: the echo backend takes echo-model")

        def generate(self, messages_list, task, sample=0):
            self.calls.append([m[-1]["content"] for m in messages_list])
            return [Completion('{"word": "echo"}', True) for _ in messages_list]

    @dataclasses.dataclass
    class Echo(LLMStage):
        name = "echo_step"

        def features(self):
            return Features({"word": Value("string")})

        def requests(self, row):
            schema = {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}
            return {"word": ([{"role": "user", "content": f"say {row['text']}"}], TaskSpec("echo", schema))}

        def finish(self, row, answers):
            return {"word": answers["word"]["word"]}

    try:
        assert backends.backend_names() == (*before, "test-echo")
        with pytest.raises(SettingError, match="test-echo"):  # listed among the choices
            LLMSettings(backend="vllm-magic").validate()
        with pytest.raises(SettingError, match="the echo backend takes echo-model"):
            Echo(backend="test-echo", model="other")
        stage = Echo(backend="test-echo", model="echo-model", device="cpu")
        assert stage.model_is_remote and stage.model_library() is None
        out = apply_stage(Dataset.from_list([{"video_id": "a", "text": "hello", "errors": []}]), stage)
        assert out["word"] == ["echo"] and out["errors"] == [[]]
        assert EchoBackend.calls == [["say hello"]] and isinstance(stage.llm, EchoBackend)
        release_models(stage)
    finally:
        backends.unregister_backend("test-echo")
    assert backends.backend_names() == before and backends.backend_class("test-echo") is None
    with pytest.raises(SettingError, match="backend"):
        Echo(backend="test-echo", model="echo-model")
