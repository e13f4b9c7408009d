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
  discarded on the next run); a crash after it is rolled forward on the next run. A damaged
  journal (not JSON, paths outside the folder) is discarded with one warning line and the run
  writes everything again.
- **Only its own files.** The marker records the size and SHA-256 of every file the tool
  published. A file is replaced or deleted only when its path (from the marker or the journal)
  stays inside the folder after resolving links, it is a regular file (not a link) and its
  size and hash are what the marker recorded; anything else refuses the run in one line and
  the file is left alone. The lock file and the staging folder are never followed through a
  link.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from lomo_datasets.core.stage import SettingError
from lomo_datasets.core.files import sha256_file as _sha256

logger = logging.getLogger(__name__)

#: Marks a folder lomo-datasets made; lists the files it published there.
MARKER = ".lomo-datasets.json"
LOCK = ".lomo-lock"
STAGING = ".lomo-staging"
_JOURNAL = "commit.json"


class BusyError(SettingError):
    """Another run holds the folder."""


class ForeignFileError(SettingError):
    """A file the tool would replace or delete is not (or no longer) the one it wrote."""


def file_sums(folder: Path, files: list[str]) -> dict[str, dict]:
    """``{rel: {"size", "sha256"}}`` of ``files`` under ``folder``."""
    return {rel: {"size": (folder / rel).stat().st_size, "sha256": _sha256(folder / rel)} for rel in files}


