"""What the command line says when something fails: one line, what failed and what to do.

``explain(exc)`` turns an exception into ``(message, exit status)``:

- 2 for a bad setting or input (``SettingError``, a missing optional dependency);
- 130 for Ctrl-C, with "interrupted; rerun the same command to resume";
- 1 for everything else: a failed push, a full disk (the run resumes), no permission, out of
  memory, and unexpected errors (the traceback with ``-v``).

Messages are one line, secrets masked (``redact``) and bounded in length (``shorten``), so a
huge or hostile value never floods the terminal. ``quiet_workers()`` makes the worker processes
a run starts ignore Ctrl-C: the terminal sends it to every process of the group, and only the
main process should answer it (the workers are stopped with their pool), so there is one line
instead of one traceback per worker.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from typing import Iterator

from lomo_datasets.core.redact import redact, shorten  # noqa: F401  (shorten: part of the errors API)

#: The longest error line the CLI prints (messages are cut with an ellipsis).
MAX_MESSAGE = 600
INTERRUPTED = "interrupted; rerun the same command to resume"
_MAIN_PID = "LOMO_DATASETS_MAIN_PID"


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` as one line (newlines folded), secrets masked, at most ``limit`` characters."""
    text = " ".join(redact(str(text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def interrupted(exc: BaseException) -> bool:
    """True when ``exc`` is Ctrl-C, or an error raised while the run was stopping for one
    (a worker pool's timeout, a broken pipe to a worker)."""
    return any(isinstance(e, KeyboardInterrupt) for e in _chain(exc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def explain(exc: BaseException, work_dir: str | None = None, out: str | None = None) -> tuple[str, int]:
    """``(one-line message, exit status)`` for an exception that ended a command (``out``:
    the output folder, which a failed run leaves as it was)."""
    from lomo_datasets.core.stage import MissingDependencyError, SettingError

    if interrupted(exc):
        return INTERRUPTED, 130
    if isinstance(exc, (SettingError, MissingDependencyError)):
        return one_line(_first_line(exc)), 2
    if any(k.__name__ in ("PublishError", "AccountingError", "ClusterLostError") and k.__module__.startswith("lomo_datasets.")
           for k in type(exc).__mro__):
        return one_line(_first_line(exc)), 1
    for err in _chain(exc):
        if _disk_full(err):
            where = full_folder(getattr(err, "filename", None), work_dir, out)
            return one_line(
                f"disk full while writing {where}: free some space (or give --work-dir / --out on a "
                "larger disk) and rerun the same command; finished steps and chunks are kept, "
                "so the run resumes where it stopped" + (f" (the previous contents of {out} are unchanged)" if out else "")
            ), 1
    if isinstance(exc, PermissionError):
        return one_line(
            f"permission denied: {exc.filename or _first_line(exc)}: make it writable (or readable) for "
            "this user, or choose another --out / --work-dir"
        ), 1
    if isinstance(exc, OSError):
        where = f" (the previous contents of {out} are unchanged)" if out else ""
        return one_line(f"{_first_line(exc)}{where}; fix the cause and run again (-v shows the traceback)"), 1
    if isinstance(exc, MemoryError):
        return "out of memory: use a smaller --num-proc, smaller batch sizes (--set STEP.batch_size=N) or smaller models", 1
    if work_dir and work_dir in str(exc):
        return one_line(
            f"the work dir {work_dir} looks damaged ({type(exc).__name__}: {_first_line(exc)}): "
            "remove it (or the step folder named in the message) and rerun; finished outputs elsewhere are kept"
        ), 1
    return one_line(
        f"unexpected {type(exc).__name__}: {_first_line(exc)} (rerun with -v for the traceback, "
        "and report it if it is a bug)"
    ), 1


def full_folder(filename: str | None, work_dir: str | None, out: str | None) -> str:
    """Which folder is full, for the disk-full line: the one holding ``filename`` (``--out`` or
    the work dir, named so), else the one with the least free space."""
    from pathlib import Path
    import shutil

    folders = [(f"the work dir {work_dir}", work_dir), (f"--out {out}", out)]
    if filename:
        path = Path(str(filename)).absolute()
        for label, folder in folders:  # the work dir first: it may be inside --out
            if folder and (Path(folder).absolute() == path or Path(folder).absolute() in path.parents):
                return f"{filename} (in {label})"
        return str(filename)
    free = []
    for label, folder in folders:
        probe = Path(folder).absolute() if folder else None
        while probe is not None and not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe is not None:
            try:
                free.append((shutil.disk_usage(probe).free, label))
            except OSError:
                pass
    return min(free)[1] if free else "the output folder"


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


# --------------------------------------------------------------------------------------------
# Ctrl-C in worker processes
# --------------------------------------------------------------------------------------------


def _ignore_sigint() -> None:
    if not _is_worker():
        return
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread of this process: nothing to do
        pass


def _is_worker() -> bool:
    main = os.environ.get(_MAIN_PID)
    return bool(main) and main != str(os.getpid())


@contextlib.contextmanager
def quiet_workers() -> Iterator[None]:
    """Inside the block only this process answers Ctrl-C: worker processes forked from it,
    and spawned workers that import ``lomo_datasets``, ignore SIGINT (their pool stops them)."""
    previous = os.environ.get(_MAIN_PID)
    os.environ[_MAIN_PID] = str(os.getpid())
    if not _registered:
        os.register_at_fork(after_in_child=_ignore_sigint)
        _registered.append(True)
    with contextlib.suppress(ValueError):  # this process answers Ctrl-C (even if started ignoring it)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_MAIN_PID, None)
        else:
            os.environ[_MAIN_PID] = previous


_registered: list[bool] = []


def worker_setup() -> None:
    """Called when ``lomo_datasets`` is imported: a spawned worker of a CLI run ignores Ctrl-C."""
    _ignore_sigint()
