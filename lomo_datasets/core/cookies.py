"""Cookies for downloads, kept secret.

- ``check_cookie_file`` makes sure a cookies file is a Netscape cookies.txt (the format yt-dlp
  reads) before anything reads it for real: a regular, readable, small text file whose lines
  are comments or 7 tab-separated fields. Errors give the line number, never a line, so a
  wrong file (``/etc/shadow``) or a malformed cookie is not echoed anywhere; the cookie values
  of a good file are added to the redactor's secrets.
- ``temporary_cookie_file`` writes one cookie from the environment to a private (0600) file
  named ``lomo-cookies-<pid>-*.txt`` in the temp dir and removes it afterwards;
  ``remove_stale_cookie_files`` (run at every CLI start) removes the ones whose process is
  gone (killed with SIGKILL, or the machine lost power), so a cookie never outlives its run
  for long.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterator

from lomo_datasets.publish.outputs import process_alive
from lomo_datasets.core.redact import add_secret
from lomo_datasets.core.stage import SettingError

logger = logging.getLogger(__name__)

PREFIX = "lomo-cookies-"
#: A cookies file larger than this is not a browser's export.
MAX_BYTES = 1024 * 1024
_FIELDS = 7
_EXPIRES = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_HTTPONLY = "#HttpOnly_"
_FIX = "export a Netscape cookies.txt from your browser (e.g. with a 'cookies.txt' extension)"


def check_cookie_file(path: str | os.PathLike, setting: str = "download.cookiefile") -> int:
    """Raise ``SettingError`` unless ``path`` is a Netscape cookies file; return its number of
    cookies. Never puts the file's content in a message."""
    where = f"{setting}={str(path)!r}"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise SettingError(f"{where}: no such file; {_FIX}") from None
    except OSError as exc:
        raise SettingError(f"{where}: cannot read it ({exc.strerror}); {_FIX}") from None
    if not stat.S_ISREG(info.st_mode):
        from lomo_datasets.media.decode import special_file_kind

        raise SettingError(f"{where}: is {special_file_kind(info.st_mode)}, not a cookies file; {_FIX}")
    if info.st_size > MAX_BYTES:
        raise SettingError(f"{where}: {info.st_size} bytes is too large for a cookies file; {_FIX}")
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_BYTES + 1).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SettingError(f"{where}: is not a text file, not a Netscape cookies file; {_FIX}") from None
    except OSError as exc:
        raise SettingError(f"{where}: cannot read it ({exc.strerror}); {_FIX}") from None
    values = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(_HTTPONLY):
            line = line[len(_HTTPONLY):]
        elif line.startswith("#") or not line.strip():
            continue
        fields = line.split("\t")
        if (
            len(fields) != _FIELDS
            or fields[1].upper() not in ("TRUE", "FALSE")
            or fields[3].upper() not in ("TRUE", "FALSE")
            or (fields[4] and not _EXPIRES.fullmatch(fields[4]))
            or not fields[0] or not fields[5]
        ):
            raise SettingError(
                f"{where}: line {number} is not a Netscape cookie line (7 tab-separated fields: domain, "
                f"TRUE/FALSE, path, TRUE/FALSE, expiry, name, value); this is not a cookies file or it is damaged; {_FIX}"
            )
        values.append(fields[6])
    if not values:
        raise SettingError(f"{where}: holds no cookies; {_FIX}")
    for value in values:
        add_secret(value)
    return len(values)


@contextlib.contextmanager
def temporary_cookie_file(name: str, value: str, domain: str) -> Iterator[str]:
    """A private Netscape cookies file holding cookie ``name=value`` for ``domain``; removed
    on exit (and by ``remove_stale_cookie_files`` if this process dies first)."""
    add_secret(value)
    fd, path = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-", suffix=".txt")  # created 0600
    try:
        os.chmod(path, 0o600)
        subdomains = "TRUE" if domain.startswith(".") else "FALSE"
        expires = int(time.time()) + 24 * 3600
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("# Netscape HTTP Cookie File\n")
            fh.write(f"{domain}\t{subdomains}\t/\tFALSE\t{expires}\t{name}\t{value}\n")
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def remove_stale_cookie_files(folder: str | os.PathLike | None = None) -> int:
    """Remove this user's temporary cookie files whose process is gone; return how many."""
    removed = 0
    for path in glob.glob(os.path.join(folder or tempfile.gettempdir(), f"{PREFIX}*.txt")):
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            continue
        pid_text = Path(path).name[len(PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and process_alive(int(pid_text)):
            continue
        if not pid_text.isdigit() and time.time() - info.st_mtime < 24 * 3600:
            continue  # an older version's file: only once it is a day old
        with contextlib.suppress(OSError):
            os.remove(path)
            removed += 1
    if removed:
        logger.info("removed %d temporary cookie file(s) left by runs that were killed", removed)
    return removed
