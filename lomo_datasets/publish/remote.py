"""``--out`` in object storage (``s3://bucket/prefix``): a version prefix, then a pointer switch.

A run writes its output as always, into a local folder (the *build folder*, under the cache:
``build_folder``), with the local folder's staged, all-or-nothing
swap. Then ``publish_remote`` uploads it:

1. every published file goes to ``PREFIX/v-<id>/`` where ``<id>`` is a hash of the files' sizes
   and SHA-256 (the same output is the same version: a rerun uploads nothing new). Each object is
   checked after the upload (size) before the next step;
2. the pointer ``PREFIX/.lomo-datasets.json`` is rewritten in one PUT to name the new version
   (``current``), with the files and checksums of every version the tool wrote. Readers that
   follow the pointer see the old version or the new one, never a mix;
3. versions older than the one before are removed, by the lists in the pointer: the tool
   removes only objects it wrote (a reader that started on the previous version can finish).

A prefix holding objects but no pointer (someone else's), or a pointer that is not ours, is
refused before any upload. Credentials come from the store's standard settings
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...) and are never written into the pointer,
the files or the printed lines (URLs are shown with credentials masked).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import time
from pathlib import Path
from typing import Any

from lomo_datasets.core.redact import mask_url_credentials
from lomo_datasets.core.stage import SettingError
from lomo_datasets.publish.lease import LEASE
from lomo_datasets.media import remote

logger = logging.getLogger(__name__)

#: The pointer object at the output prefix (the same name as a local folder's marker).
POINTER = ".lomo-datasets.json"
#: How many versions stay: the current one and the one before it (readers in flight).
KEEP = 2
_VERSION = re.compile(r"v-[0-9a-f]{16}")


def build_folder(url: str) -> Path:
    """The local folder a run with ``--out URL`` builds in (and resumes from): under the cache
    (``$LOMO_DATASETS_CACHE`` or ``~/.cache/lomo-datasets``), ``outputs/<bucket-path>-<hash>``."""
    from lomo_datasets.execution.store import cached_folder

    return cached_folder(url, "outputs")


def _fs(url: str) -> tuple[Any, str]:
    fs, base = remote.filesystem(url)
    return fs, base.rstrip("/")


def read_pointer(url: str) -> dict | None:
    """The pointer at ``url`` (None when there is none)."""
    fs, base = _fs(url)
    path = f"{base}/{POINTER}"
    if not fs.exists(path):
        return None
    try:
        data = json.loads(fs.cat_file(path))
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("tool") != "lomo-datasets" or data.get("kind") != "output":
        raise SettingError(
            f"--out {mask_url_credentials(url)}: {POINTER} there was not written by lomo-datasets for an output "
            "(a work dir's marker, or edited); give another prefix"
        )
    return data


def refuse_inline_credentials(flag: str, url: str) -> None:
    """A URL with credentials in it is refused, before any work, in one line that says where
    they go instead."""
    if mask_url_credentials(url) != url:
        raise SettingError(
            f"{flag} {mask_url_credentials(url)}: credentials in the URL are not used (they would end up in logs and "
            "shell history); give them in the store's settings (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, HF_TOKEN)"
        )


def check_remote_out(url: str) -> None:
    """Refuse, before any work, a URL with credentials in it, a store that cannot be reached, and a
    prefix that is someone else's (objects and no pointer of ours)."""
    refuse_inline_credentials("--out", url)
    fs, base = _fs(url)
    try:
        if read_pointer(url) is not None:
            return
        if not fs.exists(base.split("/", 1)[0]):
            raise SettingError(f"--out {url}: the bucket does not exist (or these credentials cannot see it); create it first")
        held = [p for p in fs.find(base, maxdepth=None) if posixpath.basename(p) != LEASE]
    except FileNotFoundError:
        held = []
    except SettingError:
        raise
    except Exception as exc:  # the store's own error (no such bucket, no access, no network): one line
        raise SettingError(
            f"--out {url}: cannot list it ({type(exc).__name__}: {mask_url_credentials(str(exc))[:300]}); check the "
            "bucket name, the credentials and AWS_ENDPOINT_URL"
        ) from None
    if held:
        raise SettingError(
            f"--out {mask_url_credentials(url)}: holds {len(held)} objects that lomo-datasets did not write; "
            "give an empty prefix or one an earlier run published to"
        )


