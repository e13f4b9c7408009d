"""``lomo_datasets.load``: run one of our builders (``datasets`` 4+ no longer runs loading scripts).

    import lomo_datasets
    bench = lomo_datasets.load("lomo", data_files={"test": "lomo/*.json"})
    clips = lomo_datasets.load("livecc", data_files="live_sft.jsonl", split="train")

Config settings (``layout="question"``, ``offsets="require"``, ...) pass through as keyword
arguments and are validated by the builder's config class. The prepared Arrow data is cached
under ``cache_dir`` (default: the ``datasets`` cache), keyed by the files, the settings and the
builder's code.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from typing import Any

from datasets import Dataset, DatasetDict

from lomo_datasets.core.stage import SettingError

#: Builder name -> "module:class".
BUILDERS = {
    "lomo": "lomo_datasets.builders.lomo:Lomo",
    "livecc": "lomo_datasets.builders.livecc:LiveCC",
    "videofolder": "lomo_datasets.builders.videofolder:VideoFolder",
}


def builder_class(name: str):
    if name not in BUILDERS:
        raise SettingError(f"unknown builder {name!r}; builders: {', '.join(sorted(BUILDERS))}")
    module, _, cls = BUILDERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


#: The format modules every builder reads through (their code is part of the cache key).
FORMAT_MODULES = ("common", "lomo", "livecc")


def _code_hash(cls) -> str:
    digest = hashlib.sha256()
    modules = [inspect.getmodule(cls)] + [importlib.import_module(f"lomo_datasets.formats.{m}") for m in FORMAT_MODULES]
    for module in modules:
        try:
            digest.update(inspect.getsource(module).encode())
        except (OSError, TypeError):
            digest.update(repr(module).encode())
    return digest.hexdigest()[:16]


def load_builder(name: str, data_files: Any = None, cache_dir: str | os.PathLike | None = None, **config_kwargs: Any):
    """The builder instance (not yet prepared) for ``name`` with ``data_files`` and settings."""
    cls = builder_class(name)
    if data_files is None:
        raise SettingError(f"load({name!r}) needs data_files: a path, a glob, a list, or {{split: paths}}")
    try:
        return cls(
            data_files=data_files,
            cache_dir=str(cache_dir) if cache_dir else None,
            hash=_code_hash(cls),
            base_path=os.getcwd(),
            **config_kwargs,
        )
    except (TypeError, ValueError) as exc:  # bad settings; missing files raise FileNotFoundError
        raise SettingError(f"load({name!r}): {exc}") from None


def load(
    name: str,
    data_files: Any = None,
    split: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    **config_kwargs: Any,
) -> Dataset | DatasetDict:
    """Read LoMo / LiveCC / video-folder data with our builders into typed ``datasets``."""
    from datasets.exceptions import DatasetGenerationError

    from lomo_datasets.formats import FormatError

    builder = load_builder(name, data_files=data_files, cache_dir=cache_dir, **config_kwargs)
    try:
        builder.download_and_prepare()
    except DatasetGenerationError as exc:
        if isinstance(exc.__cause__, FormatError):  # say which file and item is wrong, not just "an error"
            raise FormatError(str(exc.__cause__)) from None
        raise
    return builder.as_dataset(split=split)
