"""The work dir's store: what both executors keep for resume, with one integrity scheme.

Every file is written aside and renamed into place (atomic on one file system), and recorded
with its size and SHA-256 when it is written; reuse checks the record before trusting a byte,
and anything that does not match is recomputed (one log line says which file and why). Two
shapes of entry, one per scheduler:

- **datasets** (the local runner, ``pipeline.Runner``): ``save(ds, folder)`` writes
  ``folder/data`` (or several named datasets) with ``save_to_disk``, then the ``DONE`` marker
  holding every file's size and SHA-256; ``reuse(folder, names)`` loads them back only when the
  marker's record matches the files;
- **parts** (the Ray executor): ``write_part(table, folder)`` writes one Parquet file per block
  named ``part-<rows>-<size>-<sha256[:16]>.parquet`` (``<rows>`` hashes the input rows it
  holds); the record is the name, so Ray workers on any node need no shared marker;
  ``parts(folder)`` returns the parts whose bytes match their name and removes the others; the
  input blocks a Ray run hands its tasks are Arrow IPC files in the same folder
  (``write_blocks``, ``read_block``), rewritten by every run and removed after it.

The check is the same for both (``damage_of``). This module is the seam where another store
(object storage) plugs in: the executors reach their work dir only through these functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import time
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk

from lomo_datasets.core.files import sha256_file, update_sha256_stream
from lomo_datasets.core.redact import mask_url_credentials

logger = logging.getLogger(__name__)

#: The marker of a finished ``save``: ``{"rows": {name: n}, "files": {name: {rel: {size, sha256}}}, "time": t}``.
DONE = "_SUCCESS"
#: The object that marks a prefix in object storage as a lomo-datasets work dir.
MARKER = ".lomo-datasets.json"
#: A part file's name: the hash of the input rows it holds, its size and its SHA-256 prefix.
PART = re.compile(r"part-(?P<rows>[0-9a-f]{24})-(?P<size>\d+)-(?P<sha256>[0-9a-f]{16})\.parquet")


def damage_of(path: Path, size: Any, sha256: Any, hashed: bool = True) -> str | None:
    """What is wrong with ``path`` against what was recorded when it was written (its size and
    SHA-256, or a prefix of it; ``hashed=False``: the size only); None when nothing is."""
    if not path.is_file():
        return f"{path} is missing"
    if path.stat().st_size != size:
        return f"{path} has {path.stat().st_size} bytes, {size} were written"
    if hashed and (not isinstance(sha256, str) or not sha256 or not sha256_file(path).startswith(sha256)):
        return f"{path} was changed after it was written (checksum differs)"
    return None


# --------------------------------------------------------------------------------------------
# Datasets with a marker (the local runner)
# --------------------------------------------------------------------------------------------


def file_record(folder: Path, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file under ``folder`` (or of ``names`` in it), by relative path."""
    record = {}
    paths = [folder / n for n in names] if names is not None else sorted(p for p in folder.rglob("*") if p.is_file())
    for path in paths:
        record[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return record


def damage(folder: Path, recorded: dict[str, dict[str, Any]] | None) -> str | None:
    """What differs between ``folder`` and its record (None when nothing does). Files added
    later (datasets' cache-*.arrow of a filter or cast) are not ours to judge."""
    if not isinstance(recorded, dict) or not recorded:
        return "it has no record of its files (written by an older version)"
    for hashed in (False, True):  # every size first: cheap, and most damage shows there
        for rel, want in recorded.items():
            problem = damage_of(folder / rel, (want or {}).get("size"), (want or {}).get("sha256"), hashed)
            if problem:
                return problem
    return None


def reuse(folder: Path, names: tuple[str, ...]) -> list[Dataset] | None:
    """The datasets saved in ``folder`` by ``save`` if it finished and its files are what it
    recorded; None (after one log line saying why) when it must be recomputed."""
    marker = folder / DONE
    if not marker.exists():
        return None
    try:
        record = json.loads(marker.read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        record = {}
    problems = [p for name in names for p in [damage(folder / name, record.get(name) if isinstance(record, dict) else None)] if p]
    loaded: list[Dataset] = []
    if not problems:
        try:
            loaded = [load_from_disk(str(folder / name)) for name in names]
        except Exception as exc:  # a file that passes its checksum but does not load
            problems = [f"{folder} does not load ({type(exc).__name__}: {exc})"]
    if problems:
        logger.warning("work dir: %s; recomputing %s", problems[0], folder.name)
        marker.unlink(missing_ok=True)
        return None
    return loaded


def save(ds: Dataset | dict[str, Dataset], folder: Path) -> Any:
    """Save ``ds`` to ``folder/data`` (or each ``{name: dataset}`` to ``folder/name``)
    atomically, then mark the folder done with the size and checksum of every file written.
    Returns what was saved, loaded back from disk."""
    named = ds if isinstance(ds, dict) else {"data": ds}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE).unlink(missing_ok=True)
    record: dict[str, Any] = {"rows": {}, "files": {}, "time": time.time()}
    for name, part in named.items():
        tmp = folder / f"{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        # An empty dataset needs one explicit shard, or load_from_disk cannot read it back.
        part.save_to_disk(str(tmp), **({"num_shards": 1} if len(part) == 0 else {}))
        if (folder / name).exists():
            shutil.rmtree(folder / name)
        os.replace(tmp, folder / name)
        record["rows"][name] = len(part)
        record["files"][name] = file_record(folder / name)
    marker = folder / (DONE + ".partial")
    marker.write_text(json.dumps(record, sort_keys=True))
    os.replace(marker, folder / DONE)
    loaded = {name: load_from_disk(str(folder / name)) for name in named}
    return loaded if isinstance(ds, dict) else loaded["data"]


# --------------------------------------------------------------------------------------------
# A local copy of a work dir in object storage (the local runner with --work-dir s3://...)
# --------------------------------------------------------------------------------------------


def cached_folder(url: str, kind: str) -> Path:
    """The local folder that stands for ``url`` on this machine: under the cache
    (``$LOMO_DATASETS_CACHE`` or ``~/.cache/lomo-datasets``), ``<kind>/<bucket-path>-<hash>``
    (``outputs``: a remote ``--out`` is built there; ``work``: the local runner's copy of a
    remote ``--work-dir``)."""
    from lomo_datasets.models.zoo import cache_dir

    plain = mask_url_credentials(url).rstrip("/")
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", plain.split("://", 1)[-1]).strip("-")[:80]
    return cache_dir() / kind / f"{readable}-{hashlib.sha256(plain.encode()).hexdigest()[:12]}"


def push(folder: Path, url: str) -> int:
    """Upload what ``save`` wrote in ``folder`` to ``url`` (the same relative paths): every file
    its marker records, each size checked, the marker last, so a reader that finds the marker
    finds every file. Returns the files uploaded."""
    fs, base = _remote(url)
    base = base.rstrip("/")
    record = json.loads((folder / DONE).read_text(encoding="utf-8"))
    if fs.exists(f"{base}/{DONE}"):
        fs.rm(f"{base}/{DONE}")  # the old marker first: never a marker over half a folder
    sent = 0
    for name, files in sorted(record["files"].items()):
        for rel, want in sorted(files.items()):
            target = f"{base}/{name}/{rel}"
            fs.put_file(str(folder / name / rel), target)
            if fs.size(target) != want["size"]:
                raise OSError(f"{mask_url_credentials(url)}/{name}/{rel}: {fs.size(target)} bytes arrived, {want['size']} were sent")
            sent += 1
    fs.put_file(str(folder / DONE), f"{base}/{DONE}")
    return sent


def pull(folder: Path, url: str) -> bool:
    """Download a finished ``save`` from ``url`` into ``folder`` when ``url`` has its marker and
    ``folder`` has none (True when it did). ``reuse`` then checks every file against the marker
    before a byte is trusted."""
    if (folder / DONE).exists():
        return False
    fs, base = _remote(url)
    base = base.rstrip("/")
    if not fs.exists(f"{base}/{DONE}"):
        return False
    try:
        record = json.loads(fs.cat_file(f"{base}/{DONE}"))
        files = [(name, rel) for name, held in sorted(record["files"].items()) for rel in sorted(held)]
    except (ValueError, KeyError, AttributeError, TypeError):
        logger.warning("work dir: %s/%s is not a marker this version wrote; recomputing %s", mask_url_credentials(url), DONE, folder.name)
        return False
    for name, rel in files:
        if Path(rel).is_absolute() or ".." in Path(rel).parts or Path(name).name != name:
            logger.warning("work dir: %s/%s lists '%s/%s' outside its folder; recomputing %s", mask_url_credentials(url), DONE, name, rel, folder.name)
            return False
    for name, rel in files:
        target = folder / name / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f"{base}/{name}/{rel}", str(target))
    (folder / DONE).write_bytes(fs.cat_file(f"{base}/{DONE}"))  # last: the local marker stands for a whole copy
    logger.info("work dir: fetched %s from %s (%d files)", folder.name, mask_url_credentials(url), len(files))
    return True


