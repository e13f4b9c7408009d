"""Can a step's model be had? Told per step, before any row is processed, where it can tell.

``check_model(step)`` looks at the step's ``model`` setting:

- ``embedded:NAME``: must be one of the embedded models (the package check happens at load);
- an existing local file or folder: fine;
- something that is clearly a path (absolute, ``./``, ``~``, a model file suffix) but does not
  exist: refused, with the fix;
- a Hub repo (``org/name``, or what the stage maps a short name such as ``large-v2`` to, via
  its ``model_repo()``): fine when it is in the local Hub cache; refused when it is not and
  ``HF_HUB_OFFLINE`` forbids fetching it; otherwise it is fetched when the model loads;
- a stage whose model lives elsewhere (``model_is_remote``: an LLM server) is not checked.

A model that exists but fails to load is the contract's setting error (``Stage.loaded_model``),
with the same fix (``stage.model_fix``).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from lomo_datasets.core.redact import shorten
from lomo_datasets.core.stage import SettingError, model_fix

logger = logging.getLogger(__name__)

_REPO = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")
_FILE_SUFFIXES = (".gguf", ".bin", ".safetensors", ".pt", ".pth", ".onnx", ".ckpt")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def model_repo(step: Any) -> str | None:
    """The Hub repo the step's model comes from (None for local paths and unknown short names)."""
    custom = getattr(step, "model_repo", None)
    if callable(custom):
        return custom()
    name = getattr(step, "model", None)
    return name if isinstance(name, str) and _REPO.match(name) else None


def in_hub_cache(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("config.json", "model.bin", "tokenizer.json", "README.md"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return True
    return False


def check_model(step: Any) -> None:
    """Raise ``SettingError`` (with the fix) when ``step``'s model cannot be had."""
    from lomo_datasets.models import zoo as models

    name = getattr(step, "model", None)
    if not isinstance(name, str) or not name or getattr(step, "model_is_remote", False):
        return
    step_name = getattr(step, "name", "step")
    where = f"{step_name}.model={shorten(name)}"
    if models.is_embedded(name):
        short = name[len(models.PREFIX):]
        if short not in models.EMBEDDED:
            known = ", ".join(models.PREFIX + k for k in models.EMBEDDED)
            raise SettingError(f"{where}: no such embedded model; use one of {known}")
        return
    path = os.path.expanduser(name)
    if os.path.exists(path):
        return
    if os.path.isabs(path) or name.startswith((".", "~")) or name.endswith(_FILE_SUFFIXES) or name.count("/") > 1:
        raise SettingError(f"{where}: no such file or folder; {model_fix(step_name)}")
    repo = model_repo(step)
    if repo is None:
        return  # a name only the library knows: it is checked when the model loads
    if in_hub_cache(repo):
        return
    if offline():
        raise SettingError(
            f"{where}: not a local path and not in the local Hub cache ({repo}), and HF_HUB_OFFLINE "
            f"forbids fetching it; {model_fix(step_name)}"
        )
    logger.info("%s: %s is not in the local Hub cache; it is fetched when the model loads", step_name, repo)
