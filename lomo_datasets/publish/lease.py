"""One run at a time on a prefix in object storage: a lease object, renewed while the run lives.

A local folder is held with ``flock`` (``publish.outputs.Lock``), which the kernel frees when the
process dies. Object storage has no such lock, so a run that uses ``--work-dir s3://...`` or
``--out s3://...`` writes ``PREFIX/.lomo-lease.json`` (its host, pid, a random owner id and an
expiry ``ttl`` seconds ahead) and rewrites it every ``ttl / 3`` seconds from a thread:

- another run that finds an unexpired lease of another owner stops at once with one line (who
  holds it, until when);
- a lease whose expiry has passed was left by a run that died (killed, node lost): it is taken
  over, with a warning naming the run that left it;
- two runs that write the lease at the same moment: each reads it back after ``settle``
  seconds, and the one whose write did not last stops (the store keeps one of the two writes);
- the lease is removed when the run ends, only when it is still this run's.

The expiry is the writer's clock: nodes' clocks must agree to well within ``ttl`` (NTP does).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from lomo_datasets.core.redact import mask_url_credentials
from lomo_datasets.media import remote

logger = logging.getLogger(__name__)

LEASE = ".lomo-lease.json"
#: seconds a lease lasts without renewal (a dead run's lease frees itself after at most this)
TTL = 120.0


class Lease:
    """``with Lease("s3://bucket/prefix", "--work-dir"):`` holds the prefix for one run."""

    def __init__(self, url: str, what: str = "--work-dir", ttl: float = TTL, settle: float = 1.0):
        self.url, self.what, self.ttl, self.settle = url.rstrip("/"), what, float(ttl), float(settle)
        self.owner = uuid.uuid4().hex
        self._fs, base = remote.filesystem(self.url)
        self._path = f"{base.rstrip('/')}/{LEASE}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def __enter__(self) -> "Lease":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _read(self) -> dict | None:
        try:
            self._fs.invalidate_cache(self._path)
            data = json.loads(self._fs.cat_file(self._path))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self) -> None:
        now = time.time()
        self._fs.pipe_file(self._path, json.dumps({
            "tool": "lomo-datasets", "owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
            "renewed": now, "expires": now + self.ttl, "ttl": self.ttl,
        }).encode())

    def _busy(self, holder: dict) -> "Exception":
        from lomo_datasets.publish.outputs import BusyError

        left = max(0, int(float(holder.get("expires", 0)) - time.time()))
        return BusyError(
            f"{self.what} {mask_url_credentials(self.url)} is being written by another lomo-datasets run "
            f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}; its lease runs {left} s more and is renewed "
            f"while it lives); wait for it to finish or use another {self.what}. A run that died frees it within {int(self.ttl)} s"
        )

    def acquire(self) -> None:
        holder = self._read()
        now = time.time()
        if holder and holder.get("owner") != self.owner:
            if float(holder.get("expires", 0) or 0) > now:
                raise self._busy(holder)
            logger.warning(
                "%s %s: taking over the lease left by pid %s on %s (expired %.0f s ago: that run ended without releasing it)",
                self.what, mask_url_credentials(self.url), holder.get("pid"), holder.get("host"),
                now - float(holder.get("expires", 0) or 0),
            )
        self._write()
        time.sleep(self.settle)
        back = self._read()
        if not back or back.get("owner") != self.owner:
            raise self._busy(back or {})
        self._thread = threading.Thread(target=self._renew, name="lomo-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                holder = self._read()
                if holder and holder.get("owner") != self.owner:
                    self.lost = True
                    logger.error("%s %s: another run took over this run's lease (pid %s on %s); this run's "
                                 "output may be mixed with its: rerun when it has finished", self.what,
                                 mask_url_credentials(self.url), holder.get("pid"), holder.get("host"))
                    return
                self._write()
            except Exception as exc:  # a store hiccup: the next renewal tries again, well before expiry
                logger.warning("%s %s: renewing the lease failed (%s); retrying", self.what,
                               mask_url_credentials(self.url), type(exc).__name__)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            holder = self._read()
            if holder and holder.get("owner") == self.owner:
                self._fs.rm(self._path)
        except Exception as exc:  # it expires by itself
            logger.warning("%s %s: could not remove the lease (%s); it expires within %d s",
                           self.what, mask_url_credentials(self.url), type(exc).__name__, int(self.ttl))