# --------------------------------------------------------------------------------------------
# Part files named by their record (the Ray executor)
# --------------------------------------------------------------------------------------------


def is_remote(folder: Any) -> bool:
    """True for a work dir in object storage (``s3://bucket/prefix``, read through fsspec)."""
    from lomo_datasets.media import remote

    return remote.is_remote(str(folder))


def join(folder: Any, name: str) -> Any:
    """``folder/name``: a ``Path`` for a local folder, a URL string for object storage."""
    return f"{str(folder).rstrip('/')}/{name}" if is_remote(folder) else Path(folder) / name


def makedirs(folder: Any) -> None:
    """Make a local folder (object storage has no folders to make)."""
    if not is_remote(folder):
        Path(folder).mkdir(parents=True, exist_ok=True)


def _remote(folder: Any) -> tuple[Any, str]:
    from lomo_datasets.media import remote

    return remote.filesystem(str(folder))


def _sha256_object(fs: Any, path: str) -> str:
    with fs.open(path, "rb", block_size=8 << 20) as fh:
        return update_sha256_stream(hashlib.sha256(), fh).hexdigest()


def write_part(table: Any, folder: Any, rows: list[int]) -> str:
    """Write ``table`` (holding input ``rows``) to ``folder`` as one Parquet part, atomically;
    return its name. A retried task rewrites the same rows: the older file of those rows goes.
    In object storage the part is written to a local temp file first, then put as one object
    (an object appears whole or not at all)."""
    import tempfile

    import pyarrow.parquet as pq

    key = hashlib.sha256(json.dumps(sorted(set(rows))).encode()).hexdigest()[:24]
    remote = is_remote(folder)
    local = Path(tempfile.gettempdir()) if remote else Path(folder)
    tmp = local / f".part-{key}.{os.getpid()}.tmp"
    try:
        pq.write_table(table, tmp)
        name = f"part-{key}-{tmp.stat().st_size}-{sha256_file(tmp)[:16]}.parquet"
        if remote:
            fs, base = _remote(folder)
            fs.put_file(str(tmp), f"{base.rstrip('/')}/{name}")
            older = [p for p in fs.glob(f"{base.rstrip('/')}/part-{key}-*.parquet") if posixpath.basename(p) != name]
            if older:
                fs.rm(older)
        else:
            os.replace(tmp, local / name)
            for path in local.glob(f"part-{key}-*.parquet"):
                if path.name != name:
                    path.unlink(missing_ok=True)
    finally:
        if remote:
            tmp.unlink(missing_ok=True)
    return name