def _published(folder: Path) -> dict[str, dict[str, Any]]:
    """The files the local publish wrote, with size and SHA-256 (from the folder's marker)."""
    from lomo_datasets.publish import outputs

    marker = outputs.read_marker(folder) or {}
    sums = marker.get("sums") if isinstance(marker.get("sums"), dict) else {}
    files = [f for f in marker.get("files", []) if isinstance(f, str)]
    if not files or any(f not in sums for f in files):
        raise RuntimeError(f"{folder}: no complete record of the published files; rerun the same command")
    return {f: sums[f] for f in sorted(files)}


def version_of(files: dict[str, dict[str, Any]]) -> str:
    """``v-<16 hex>``: the same files (names, sizes, checksums) give the same version."""
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return f"v-{digest[:16]}"


def publish_remote(folder: str | os.PathLike, url: str) -> str:
    """Upload the published files of the local ``folder`` to ``url`` as a new version and switch
    the pointer to it; return the version's URL. See the module docstring."""
    folder = Path(folder)
    files = _published(folder)
    version = version_of(files)
    fs, base = _fs(url)
    pointer = read_pointer(url)
    if pointer is None:
        check_remote_out(url)
        pointer = {"tool": "lomo-datasets", "kind": "output", "versions": {}}
    versions = pointer.get("versions") if isinstance(pointer.get("versions"), dict) else {}
    pending = pointer.get("pending") if isinstance(pointer.get("pending"), dict) else {}
    if version not in versions:  # recorded before the upload: a run that dies mid-upload leaves a list to clean by
        pending[version] = {"files": files, "time": time.time()}
        fs.pipe_file(f"{base}/{POINTER}", json.dumps({**pointer, "pending": pending}, indent=1, sort_keys=True).encode())
    target = f"{base}/{version}"
    uploaded = 0
    for rel, want in files.items():
        key = f"{target}/{rel}"
        if fs.exists(key) and int(fs.info(key)["size"]) == int(want["size"]) and version in versions:
            continue  # this version was uploaded whole before (its files are in the pointer)
        fs.put_file(str(folder / rel), key)
        size = int(fs.info(key)["size"])
        if size != int(want["size"]):
            raise RuntimeError(f"upload of {rel} to {mask_url_credentials(url)}: {size} bytes arrived, {want['size']} were sent; rerun")
        uploaded += 1
    from lomo_datasets import __version__

    order = [v for v in pointer.get("order", []) if v in versions and v != version] + [version]
    versions[version] = {"files": files, "time": time.time()}
    keep = order[-KEEP:]
    drop = {**{v: versions[v] for v in order[:-KEEP]}, **{v: e for v, e in pending.items() if v not in keep}}
    new_pointer = {"tool": "lomo-datasets", "kind": "output", "tool_version": __version__, "current": version,
                   "order": keep, "versions": {v: versions[v] for v in keep}}
    fs.pipe_file(f"{base}/{POINTER}", json.dumps(new_pointer, indent=1, sort_keys=True).encode())  # the switch
    for old, entry in drop.items():
        if not _VERSION.fullmatch(str(old)) or not isinstance(entry, dict):
            continue  # never a path built from an edited pointer
        keys = [f"{base}/{old}/{rel}" for rel in (entry.get("files") or {})
                if isinstance(rel, str) and ".." not in rel.split("/") and not rel.startswith("/")]
        keys = [k for k in keys if fs.exists(k)]
        if keys:
            fs.rm(keys)
    logger.info("published %d new objects to %s", uploaded, mask_url_credentials(f"{url.rstrip('/')}/{version}"))
    return f"{url.rstrip('/')}/{version}"


def load_hint(version_url: str) -> str:
    """How to load a version with ``datasets`` (the train shards are Parquet under ``data/``)."""
    shown = mask_url_credentials(version_url)
    return f"datasets.load_dataset('parquet', data_files={shown + '/data/train-*.parquet'!r})"
