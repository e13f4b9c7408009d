"""The LLM stage base: an LLM stage is "the requests for a row" + "the row from the answers".

A stage subclasses ``LLMStage`` and writes two methods::

    def requests(self, row) -> dict[str, tuple[Messages, TaskSpec]]   # raise: the row fails
    def finish(self, row, answers) -> dict                             # answers: key -> object

``LLMStage`` runs them on the stage contract's hook (``lomo_datasets.core.stage``): ``prepare`` is
``requests``; ``run_batch`` sends every request of the batch with the same key in one
``generate_json`` call (one schema per row where the tasks differ), so the generate loop, the
bounded retries and the validation stay in ``lomo_datasets.llm.backends``; a row whose answer
for any key stays invalid fails with that error, the other rows finish.

The settings of an LLM stage are ``LLMSettings``'s fields (inherited, flat), so
``--set compress.backend=openai --set compress.base_url=...`` works. The backend is the
stage's model (``Stage.loaded_model``): loaded once per process, before the first batch.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Any, ClassVar

from lomo_datasets.llm.backends import (  # noqa: F401  (the LLM layer's public names)
    BACKENDS,
    DEFAULT_MODEL,
    GUIDED_MODES,
    LLM_LIBRARIES,
    Backend,
    Completion,
    CTranslate2Backend,
    LLMOutputError,
    LLMSettings,
    LLMTransportError,
    Messages,
    OpenAIBackend,
    TaskSpec,
    TransformersBackend,
    backend_class,
    backend_library,
    backend_names,
    chat_text,
    make_backend,
    parse_output,
    validate_json,
)
from lomo_datasets.models.zoo import ct2_model_dir, hf_model_dir, load_causal_lm  # noqa: F401
from lomo_datasets.core.stage import MissingDependencyError, Stage

#: The LLM ``--embedded`` puts in every LLM step (and the translate step).
EMBEDDED_LLM = "embedded:qwen2.5-coder-1.5b"

#: What ``requests`` returns: per key, the chat messages and the task they ask for.
Requests = dict[str, tuple[Messages, TaskSpec]]

_LLM_FIELDS = [f.name for f in dataclasses.fields(LLMSettings)]


@dataclass
class LLMStage(Stage, LLMSettings):
    """Base of the stages that call an LLM. Its settings are ``LLMSettings``'s fields (inherited,
    flat), so ``--set compress.backend=openai --set compress.base_url=...`` works."""

    start_method: ClassVar[str | None] = "spawn"
    rows_per_batch: ClassVar[int] = 16
    embedded_setting: ClassVar[str | None] = "model"
    #: ``--embedded``: Qwen2.5-Coder-1.5B-Instruct on CTranslate2 int8 (its questions make sense;
    #: tests that need speed name ``embedded:smollm2-135m``, which runs under xgrammar).
    embedded_model: ClassVar[str | None] = EMBEDDED_LLM
    #: No grammar on CTranslate2: one more try than the default for a reply that breaks its JSON.
    embedded_settings: ClassVar[dict[str, Any]] = {"backend": "ctranslate2", "max_tries": 4}
    requires: ClassVar[dict[str, str]] = {"jsonschema": "llm"}

    def check_requirements(self) -> None:
        super().check_requirements()
        backend = backend_class(self.backend)  # None for an unknown name: validate() says so
        for module, extra in (backend.modules if backend is not None else {}).items():
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError(
                    f"stage '{self.name}' with backend={self.backend} needs '{module}': pip install 'lomo-datasets[{extra}]'"
                )

    def llm_settings(self) -> LLMSettings:
        return LLMSettings(**{k: getattr(self, k) for k in _LLM_FIELDS})

    def validate(self) -> None:
        LLMSettings.validate(self, self.name)
        if self.device == "auto" and self.model_is_remote:
            self.device = "cpu"  # the server holds the model: no GPU here (a Ray actor asks for none)

    def model_key(self) -> tuple:
        return tuple(sorted((k, repr(getattr(self, k))) for k in _LLM_FIELDS))

    def model_library(self) -> str | None:
        return backend_library(self.backend)

    def load_model(self, device: str) -> Backend:
        return make_backend(self.llm_settings(), device)

    @property
    def model_is_remote(self) -> bool:
        """With a server backend (``backend=openai``) the model is the server's: nothing to find
        locally."""
        backend = backend_class(self.backend)
        return backend is not None and backend.remote

    @property
    def llm(self) -> Backend:
        """The backend for this process and device (``Stage.loaded_model``)."""
        return self.loaded_model

    # -- the hook ----------------------------------------------------------------------------

    def requests(self, row: dict[str, Any]) -> Requests:
        """Per key, the messages and task of one request for ``row``. Raise to fail the row."""
        raise NotImplementedError

    def prepare(self, row: dict[str, Any]) -> Requests:
        return self.requests(row)

    def run_batch(self, items: list[Requests]) -> list[Any]:
        """Per item, ``{key: parsed object}``, or the error of its first failed key."""
        answers = self.answers_per_key(items)
        return [next((a for a in per.values() if isinstance(a, BaseException)), per) for per in answers]

    def answers_per_key(self, items: list[Requests]) -> list[dict[str, Any]]:
        """Per item, ``{key: parsed object or its error}``. Every key goes out for every item
        that has it (one call per key), so batches do not depend on which answers failed. A
        stage whose rows may keep some failed answers returns this from ``run_batch``."""
        answers: list[dict[str, Any]] = [{} for _ in items]
        for key in dict.fromkeys(k for item in items for k in item):
            todo = [n for n, item in enumerate(items) if key in item]
            outputs = self.llm.generate_json([items[n][key][0] for n in todo], [items[n][key][1] for n in todo])
            for n, output in zip(todo, outputs):
                answers[n][key] = output
        return answers

    def answers_in_one_call(self, items: list[Requests]) -> list[dict[str, Any]]:
        """Per item, ``{key: parsed object or its error}``, with every request of every item in
        one ``generate_json`` call (a task per request; the backend batches by ``batch_size``).
        For stages with many small requests per row whose keys differ from row to row (the
        audit's rotations of each item), where a call per key would be many small batches."""
        flat = [(n, key, request) for n, item in enumerate(items) for key, request in item.items()]
        outputs = self.llm.generate_json([r[0] for _, _, r in flat], [r[1] for _, _, r in flat]) if flat else []
        answers: list[dict[str, Any]] = [{} for _ in items]
        for (n, key, _), output in zip(flat, outputs):
            answers[n][key] = output
        return answers

    def finish(self, row: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
        """The row's output columns from its validated answers (one per request key)."""
        raise NotImplementedError