def parts(folder: Any) -> list[Any]:
    """The part files whose bytes match their name; any other is removed (it is the executor's
    own file, damaged after it was written, or written by an older version), so its rows run
    again. Local parts are ``Path``s, parts in object storage URL strings (``read_part`` reads
    both)."""
    if is_remote(folder):
        return _remote_parts(folder)
    good = []
    for path in sorted(Path(folder).glob("part-*.parquet")):
        name = PART.fullmatch(path.name)
        problem = damage_of(path, int(name["size"]), name["sha256"]) if name else f"{path} is named by an older version"
        if problem is None:
            good.append(path)
        else:
            logger.warning("work dir: %s; recomputing its rows", problem)
            path.unlink()
    return good


def _remote_parts(folder: Any) -> list[str]:
    from lomo_datasets.media import remote

    fs, base = _remote(folder)
    prefix = remote.scheme(str(folder))
    good = []
    for path in sorted(fs.glob(f"{base.rstrip('/')}/part-*.parquet")):
        name = PART.fullmatch(posixpath.basename(path))
        url = f"{prefix}://{path}"
        if name is None:
            problem = f"{url} is named by an older version"
        elif int(size := fs.info(path)["size"]) != int(name["size"]):
            problem = f"{url} has {size} bytes, {name['size']} were written"
        elif not _sha256_object(fs, path).startswith(name["sha256"]):
            problem = f"{url} was changed after it was written (checksum differs)"
        else:
            good.append(url)
            continue
        logger.warning("work dir: %s; recomputing its rows", problem)
        fs.rm(path)
    return good


