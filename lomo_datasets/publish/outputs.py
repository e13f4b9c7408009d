"""Safe output folders: what the tool may write, one writer at a time, all-or-nothing swaps.

- **Ownership.** A folder belongs to the user until lomo-datasets made it. ``claim`` accepts a
  new or empty folder (and marks it with ``MARKER``) or one that already has the marker; any
  other non-empty folder is refused before any work. The marker lists the files the tool
  published there, and only those are ever replaced or deleted.
- **One writer.** ``Lock`` holds ``.lomo-lock`` in the folder with ``flock``: the kernel drops it
  when the holder exits or is killed, so a crashed run never leaves it stuck; the file says
  which pid on which host holds it, for the message a second run prints.
- **All or nothing.** ``publish(out, write)`` has ``write`` fill a staging folder inside ``out``
  (``.lomo-staging/new``), then commits by renaming a journal into place and moves the files
  in (data first, README.md last, so ``load_dataset(out)`` switches from the old card and shards
  to the new ones at one rename), then deletes the previous run's files that the new one no
  longer has. A failure before the commit leaves the folder as it was (the staging folder is
  discarded on the next run); a crash after it is rolled forward on the next run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable

from lomo_datasets.core.stage import SettingError

logger = logging.getLogger(__name__)

#: Marks a folder lomo-datasets made; lists the files it published there.
MARKER = ".lomo-datasets.json"
LOCK = ".lomo-lock"
STAGING = ".lomo-staging"
_JOURNAL = "commit.json"


class BusyError(SettingError):
    """Another run holds the folder."""


def _is_inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_paths(out: str | os.PathLike, videos: str | os.PathLike | None = None, work: str | os.PathLike | None = None) -> None:
    """Refuse an ``--out`` (or work dir) equal to or inside the ``--videos`` folder."""
    if videos is None or not Path(videos).is_dir():
        return
    for flag, path in (("--out", out), ("--work-dir", work)):
        if path is not None and _is_inside(Path(path), Path(videos)):
            raise SettingError(
                f"{flag} {path} is inside the --videos folder {videos}; lomo-datasets never writes among its "
                f"input: choose a folder outside it, e.g. {flag} {Path(videos).resolve().parent / 'lomo-out'}"
            )


def read_marker(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("files", []), list):
        raise SettingError(f"{path} is unreadable; it marks a folder lomo-datasets wrote: restore it or use another folder")
    return data


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # disk full, Ctrl-C: no half-written marker is left to block the rerun
        tmp.unlink(missing_ok=True)
        raise


def claim(folder: str | os.PathLike, flag: str = "--out") -> Path:
    """``folder`` made ready for the tool: created (and marked) when new or empty, accepted when it
    has the marker; a non-empty folder the tool did not make is refused, naming what is there."""
    from lomo_datasets import __version__

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SettingError(f"{flag} {folder} is a file; give a folder (new, empty, or one lomo-datasets wrote)")
    if folder.is_dir() and read_marker(folder) is not None:
        return folder
    present = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()) if folder.is_dir() else []
    if present:
        shown = ", ".join(present[:6]) + (f" and {len(present) - 6} more" if len(present) > 6 else "")
        raise SettingError(
            f"{flag} {folder} already holds files lomo-datasets did not write ({shown}); it never overwrites "
            f"or deletes them: choose a new or empty folder, e.g. {flag} {folder / 'lomo-out'}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / MARKER, {"tool": "lomo-datasets", "version": __version__, "created": time.time(), "files": []})
    return folder


def release_unused(folder: str | os.PathLike) -> None:
    """Remove ``folder`` again if ``claim`` made it and nothing was written there since."""
    folder = Path(folder)
    try:
        if folder.is_dir() and set(os.listdir(folder)) <= {MARKER}:
            (folder / MARKER).unlink(missing_ok=True)
            folder.rmdir()
    except OSError:
        pass


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists (also another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """An exclusive lock on ``folder`` for one run (``with Lock(folder, what):``)."""

    def __init__(self, folder: str | os.PathLike, what: str = "--out"):
        self.path = Path(folder) / LOCK
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise BusyError(self._busy_message()) from None
            # The holder may have removed the file between our open and flock: lock the new one.
            try:
                if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                    os.close(fd)
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
            break
        previous = self._holder(fd)
        if previous and previous.get("pid") not in (None, os.getpid()):
            logger.warning(
                "%s %s: taking over the lock left by pid %s on %s (that run ended without releasing it)",
                self.what, self.path.parent, previous.get("pid"), previous.get("host"),
            )
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def _holder(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            return {}

    def _busy_message(self) -> str:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            holder = {}
        who = ""
        if holder.get("pid"):
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
            who = f" (pid {holder['pid']} on {holder.get('host', '?')}, since {since})"
            if holder.get("host") == socket.gethostname() and not process_alive(int(holder["pid"])):
                who += "; that process has ended, so the lock frees itself in a moment: retry"
        return (
            f"{self.what} {self.path.parent} is being written by another lomo-datasets run{who}; "
            f"wait for it to finish or use another {self.what}"
        )


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _fsync_tree(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _order(files: list[str]) -> list[str]:
    """Data shards first, README.md (what ``load_dataset`` reads first) last."""
    return sorted(files, key=lambda f: (0 if f.startswith("data/") else 2 if f == "README.md" else 1, f))


def recover(out: str | os.PathLike) -> None:
    """Finish a publish that committed before a crash; drop one that did not. Call under the lock."""
    staging = Path(out) / STAGING
    if (staging / _JOURNAL).is_file():
        logger.warning("%s: finishing the publish an earlier run committed before it stopped", out)
        _roll_forward(Path(out))
    elif staging.exists():
        logger.info("%s: discarding the unfinished output of an earlier run", out)
        shutil.rmtree(staging)


def _roll_forward(out: Path) -> None:
    staging = out / STAGING
    journal = json.loads((staging / _JOURNAL).read_text(encoding="utf-8"))
    new, old = journal["files"], journal["old"]
    for rel in _order(new):
        source = staging / "new" / rel
        if source.exists():  # else moved already, before a crash
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, out / rel)
    keep = set(new)
    for rel in old:
        if rel not in keep:
            (out / rel).unlink(missing_ok=True)
            _remove_empty_parents(out, out / rel)
    marker = read_marker(out) or {}
    marker.update(files=sorted(new), published=time.time())
    _write_json(out / MARKER, marker)
    shutil.rmtree(staging)


def _remove_empty_parents(out: Path, path: Path) -> None:
    parent = path.parent
    while parent != out and out in parent.parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            return
        parent = parent.parent


def publish(out: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Have ``write(folder)`` write the whole output into a staging folder, then swap it into
    ``out`` in one commit (see the module docstring). ``out`` must be claimed and locked."""
    out = Path(out)
    recover(out)
    staging = out / STAGING
    new = staging / "new"
    new.mkdir(parents=True)
    try:
        write(new)
        files = _files(new)
        old = (read_marker(out) or {}).get("files", [])
        foreign = [f for f in files if (out / f).exists() and f not in old]
        if foreign:
            raise SettingError(
                f"{out} holds {', '.join(foreign[:5])}, which lomo-datasets did not write and would have to "
                "replace; move it away or use another output folder"
            )
        _fsync_tree(new)
        _write_json(staging / _JOURNAL, {"files": files, "old": old})  # the commit point
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _roll_forward(out)
    return out
