"""What a run shows while it works: one progress bar per step and, at the end, a summary.

``configure(verbose, quiet)`` is what the CLI calls once:

- default: WARNING logs, one bar per step (rows done, rate, ETA); the progress bars and info
  messages of ``datasets`` and ``huggingface_hub`` (saving, casting, flattening, uploading)
  are hidden;
- ``verbose``: INFO logs, every library bar, per-row warnings and tracebacks;
- ``quiet``: no bars at all.

``step_bar(name, total)`` is the bar of one step; the runner updates it as chunks finish.
Library users who never call ``configure`` get the step bars and whatever ``datasets`` shows.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

#: Whether step bars are shown (``configure`` sets it; True for library use).
SHOW_STEP_BARS = True


def configure(verbose: bool = False, quiet: bool = False) -> None:
    """Logging and progress output for a command-line run (see the module docstring)."""
    global SHOW_STEP_BARS
    from lomo_datasets.core.redact import RedactingFilter

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    SHOW_STEP_BARS = not quiet
    if verbose:
        return
    import datasets
    import huggingface_hub.utils as hub_utils

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    hub_utils.disable_progress_bars()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass


NO_BAR = _NoBar()


@contextlib.contextmanager
def step_bar(name: str, total: int) -> Iterator[object]:
    """A bar for one step over ``total`` rows (a no-op when bars are off)."""
    if not SHOW_STEP_BARS:
        yield NO_BAR
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=name, unit=" rows", file=sys.stderr, dynamic_ncols=True, leave=True)
    try:
        yield bar
    finally:
        bar.close()
