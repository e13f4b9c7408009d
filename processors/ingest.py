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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from datasets import Dataset

from lomo_datasets.core import features as F
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


def _read_manifest(path: Path) -> list[dict[str, Any]]:
    return _parse_manifest(_read_text(path), path, path.parent, path.suffix.lower())


def _parse_manifest(text: str, path: Path | str, base: Path | str, suffix: str) -> list[dict[str, Any]]:
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        rows = []
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
                rows.append(row)
    entries = []
    for number, row in enumerate(rows, 1):
        video = row.get("video") or row.get("path") or row.get("url")
        if not video:
            raise SettingError(f"{path}: entry {number} has no 'video' (or 'path'/'url') field")
        entries.append(
            _entry(
                str(video),
                base,
                video_id=_clean(row.get("video_id")),
                title=_clean(row.get("title")),
                category=_clean(row.get("category")),
                source=_clean(row.get("source")),
                language=(_clean(row.get("language")) or "").lower() or None,
            )
        )
    return entries


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
                return _parse_manifest(text, shown, remote.parent(source), suffix)
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
        return [_entry(str(p), None) for p in files]
    if path.suffix.lower() in MANIFEST_EXTENSIONS:
        return _read_manifest(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return [_entry(str(path), None)]
    lines = _read_text(path).splitlines()
    return [_entry(line, path.parent) for line in lines if line.strip() and not line.lstrip().startswith("#")]


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


def records(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Video records with unique ids. Ids that collide get a suffix from a hash of their path,
    so the same inputs always give the same ids, whatever their order. A video listed twice
    (the same file under any path, link or id, or the same platform id) is kept once; later
    entries get an ``ingest`` "duplicate entry" error."""
    entries = list(entries)
    rows = []
    for entry in entries:
        video = entry["video"]
        errors = []
        try:
            video.encode("utf-8")
        except UnicodeEncodeError:
            errors.append({"stage": "ingest", "error": "file name is not valid UTF-8; rename the file"})
            video = video.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        stem = Path(video.rstrip("/").split("?")[0]).stem if not entry.get("video_id") else entry["video_id"]
        rows.append(
            {
                "video_id": make_video_id(stem),
                "video": video,
                "source": entry.get("source") or (remote.scheme(video) if remote.is_remote(video) else "url" if is_url(video) else "local"),
                "title": entry.get("title") or (Path(video).stem if not needs_download(video) else None),
                "category": entry.get("category"),
                "language": entry.get("language"),
                "errors": errors,
            }
        )
    keys = [_identity(entry, row["video"]) for entry, row in zip(entries, rows)]
    names = [entry.get("key") or row["video"] for entry, row in zip(entries, rows)]  # stable across machines
    distinct: dict[str, set] = {}
    for key, row in zip(keys, rows):
        distinct.setdefault(row["video_id"], set()).add(key)
    for key, name, row in zip(keys, names, rows):
        if len(distinct[row["video_id"]]) > 1:  # different videos with the same name
            digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
            row["video_id"] = f"{row['video_id'][: _MAX_ID - 9]}-{digest}"
    first_of: dict[str, str] = {}
    seen: Counter = Counter()
    for key, row in zip(keys, rows):  # the same video listed twice, under any ids: the first is kept
        seen[row["video_id"]] += 1
        repeat = key in first_of
        if seen[row["video_id"]] > 1:  # keep ids unique
            row["video_id"] = f"{row['video_id'][: _MAX_ID - 9]}-dup{seen[row['video_id']]}"
        if not repeat:
            first_of[key] = row["video_id"]
            continue
        first = first_of[key]
        row["errors"] = row["errors"] + [
            {"stage": "ingest", "error": f"duplicate entry: this video is already listed as '{first}'"}
        ]
    return rows


def ingest(source: str | os.PathLike) -> Dataset:
    """A dataset of video records from ``source`` (folder, text file of paths, or manifest)."""
    rows = records(discover(source))
    if not rows:
        raise SettingError(f"--videos {source}: found no videos (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    logger.info("ingest: %d videos from %s", len(rows), source)
    return Dataset.from_list(rows, features=F.VIDEO)


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
