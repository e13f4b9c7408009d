"""Videos and manifests in object storage, through fsspec: ``s3://``, ``gs://``, ``hf://``, ``az://``.

``--videos s3://bucket/prefix/`` is listed like a folder; a manifest's ``video`` column may hold
such URIs (relative entries of a remote manifest resolve against its folder). Media are read by
PyAV from fsspec's file object (block reads with a bounded read-ahead, never the whole file into
memory), so a remote video is never copied to local disk.

Credentials come from each store's standard settings (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``
/ ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``; ``GOOGLE_APPLICATION_CREDENTIALS``; ``HF_TOKEN``):
nothing here reads, logs or stores them, and URIs with inline credentials are masked wherever
they are shown (``lomo_datasets.core.redact``).

``http(s)://`` links are not remote files here: they go to the ``download`` step (yt-dlp), which
also handles platform pages.
"""

from __future__ import annotations

import posixpath
import re
from typing import IO, Any

from lomo_datasets.core.stage import SettingError

#: URI schemes read through fsspec, and the package each needs.
SCHEMES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "hf": "huggingface_hub",
           "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}
#: fsspec's read block for media: PyAV seeks a little around the index and reads forward, so a
#: few blocks of read-ahead keep requests few without holding the file in memory.
BLOCK_SIZE = 4 * 2**20
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*)://", re.I)


def scheme(value: str) -> str | None:
    m = _SCHEME.match(value or "")
    return m.group(1).lower() if m else None


def is_remote(value: str) -> bool:
    """True for a URI read through fsspec (``s3://...``), false for local paths and http(s)."""
    return scheme(value) in SCHEMES


def filesystem(url: str) -> tuple[Any, str]:
    """``(fs, path)`` for ``url``; a missing fsspec backend is a setting error that says what to install."""
    import fsspec

    name = scheme(url)
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError:
        package = SCHEMES.get(name or "", name)
        raise SettingError(
            f"{name}:// URIs need the Python package '{package}': pip install 'lomo-datasets[cloud]' (or pip install {package})"
        ) from None


def join(base: str, relative: str) -> str:
    """``relative`` (a manifest entry) against the remote folder ``base``."""
    if is_remote(relative) or scheme(relative):
        return relative
    name = scheme(base)
    rest = base[len(name) + 3:]
    return f"{name}://{posixpath.normpath(posixpath.join(rest, relative))}"


def parent(url: str) -> str:
    name = scheme(url)
    return f"{name}://{posixpath.dirname(url[len(name) + 3:].rstrip('/'))}"


def is_folder(url: str) -> bool:
    fs, path = filesystem(url)
    return url.endswith("/") or fs.isdir(path)


def list_files(url: str, extensions: set[str]) -> list[str]:
    """The files under the remote folder ``url`` whose extension is in ``extensions``, sorted,
    as full URIs; hidden names (a part starting with ``.``) are skipped as for local folders."""
    fs, path = filesystem(url)
    name = scheme(url)
    root = path.rstrip("/")
    found = []
    for key in fs.find(root):
        relative = key[len(root):].lstrip("/")
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        if posixpath.splitext(key)[1].lower() in extensions:
            found.append(f"{name}://{key}")
    return sorted(found)


def info(url: str) -> dict[str, Any]:
    """The object's size and version facts (``ETag``, ``LastModified``...); ``FileNotFoundError``
    when it does not exist."""
    fs, path = filesystem(url)
    return fs.info(path)


def read_bytes(url: str, limit: int) -> bytes:
    """The object's bytes, refused above ``limit`` (a manifest, never a video)."""
    fs, path = filesystem(url)
    size = fs.info(path).get("size") or 0
    if size > limit:
        raise SettingError(f"--videos {url}: {size} bytes is too large for a list of videos (at most {limit})")
    return fs.cat_file(path)


def open_file(url: str) -> IO[bytes]:
    """A seekable binary file object for PyAV, reading ``BLOCK_SIZE`` blocks on demand."""
    fs, path = filesystem(url)
    return fs.open(path, "rb", block_size=BLOCK_SIZE, cache_type="readahead")
