"""LLM backends: settings, tasks, validation and the generate loop every LLM stage goes through.

(The stage base is ``lomo_datasets.llm.stage.LLMStage``; model files and loaders are in
``lomo_datasets.models.zoo``.)

Public API
----------

``TaskSpec(name, schema, max_new_tokens, check=None)``
    What a stage asks for: a JSON schema (the output must validate against it), a token budget
    and an optional semantic ``check(obj)`` that raises ``ValueError`` (e.g. "options repeat").

``LLMSettings(backend, model, ...)``
    Frozen, hashable settings: ``backend`` names a registered backend (``backend_names()``):
    ``"transformers"``, ``"ctranslate2"`` or ``"openai"`` (any OpenAI-compatible server: vLLM,
    SGLang, llama.cpp).

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

Every output is validated with ``jsonschema`` and must have ended on EOS (a cut-off output is an
error, never repaired). A reply that ended but is not JSON gets one conservative repair
(``json_shape.repair_json``: double quotes inside strings escaped, brackets left open at the end
closed), then the same validation; a list named in ``TaskSpec.surplus`` with more items than
wanted keeps its first valid, distinct ones (``base.keep_first``; too few stay an error). A
retry's prompt says why the last reply was refused and, for a limit, the field and the limit
(``ReplyError.advice``); retries sample with a seed from the prompts and the try number, so a
rerun gives the same replies.

Backends and the registry
-------------------------

One module per backend in this package, each with its own docstring (how it gets structured
output, where its model comes from): ``transformers_backend`` (xgrammar),
``ctranslate2_backend`` (a JSON template in the prompt, a forced opening, validate and retry),
``openai_backend`` (the server's guided JSON). Shared code is in ``base``.

A backend is a ``Backend`` subclass decorated with ``@register_backend`` that declares ``name``
(the ``backend`` setting's value), ``modules`` (module -> pip extra), ``library`` (``"torch"``,
``"ctranslate2"``, None for a server), ``remote`` (the model is a server's) and optionally
``check_settings(settings, prefix)``. Importing this package imports every module in it, so
adding a backend is adding its module (and its test): ``make_backend``, ``LLMSettings.validate``,
``LLMStage`` (requirements, device library, remote model) and translate read the registry
(``backend_class``, ``backend_names``, ``backend_library``; ``unregister_backend`` undoes a
registration). A backend registered from another module is known in the processes that import
that module (a spawned worker imports its stage's module, not the caller's script).

``BACKENDS`` and ``LLM_LIBRARIES`` are the names and ``{name: library}`` of the backends
registered when this package was imported (kept for importers); code that must see later
registrations calls ``backend_names()`` / ``backend_libraries()``.
"""

from __future__ import annotations

import importlib
import pkgutil

from lomo_datasets.llm.backends.base import (
    DEFAULT_MODEL,
    GUIDED_MODES,
    Backend,
    Completion,
    LLMOutputError,
    LLMSettings,
    LLMTransportError,
    Messages,
    TaskOrTasks,
    TaskSpec,
    backend_class,
    backend_libraries,
    backend_library,
    backend_names,
    chat_text,
    choice_schema,
    make_backend,
    parse_output,
    register_backend,
    unregister_backend,
    validate_json,
)


def _import_backend_modules() -> None:
    """Import every module of the package: each backend module registers its backend."""
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_backend_modules()

# The built-in backends' classes under their old names (``from lomo_datasets.llm.backends import
# OpenAIBackend``); a new backend needs no line here.
from lomo_datasets.llm.backends.ctranslate2_backend import CTranslate2Backend  # noqa: E402,F401
from lomo_datasets.llm.backends.openai_backend import OpenAIBackend  # noqa: E402,F401
from lomo_datasets.llm.backends.transformers_backend import TransformersBackend  # noqa: E402,F401

#: The registered backends' names when the package was imported (``backend_names()`` is live).
BACKENDS = backend_names()
#: The library whose GPUs each local backend uses (``resolve_device``); a server backend has none.
LLM_LIBRARIES = backend_libraries()

__all__ = [
    "BACKENDS", "DEFAULT_MODEL", "GUIDED_MODES", "LLM_LIBRARIES", "Backend", "CTranslate2Backend", "Completion",
    "LLMOutputError", "LLMSettings", "LLMTransportError", "Messages", "OpenAIBackend", "TaskOrTasks", "TaskSpec",
    "TransformersBackend", "backend_class", "backend_libraries", "backend_library", "backend_names", "chat_text",
    "choice_schema", "make_backend", "parse_output", "register_backend", "unregister_backend", "validate_json",
]
