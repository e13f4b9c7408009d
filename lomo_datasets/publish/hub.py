"""Timeouts for the Hugging Face Hub client, so a Hub that accepts a connection and never
answers cannot hang a push.

``huggingface_hub`` talks through one shared HTTP client whose default has no timeout.
``use_timeouts(HubTimeouts(...))`` gives it connect, read, write and pool timeouts (only when
the application has not installed its own client factory). The push itself is retried a
bounded number of times (``publish.Retry``), so the worst case is about
``attempts * (connect + read) + the backoff between attempts`` per request that hangs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from lomo_datasets.core.stage import SettingError

logger = logging.getLogger(__name__)

#: Tries of a whole push on transient errors (``publish.Retry``).
DEFAULT_ATTEMPTS = 5


@dataclass(frozen=True)
class HubTimeouts:
    """Seconds to wait to connect, for the next bytes of an answer, to send, for a pooled connection."""

    connect: float = 10.0
    read: float = 60.0
    write: float = 60.0
    pool: float = 10.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "write", "pool"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value <= 3600:
                raise SettingError(f"Hub {name} timeout {value!r}: use seconds above 0 and at most 3600, e.g. --timeout 60")


_installed: list[HubTimeouts] = []


def use_timeouts(timeouts: HubTimeouts | None = None) -> None:
    """Make huggingface_hub's shared client use ``timeouts`` (default ``HubTimeouts()``)."""
    from huggingface_hub.utils import _http

    timeouts = timeouts or HubTimeouts()
    factory = _http._GLOBAL_CLIENT_FACTORY
    if factory is not _http.default_client_factory and not getattr(factory, "lomo_timeouts", None):
        logger.debug("huggingface_hub has an application client factory; leaving its timeouts alone")
        return
    if getattr(factory, "lomo_timeouts", None) == timeouts:
        return
    httpx = _httpx_module()

    def client_factory():
        client = _http.default_client_factory()
        client.timeout = httpx.Timeout(
            connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool
        )
        return client

    client_factory.lomo_timeouts = timeouts  # type: ignore[attr-defined]
    _http.set_client_factory(client_factory)


def _httpx_module():
    """The httpx flavour huggingface_hub uses (``httpx`` or its fork ``httpx2``, by version)."""
    from huggingface_hub.utils import _http

    for name in ("httpx2", "httpx"):
        module = getattr(_http, name, None)
        if module is not None:
            return module
    import httpx  # pragma: no cover

    return httpx
