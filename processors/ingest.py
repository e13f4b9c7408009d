"""Ingest: video records from a folder, a text file of paths, or a JSONL/CSV manifest; probe.

``ingest(source)`` returns one row per video with a stable, filesystem-safe ``video_id``;
``Probe`` adds duration, fps, width, height and has_audio (PyAV, no decoding of frames).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from datasets import Dataset

from lomo_datasets.core import features as F
from lomo_datasets.core.arrow_files import ArrowFileWriter, temp_folder
from lomo_datasets.core.redact import mask_url_credentials
from lomo_datasets.media import decode as media
from lomo_datasets.media import remote
from lomo_datasets.core.stage import SettingError, Stage

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {
    ".mp4", ".mkv", ".webm", ".avi", ".mov", ".flv", ".m4v", ".ts", ".mpg", ".mpeg", ".wmv", ".3gp",
}
MANIFEST_EXTENSIONS = {".jsonl", ".json", ".csv"}
_UNSAFE = re.compile(r"[^\w.\-]+")
_MAX_ID = 96


def is_url(value: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.\-]*://", value, re.I))


def needs_download(value: str) -> bool:
    """A URL the ``download`` step fetches (http(s), platform pages); object-storage URIs
    (``s3://`` ...) are read where they are (``lomo_datasets.media.remote``)."""
    return is_url(value) and not remote.is_remote(value)


_BILIBILI_ID = re.compile(r"^(BV[0-9A-Za-z]{10}|av\d{1,12})$")
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_BILIBILI_HOSTS = ("bilibili.com", "b23.tv")
_YOUTUBE_HOSTS = ("youtube.com", "youtu.be", "youtube-nocookie.com")


def _host_is(host: str, domains: tuple[str, ...]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


def platform_reference(value: str) -> tuple[str, str, str | None] | None:
    """``(url, source, platform_id)`` for a Bilibili/YouTube id or URL, ``("url", ...)`` for
    another http(s) URL, ``None`` for anything else (a local path).

    ``BV1xx411c7mD`` -> Bilibili, an 11-character ``[A-Za-z0-9_-]`` string -> YouTube. Callers
    check local files first, so a file that happens to look like an id stays a file.
    """
    from urllib.parse import parse_qs, urlparse

    value = value.strip()
    if _BILIBILI_ID.match(value):
        return f"https://www.bilibili.com/video/{value}", "bilibili", value
    if _YOUTUBE_ID.match(value):
        return f"https://www.youtube.com/watch?v={value}", "youtube", value
    if not is_url(value):
        return None
    parsed = urlparse(value)
    host = (parsed.hostname or "").lower()
    parts = [p for p in parsed.path.split("/") if p]
    if _host_is(host, _BILIBILI_HOSTS):
        found = next((p for p in parts if _BILIBILI_ID.match(p)), None)
        page = (parse_qs(parsed.query).get("p") or ["1"])[0]
        if found and page.isdigit() and int(page) > 1:  # part p of a multi-part video
            found = f"{found}_p{int(page)}"
        return value, "bilibili", found
    if _host_is(host, _YOUTUBE_HOSTS):
        found = None
        if host.endswith("youtu.be") and parts:
            found = parts[0]
        elif parts and parts[0] in ("shorts", "embed", "live", "v") and len(parts) > 1:
            found = parts[1]
        else:
            found = (parse_qs(parsed.query).get("v") or [None])[0]
        return value, "youtube", found if found and _YOUTUBE_ID.match(found) else None
    return value, "url", None


def make_video_id(name: str) -> str:
    """A filesystem-safe id from a file stem or a given id: letters (any script), digits,
    ``_``, ``-`` and single dots; no path separators, no ``..``, no leading dot."""
    text = unicodedata.normalize("NFC", name)
    text = _UNSAFE.sub("_", text)
    text = re.sub(r"\.{2,}", "_", text).strip("._-")
    if len(text) > _MAX_ID:
        text = text[: _MAX_ID - 9].rstrip("._-") + "-" + hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return text or "video"


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        logger.warning("manifest is not valid UTF-8; undecodable bytes are replaced")
        return raw.decode("utf-8", errors="replace")


def _clean(value: Any) -> str | None:
    """Manifest text as valid UTF-8 (lone surrogates and control characters removed)."""
    if value is None:
        return None
    text = str(value).encode("utf-8", errors="replace").decode("utf-8")
    return "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch) != "Cc").strip() or None


def _entry(video: str, base: Path | str | None, **meta: Any) -> dict[str, Any]:
    """One input: a local path (made absolute against ``base``), a URL, an object-storage URI
    (relative to ``base`` when that is a remote folder), or a platform id (Bilibili BV/av id,
    YouTube id), which becomes its URL with ``source`` and ``video_id`` set."""
    video = video.strip()
    if isinstance(base, str) and remote.is_remote(base) and not is_url(video) and not platform_reference(video):
        video = remote.join(base, video)
    if remote.is_remote(video):
        return {"video": video, **{k: v for k, v in meta.items() if v}}
    local = video if base is None or os.path.isabs(video) else str(base / video)
    reference = None if (not is_url(video) and os.path.exists(local)) else platform_reference(video)
    if reference is None:
        return {"video": os.path.abspath(local), **meta}
    url, source, platform_id = reference
    meta = {k: v for k, v in meta.items() if v}
    meta.setdefault("source", source)
    if platform_id:
        meta.setdefault("video_id", platform_id)
        meta["key"] = f"{source}:{platform_id}"  # one video, however its URL is written
    return {"video": url, **meta}


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


#: The longest line a manifest or list of paths may have (a path, a URL, one JSON object).
MAX_LINE_BYTES = 1 << 20
#: The most a manifest or list of paths may hold (about a million entries).
MAX_LIST_BYTES = 1 << 30


def _read_text(path: Path) -> str:
    """The text of a manifest or list file, line by line with each line bounded (a file of one
    endless line is refused at the first ``MAX_LINE_BYTES``, never read into memory whole)."""
    lines, total = [], 0
    with open(path, "rb") as fh:
        for number, line in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(line) > MAX_LINE_BYTES:
                raise SettingError(
                    f"{path}:{number}: a line longer than {MAX_LINE_BYTES} bytes; a manifest holds one path, URL "
                    "or JSON object per line: check that --videos names the right file"
                )
            lines.append(line)
            total += len(line)
            if total > MAX_LIST_BYTES:
                raise SettingError(f"{path}: more than {MAX_LIST_BYTES} bytes; split the input and run the parts with --shard or separately")
    return _decode(b"".join(lines))


def _read_manifest(path: Path) -> Iterator[dict[str, Any]]:
    return _parse_manifest(_read_text(path), path, path.parent, path.suffix.lower())


def _parse_manifest(text: str, path: Path | str, base: Path | str, suffix: str) -> Iterator[dict[str, Any]]:
    """The manifest's entries one at a time. A line that is not a JSON object stops it at once;
    an entry without a video stops it once every line has been read (as when all lines were
    parsed first), with the first such entry's number."""
    if suffix == ".csv":
        rows: Iterable[dict] = csv.DictReader(io.StringIO(text))
    else:
        rows = _json_rows(text, path)
    missing = None
    for number, row in enumerate(rows, 1):
        video = row.get("video") or row.get("path") or row.get("url")
        if not video:
            missing = missing or SettingError(f"{path}: entry {number} has no 'video' (or 'path'/'url') field")
            continue
        if missing is None:
            yield _entry(
                str(video),
                base,
                video_id=_clean(row.get("video_id")),
                title=_clean(row.get("title")),
                category=_clean(row.get("category")),
                source=_clean(row.get("source")),
                language=(_clean(row.get("language")) or "").lower() or None,
            )
    if missing is not None:
        raise missing


def _json_rows(text: str, path: Path | str) -> Iterator[dict]:
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SettingError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
            except RecursionError:
                raise SettingError(f"{path}:{number}: JSON nested too deeply; write one flat object per line") from None
            if not isinstance(row, dict):
                raise SettingError(
                    f"{path}:{number}: a JSON {_JSON_TYPES.get(type(row), 'value')}, not an object; "
                    'write one object per line, e.g. {"video": "clip.mp4"}'
                )
            yield row


#: A remote list of videos larger than this is refused (it would be read into memory).
MAX_REMOTE_LIST_BYTES = 256 * 2**20


def _discover_remote(source: str) -> list[dict[str, Any]]:
    """Entries from an object-storage folder (listed recursively), manifest or list of URIs."""
    shown = mask_url_credentials(source)
    suffix = posixpath.splitext(source.rstrip("/"))[1].lower()
    try:
        if suffix in VIDEO_EXTENSIONS and not source.endswith("/"):
            remote.info(source)
            return [_entry(source, None)]
        if suffix in MANIFEST_EXTENSIONS or (suffix and not remote.is_folder(source)):
            text = _decode(remote.read_bytes(source, MAX_REMOTE_LIST_BYTES))
            if suffix in MANIFEST_EXTENSIONS:
                return list(_parse_manifest(text, shown, remote.parent(source), suffix))
            base = remote.parent(source)
            return [_entry(line, base) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        return [_entry(uri, None) for uri in remote.list_files(source, VIDEO_EXTENSIONS)]
    except FileNotFoundError:
        raise SettingError(f"--videos {shown}: no such folder or object") from None
    except PermissionError as exc:
        raise SettingError(f"--videos {shown}: access denied ({exc}); check the store's credentials (e.g. AWS_ACCESS_KEY_ID, AWS_PROFILE)") from None


def discover(source: str | os.PathLike) -> list[dict[str, Any]]:
    """Entries (``video`` plus optional metadata) from a folder, a text file or a manifest,
    local or in object storage (``s3://bucket/prefix/``)."""
    return list(entries(source))


def entries(source: str | os.PathLike) -> Iterable[dict[str, Any]]:
    """``discover``'s entries, made one at a time as they are iterated (the source is checked
    and a folder listed at once)."""
    if remote.is_remote(os.fspath(source)):
        return _discover_remote(os.fspath(source))
    path = Path(source)
    if not path.exists():
        raise SettingError(f"--videos {source}: no such folder or file")
    if not path.is_dir() and not path.is_file() and not stat.S_ISFIFO(path.stat().st_mode):
        # /dev/zero, a socket: never read (a pipe, e.g. `--videos <(ls *.mp4)`, is read with bounds)
        kind = media.special_file_kind(path.stat().st_mode)
        raise SettingError(
            f"--videos {source}: {kind}, not a folder or a file; give a folder of videos, a text file of "
            "paths/URLs or a JSONL/CSV manifest"
        )
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        return (_entry(str(p), None) for p in files)
    if path.suffix.lower() in MANIFEST_EXTENSIONS:
        return _read_manifest(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return [_entry(str(path), None)]
    lines = _read_text(path).splitlines()
    return (_entry(line, path.parent) for line in lines if line.strip() and not line.lstrip().startswith("#"))


def _identity(entry: dict[str, Any], video: str) -> str:
    """What makes two entries the same video: the platform id, the file itself (device and
    inode, so links and other spellings of a path match), else the URL or path."""
    if entry.get("key"):
        return entry["key"]
    if not is_url(video):
        try:
            st = os.stat(video)
            return f"file:{st.st_dev}:{st.st_ino}"
        except OSError:
            return "path:" + os.path.realpath(video)
    return video


#: Rows per Arrow record batch that ingest builds: it holds one batch of Python rows at a time.
BATCH_ROWS = 4096
#: Hidden columns of the rows before their ids are unique: what makes two entries the same
#: video (``_identity``) and the name a colliding id's suffix is hashed from.
_KEY, _NAME = "_lomo_key", "_lomo_name"


def _row(entry: dict[str, Any]) -> dict[str, Any]:
    """One entry's record, its id not yet unique, with its ``_KEY`` and ``_NAME``."""
    video = entry["video"]
    errors = []
    try:
        video.encode("utf-8")
    except UnicodeEncodeError:
        errors.append({"stage": "ingest", "error": "file name is not valid UTF-8; rename the file"})
        video = video.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    stem = Path(video.rstrip("/").split("?")[0]).stem if not entry.get("video_id") else entry["video_id"]
    return {
        "video_id": make_video_id(stem),
        "video": video,
        "source": entry.get("source") or (remote.scheme(video) if remote.is_remote(video) else "url" if is_url(video) else "local"),
        "title": entry.get("title") or (Path(video).stem if not needs_download(video) else None),
        "category": entry.get("category"),
        "language": entry.get("language"),
        "errors": errors,
        _KEY: _identity(entry, video),
        _NAME: entry.get("key") or video,  # stable across machines
    }


def _row_batches(entries: Iterable[dict[str, Any]]) -> Iterator[Any]:
    """``_row`` of every entry, as Arrow record batches of ``BATCH_ROWS`` rows."""
    import pyarrow as pa

    batch_rows = BATCH_ROWS

    schema = pa.schema([*F.VIDEO.arrow_schema, pa.field(_KEY, pa.string()), pa.field(_NAME, pa.string())])
    rows = []
    for entry in entries:
        rows.append(_row(entry))
        if len(rows) == batch_rows:
            yield pa.RecordBatch.from_pylist(rows, schema=schema)
            rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=schema)


def _codes(values: Any) -> Any:
    """Per row of an Arrow (chunked) string array: the number of its value among the distinct ones."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(values)
    chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
    return np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks] or [np.zeros(0, np.int32)]).astype(np.int64)


def _replace(values: Any, rows: Any, new: Any) -> Any:
    """``values`` (an Arrow string array) with the rows ``rows`` (ascending) set to ``new(row, value)``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(rows):
        return values
    mask = np.zeros(len(values), dtype=bool)
    mask[rows] = True
    replacements = [new(int(row), value) for row, value in zip(rows, values.take(pa.array(rows)).to_pylist())]
    return pc.replace_with_mask(values, pa.array(mask), pa.array(replacements, pa.string()))


def _unique_ids(ids: Any, keys: Any, names: Any) -> tuple[Any, Any]:
    """The rows' unique ids and, per row, the index of the first row of the same video (the row
    itself when it is the first), from their ids, ``_KEY`` and ``_NAME`` (Arrow string arrays in
    input order; per row a few integers in memory, no Python object). Ids that different videos
    share get a suffix from a hash of the name; the n-th row of one id (n > 1) gets ``-dup<n>``."""
    import numpy as np
    import pyarrow as pa

    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    n = len(ids)
    id_codes, key_codes = _codes(ids), _codes(keys)
    width = int(key_codes.max()) + 1 if n else 1
    pairs = np.unique(id_codes * width + key_codes)  # distinct (id, video)
    videos_per_id = np.bincount(pairs // width, minlength=int(id_codes.max()) + 1 if n else 0)
    shared = np.flatnonzero(videos_per_id[id_codes] > 1)
    shared_names = names.take(pa.array(shared)).to_pylist() if len(shared) else []
    digests = dict(zip(shared.tolist(), shared_names))
    ids = _replace(ids, shared, lambda row, value: f"{value[: _MAX_ID - 9]}-{hashlib.sha1(digests[row].encode('utf-8')).hexdigest()[:8]}")
    codes = _codes(ids)
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if n else np.zeros(0, np.int64)
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    nth = np.empty(n, dtype=np.int64)
    nth[order] = np.arange(n) - group_start + 1
    ids = _replace(ids, np.flatnonzero(nth > 1), lambda row, value: f"{value[: _MAX_ID - 9]}-dup{nth[row]}")
    first_index = np.unique(key_codes, return_index=True)[1]
    return ids, first_index[key_codes]


def _unique_tables(batches: Iterable[Any], ids: Any, first: Any) -> Iterator[Any]:
    """The staged ``batches`` (in input order) with the unique ``ids``; a row whose video an
    earlier row already is gets an ``ingest`` "duplicate entry" error naming that row's id."""
    import numpy as np
    import pyarrow as pa

    offset = 0
    for batch in batches:
        n = batch.num_rows
        table = pa.Table.from_batches([batch]).set_column(0, "video_id", ids.slice(offset, n))
        earlier = first[offset : offset + n]
        repeats = np.flatnonzero(earlier != np.arange(offset, offset + n))
        if len(repeats):
            errors = table["errors"].to_pylist()
            for row, listed in zip(repeats.tolist(), ids.take(pa.array(earlier[repeats])).to_pylist()):
                errors[row] = errors[row] + [{"stage": "ingest", "error": f"duplicate entry: this video is already listed as '{listed}'"}]
            index = table.schema.get_field_index("errors")
            table = table.set_column(index, table.schema.field(index), pa.array(errors, table.schema.field(index).type))
        offset += n
        yield table.drop_columns([_KEY, _NAME])


def records(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Video records with unique ids. Ids that collide get a suffix from a hash of their path,
    so the same inputs always give the same ids, whatever their order. A video listed twice
    (the same file under any path, link or id, or the same platform id) is kept once; later
    entries get an ``ingest`` "duplicate entry" error. (``ingest`` makes the same rows a batch
    at a time; this list is for a few rows.)"""
    import pyarrow as pa

    batches = list(_row_batches(entries))
    if not batches:
        return []
    staged = pa.Table.from_batches(batches)
    ids, first = _unique_ids(staged["video_id"], staged[_KEY], staged[_NAME])
    return [row for table in _unique_tables(batches, ids, first) for row in table.to_pylist()]


def ingest(source: str | os.PathLike) -> Dataset:
    """A dataset of video records from ``source`` (folder, text file of paths, or manifest):
    ``records`` of its entries, built a record batch at a time into an Arrow file in a temp
    folder (removed at exit) that the dataset maps; the process never holds a Python object per
    row, so its memory does not grow with the rows (``benchmarks/bench_scale.py``)."""
    import pyarrow as pa

    folder = temp_folder("ingest")
    staged_path = folder / "staged.arrow"
    with pa.OSFile(str(staged_path), "wb") as sink:
        writer = None
        for batch in _row_batches(entries(source)):
            writer = writer or pa.ipc.new_stream(sink, batch.schema)
            writer.write_batch(batch)
        if writer is None:
            raise SettingError(f"--videos {source}: found no videos (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
        writer.close()
    with pa.memory_map(str(staged_path)) as mapped:
        staged = pa.ipc.open_stream(mapped).read_all()  # the file's pages, not copies
        ids, first = _unique_ids(staged["video_id"], staged[_KEY], staged[_NAME])
        out = ArrowFileWriter(folder / "videos.arrow", F.VIDEO, batch_rows=BATCH_ROWS)
        for table in _unique_tables(staged.to_batches(), ids, first):
            out.write(table)
        del staged, ids, first
    staged_path.unlink()
    pa.default_memory_pool().release_unused()  # the id pass's hash tables: Arrow's allocator would keep their pages
    logger.info("ingest: %d videos from %s", out.rows, source)
    return out.dataset()


@dataclass
class Probe(Stage):
    """Container facts of each video with PyAV: duration, fps, width, height, has_audio.

    ``verify`` reads every packet (without decoding) so truncated files are caught here.
    """

    name = "probe"
    version = "1"
    reads = ("video",)
    rows_per_batch = 16

    verify: bool = True

    def validate(self) -> None:
        if not isinstance(self.verify, bool):
            raise SettingError(f"probe.verify must be true or false, got {self.verify!r}")

    def features(self):
        return F.PROBE

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        video = row["video"]
        if needs_download(video):
            raise media.MediaNotFoundError(f"not downloaded yet: {video}")
        info = media.probe(video, verify=self.verify)
        if not info.has_video:
            raise media.NoVideoError(f"no video track (audio-only file): {video}")
        return {
            "duration": info.duration,
            "fps": info.fps,
            "width": info.width,
            "height": info.height,
            "has_audio": info.has_audio,
        }