def _inside(out: Path, rel: Any) -> Path | None:
    """``out / rel`` when ``rel`` is a relative path that stays inside ``out`` (links in its
    folders resolved), else None."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        return None
    pure = Path(rel)
    if pure.is_absolute() or any(part in ("..", "") for part in pure.parts) or rel != pure.as_posix():
        return None
    path = out / pure
    try:
        parent = path.parent.resolve()
    except (OSError, RuntimeError):
        return None
    root = out.resolve()
    return path if parent == root or root in parent.parents else None


def owned_problem(out: Path, rel: Any, recorded: dict | None) -> str | None:
    """Why ``out/rel`` is not a file the tool may replace or delete (None when it may, or when
    nothing is there)."""
    path = _inside(out, rel)
    if path is None:
        return (f"{out / MARKER} lists {str(rel)[:200]!r}, a path outside {out} (the marker was edited); lomo-datasets "
                "deletes only files inside its output: restore the marker (or remove that entry) and rerun, or use another output folder")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a link, not the file lomo-datasets wrote"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if not isinstance(recorded, dict) or "sha256" not in recorded:
        return f"{path} has no size and checksum in {out / MARKER} (written by an older version, or the marker was edited)"
    if st.st_size != recorded.get("size") or _sha256(path) != recorded.get("sha256"):
        return f"{path} was changed after lomo-datasets wrote it (size or checksum differ)"
    return None


def _refuse(problem: str) -> ForeignFileError:
    if "(the marker was edited)" in problem:
        return ForeignFileError(problem)
    return ForeignFileError(
        f"{problem}; lomo-datasets replaces or deletes only files it wrote, unchanged: move that file away "
        "(or restore it) and rerun, or use another output folder"
    )


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
            try:  # a link named .lomo-lock is never followed (it would truncate its target)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise SettingError(
                    f"{self.path} is a link, not lomo-datasets' lock file; remove the link (its target is left alone) and rerun"
                ) from None
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


def _staging(out: Path) -> Path:
    """``OUT/.lomo-staging``, refused when it is a link or a file (never followed)."""
    staging = out / STAGING
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        raise SettingError(
            f"{staging} is {'a link' if staging.is_symlink() else 'a file'}, not lomo-datasets' staging folder; "
            "remove it (a link's target is left alone) and rerun"
        )
    return staging


def _read_journal(staging: Path) -> dict | None:
    """The commit journal when it is whole and names only paths inside the folder, else None."""
    try:
        journal = json.loads((staging / _JOURNAL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(journal, dict):
        return None
    new, old = journal.get("files"), journal.get("old")
    if not isinstance(new, list) or not isinstance(old, list):
        return None
    out = staging.parent
    if any(_inside(out, rel) is None for rel in new) or any(not isinstance(rel, str) for rel in old):
        return None
    if not isinstance(journal.get("sums", {}), dict) or not isinstance(journal.get("old_sums", {}), dict):
        return None
    return journal


def pending(out: str | os.PathLike) -> bool:
    """True when a committed publish waits to be finished (a run crashed after its commit)."""
    return (Path(out) / STAGING / _JOURNAL).is_file()


def recover(out: str | os.PathLike) -> None:
    """Finish a publish that committed before a crash; drop one that did not. Call under the lock."""
    out = Path(out)
    staging = _staging(out)
    if (staging / _JOURNAL).is_file():
        journal = _read_journal(staging)
        if journal is None:
            logger.warning(
                "%s is damaged; discarding the unfinished publish it describes (this run writes the whole output again)",
                staging / _JOURNAL,
            )
            shutil.rmtree(staging)
            return
        logger.warning("%s: finishing the publish an earlier run committed before it stopped", out)
        _roll_forward(out, journal)
    elif staging.exists():
        logger.info("%s: discarding the unfinished output of an earlier run", out)
        shutil.rmtree(staging)


def _roll_forward(out: Path, journal: dict) -> None:
    staging = out / STAGING
    new, old = journal["files"], journal["old"]
    sums, old_sums = journal.get("sums", {}), journal.get("old_sums", {})
    for rel in _order(new):
        source = staging / "new" / rel
        if not source.exists():  # moved already, before a crash
            continue
        target = _inside(out, rel)
        problem = owned_problem(out, rel, old_sums.get(rel)) if rel in old else None
        if target is None or problem or (target.exists() and rel not in old) or target.is_symlink():
            logger.warning("%s: not replaced (%s); the new file stays in %s", out / rel, problem or "not written by lomo-datasets", source)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    keep = set(new)
    for rel in old:
        if rel in keep:
            continue
        problem = owned_problem(out, rel, old_sums.get(rel))
        if problem:
            logger.warning("not deleted: %s", problem)
            continue
        path = out / rel
        path.unlink(missing_ok=True)
        _remove_empty_parents(out, path)
    marker = read_marker(out) or {}
    marker.update(files=sorted(new), sums={rel: sums[rel] for rel in new if rel in sums}, published=time.time())
    _write_json(out / MARKER, marker)
    left = (staging / "new").is_dir() and any(not p.is_dir() or p.is_symlink() for p in (staging / "new").rglob("*"))
    if not left:
        shutil.rmtree(staging)
    else:  # a file that could not be put in place stays for the user to look at; the journal goes
        (staging / _JOURNAL).unlink(missing_ok=True)
        _remove_empty_dirs(staging / "new")


def _remove_empty_dirs(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_dir() and not path.is_symlink():
            try:
                path.rmdir()
            except OSError:
                pass


def record_files(out: str | os.PathLike, files: list[str]) -> None:
    """Record in the marker the size and checksum of ``files`` that a command (``audit``)
    rewrote in a folder the tool published (call under the lock)."""
    out = Path(out)
    marker = read_marker(out)
    if marker is None:
        return
    sums = marker.get("sums") if isinstance(marker.get("sums"), dict) else {}
    sums.update(file_sums(out, [f for f in files if (out / f).is_file()]))
    marker["sums"] = sums
    marker["files"] = sorted(set(marker.get("files") or []) | set(files))
    _write_json(out / MARKER, marker)


@contextmanager
def held(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """The lock on a folder the tool wrote, for a command that reads or rewrites it (``audit``,
    ``publish``): refused in one line while another run holds it or a committed publish waits
    to be finished. A folder without the marker is not locked (nothing of the tool's is there)."""
    folder = Path(folder)
    if not folder.is_dir() or read_marker(folder) is None:
        yield folder
        return
    if pending(folder):
        raise BusyError(
            f"{what} {folder} has a publish that a run committed but did not finish ({folder / STAGING / _JOURNAL}); "
            "rerun the same `lomo-datasets run` (or wait for the running one), then retry"
        )
    with Lock(folder, what):
        if pending(folder):
            raise BusyError(
                f"{what} {folder} has a publish that a run committed but did not finish; rerun the same `lomo-datasets run`, then retry"
            )
        yield folder


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
    staging = _staging(out)
    new = staging / "new"
    new.mkdir(parents=True)
    try:
        write(new)
        files = _files(new)
        marker = read_marker(out) or {}
        old = marker.get("files", [])
        old_sums = marker.get("sums") if isinstance(marker.get("sums"), dict) else {}
        foreign = [f for f in files if (out / f).exists() or (out / f).is_symlink()]
        foreign = [f for f in foreign if f not in old]
        if foreign:
            raise SettingError(
                f"{out} holds {', '.join(foreign[:5])}, which lomo-datasets did not write and would have to "
                "replace; move it away or use another output folder"
            )
        for rel in [*files, *[f for f in old if f not in set(files)]]:  # replaced, then deleted
            if rel in old or _inside(out, rel) is None:
                problem = owned_problem(out, rel, old_sums.get(rel) if isinstance(rel, str) else None)
                if problem:
                    raise _refuse(problem)
        sums = file_sums(new, files)
        _fsync_tree(new)
        journal = {"files": files, "old": old, "sums": sums, "old_sums": {k: v for k, v in old_sums.items() if k in old}}
        _write_json(staging / _JOURNAL, journal)  # the commit point
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _roll_forward(out, journal)
    return out
