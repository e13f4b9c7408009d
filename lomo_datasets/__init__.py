"""lomo-datasets: turn raw videos into annotated video datasets and publish them on the Hub.

Importing this package is cheap: no model, no torch, no network. Stages live in
``lomo_datasets.processors``, builders in ``lomo_datasets.builders``.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

from lomo_datasets.core.errors import worker_setup as _worker_setup  # noqa: E402

_worker_setup()  # a worker process of a CLI run leaves Ctrl-C to the main process

from lomo_datasets.core.stage import (  # noqa: E402
    Filter,
    MissingDependencyError,
    SettingError,
    Stage,
    apply_stage,
    resolve_device,
)

__all__ = [
    "__version__",
    "Filter",
    "MissingDependencyError",
    "SettingError",
    "Stage",
    "apply_stage",
    "resolve_device",
    "load",
]


def __getattr__(name: str):
    # ``lomo_datasets.load`` (the builders' loader) imports lazily to keep this package cheap.
    if name == "load":
        from lomo_datasets.formats.loading import load

        return load
    raise AttributeError(f"module 'lomo_datasets' has no attribute {name!r}")