def read_part(path: Any, columns: list[str] | None = None) -> Any:
    """One part file (local or in object storage) as an Arrow table."""
    import pyarrow.parquet as pq

    if not is_remote(path):
        return pq.read_table(path, columns=columns)
    fs, where = _remote(path)
    with fs.open(where, "rb") as fh:
        return pq.read_table(fh, columns=columns)


def write_blocks(blocks: list[Any], folder: Any, name: str) -> Any:
    """Write ``blocks`` (Arrow tables of one schema) to ``folder/name`` as one Arrow IPC file, a
    record batch per block (``read_block`` reads one back); atomic, like a part. The input a
    Ray run hands its tasks, so any node reads it from the work dir, not from the driver."""
    import tempfile

    import pyarrow as pa

    remote = is_remote(folder)
    makedirs(folder)
    local = Path(tempfile.gettempdir()) if remote else Path(folder)
    tmp = local / f".{name}.{os.getpid()}.tmp"
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, blocks[0].schema) as writer:
            for block in blocks:
                writer.write_batch(_one_batch(block))
        target = join(folder, name)
        if remote:
            fs, base = _remote(folder)
            fs.put_file(str(tmp), f"{base.rstrip('/')}/{name}")
        else:
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _one_batch(table: Any) -> Any:
    """``table`` (with rows) as one record batch."""
    (batch,) = table.combine_chunks().to_batches()
    return batch


def read_block(path: Any, index: int) -> Any:
    """Record batch ``index`` of the Arrow IPC file ``path`` (``write_blocks``) as a table."""
    import pyarrow as pa

    if not is_remote(path):
        with pa.OSFile(str(path), "rb") as source:
            return pa.Table.from_batches([pa.ipc.open_file(source).get_batch(index)])
    fs, where = _remote(path)
    with fs.open(where, "rb") as fh:
        return pa.Table.from_batches([pa.ipc.open_file(fh).get_batch(index)])


def remove_tree(folder: Any) -> None:
    """Remove ``folder`` and what it holds (a prefix in object storage); nothing when absent."""
    if is_remote(folder):
        fs, base = _remote(folder)
        try:
            fs.rm(base.rstrip("/"), recursive=True)
        except FileNotFoundError:
            pass
        return
    shutil.rmtree(folder, ignore_errors=True)


def claim_remote(folder: str) -> None:
    """Claim a work dir in object storage as lomo-datasets': a prefix that holds objects but not
    our marker is someone else's and is refused (the tool removes only its own part files, and
    only under a prefix it claimed); an empty one gets the marker."""
    from lomo_datasets.core.stage import SettingError

    fs, base = _remote(folder)
    marker = f"{base.rstrip('/')}/{MARKER}"
    if fs.exists(marker):
        return
    try:
        held = fs.find(base.rstrip("/"), maxdepth=None)
    except FileNotFoundError:
        held = []
    if held:
        raise SettingError(
            f"--work-dir {mask_url_credentials(folder)}: holds {len(held)} objects that lomo-datasets did not write; "
            "give an empty prefix or one an earlier run used"
        )
    fs.pipe_file(marker, json.dumps({"tool": "lomo-datasets", "kind": "work dir"}).encode())
