"""The LiveCC format (``../shared/formats/LIVECC.md``): conversations, the JSONL with its offsets
line, the preview JSON and the intermediate clip records; writers and readers in one module.

One clip row becomes a two-turn conversation (what LiveCC's ``to_conversation.py`` writes)::

    [
      {"role": "user", "content": [
        {"type": "video", "video": PATH, "video_start": 12.3, "video_end": 71.0},
        {"type": "text", "text": QUERY, "previous": PREVIOUS, "title": TITLE, "category": CATEGORY}]},
      {"role": "assistant", "content": [
        {"type": "text_stream", "text_stream": [[12.3, 12.6, "The"], [12.6, 12.9, "home"], ...]}]}
    ]

Times are seconds in the source video. The JSONL export writes one conversation per line and
then a last line listing each line's *byte* offset (LiveCC's training loader seeks to them).
Edge cases the upstream loader does not survive are handled here: 0 clips writes no file (and
says so); ``video_root`` writes ``video`` relative to a root so a dataset can move; a file whose
offsets line counts characters (upstream ``append_jsonl_seeks.py`` on non-ASCII text) is read
line by line, with a warning that the offsets were ignored.

The intermediate clip records (``export_clips_jsonl``) are LiveCC's own
``{"video", "content": [[s, e, w], ...], "previous" | "preasr", "title", "category", "query"}``
lines, so its filter scripts (LM loss, prompt making) run on our clips.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from datasets import Features, List, Value

from lomo_datasets.formats.common import FormatError, write_json
from lomo_datasets.core.stage import SettingError

logger = logging.getLogger(__name__)

#: One row per LiveCC clip, flattened from the two-turn conversation.
LIVECC_FEATURES = Features(
    {
        "video": Value("string"),
        "video_start": Value("float64"),
        "video_end": Value("float64"),
        "query": Value("string"),
        "previous": Value("string"),
        "title": Value("string"),
        "category": Value("string"),
        "text_stream": List({"start": Value("float64"), "end": Value("float64"), "word": Value("string")}),
    }
)
_OFFSETS = ("auto", "require", "none")


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def text_stream(content: Iterable[dict[str, Any]]) -> list[list]:
    """Timed words ``{"start", "end", "word"}`` -> ``[[start, end, word], ...]``."""
    return [[float(w["start"]), float(w["end"]), w["word"]] for w in content]


def video_path(video: Any, video_root: str | os.PathLike | None = None) -> Any:
    """``video`` as written: unchanged, or relative to ``video_root`` (POSIX separators) so the
    data and the videos can move together. A local path outside the root is an error."""
    if video_root is None or not video or "://" in str(video):
        return video
    root = os.path.abspath(os.fspath(video_root))
    path = os.path.abspath(os.fspath(video))
    if os.path.commonpath([root, path]) != root:
        raise FormatError(f"video {video} is not under video_root {root}; name a root folder that holds every video")
    return Path(os.path.relpath(path, root)).as_posix()


def _context(row: dict[str, Any]) -> tuple[str, Any]:
    """The transcript before the clip: (``"previous"``, ...) for pre-training clips,
    (``"preasr"``, ...) for SFT clips."""
    if row.get("previous") is not None or "preasr" not in row:
        return "previous", row.get("previous")
    return "preasr", row.get("preasr")


def to_conversation(row: dict[str, Any], query_column: str = "query",
                    video_root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The two-turn conversation of one clip row.

    ``previous`` is the row's ``previous`` (pre-training clips) or ``preasr`` (SFT clips);
    the user text is the row's query (empty when there is none).
    """
    content = row.get("content") or []
    start = row.get("video_start")
    end = row.get("video_end")
    if start is None and content:
        start = content[0]["start"]
    if end is None and content:
        end = content[-1]["end"]
    return [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": video_path(row.get("video"), video_root), "video_start": start,
                 "video_end": end},
                {
                    "type": "text",
                    "text": row.get(query_column) or "",
                    "previous": _context(row)[1] or "",
                    "title": row.get("title") or "",
                    "category": row.get("category") or "",
                },
            ],
        },
        {"role": "assistant", "content": [{"type": "text_stream", "text_stream": text_stream(content)}]},
    ]


def conversations(rows: Iterable[dict[str, Any]], query_column: str = "query",
                  video_root: str | os.PathLike | None = None) -> Iterator[list[dict[str, Any]]]:
    """Conversations of clip rows (a ``datasets.Dataset`` iterates as rows)."""
    for row in rows:
        yield to_conversation(row, query_column=query_column, video_root=video_root)


def write_jsonl(records: Iterable[Any], path: str | os.PathLike, offsets_line: bool = True) -> list[int]:
    """Write one JSON value per line (non-ASCII as UTF-8), then, with ``offsets_line``, the line
    listing each line's byte offset. Written to a temporary name and renamed, so a crash never
    leaves a file whose index line is missing. Returns the offsets."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    offsets: list[int] = []
    with open(tmp, "wb") as fh:
        for record in records:
            offsets.append(fh.tell())
            fh.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        if offsets_line:
            fh.write(json.dumps(offsets).encode("utf-8") + b"\n")
    os.replace(tmp, path)
    return offsets


def _clips(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Rows that are clips: no errors, some words."""
    return (row for row in rows if not row.get("errors") and row.get("content"))


def _nothing_to_write(path: Path, what: str) -> int:
    logger.warning("no clips to export: %s (%s) was not written, since LiveCC's loader cannot open a file "
                   "without clips%s", path, what, "; the file there is from an earlier run" if path.exists() else "")
    return 0


def export_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike, query_column: str = "query",
                 video_root: str | os.PathLike | None = None) -> int:
    """Write the conversations of clip rows to a LiveCC JSONL file; returns the line count.

    Rows that carry errors are skipped (they have no clip). With 0 clips no file is written
    (and a warning says so). ``video_root`` writes each ``video`` relative to that folder."""
    path = Path(path)
    records = list(conversations(_clips(rows), query_column=query_column, video_root=video_root))
    if not records:
        return _nothing_to_write(path, "conversations")
    offsets = write_jsonl(records, path)
    logger.info("wrote %d conversations to %s", len(offsets), path)
    return len(offsets)


def clip_record(row: dict[str, Any], query_column: str = "query",
                video_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """One intermediate clip record in LiveCC's shape (``content`` as ``[start, end, word]``)."""
    key, context = _context(row)
    record = {"video": video_path(row.get("video"), video_root), "content": text_stream(row.get("content") or []),
              key: context or "", "title": row.get("title") or "", "category": row.get("category") or ""}
    if row.get(query_column) is not None:
        record["query"] = row[query_column]
    return record


def export_clips_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike, query_column: str = "query",
                       video_root: str | os.PathLike | None = None) -> int:
    """Write the clips as LiveCC's intermediate records, one per line (no offsets line, as
    upstream's clipping and filter scripts write them); returns the count (0: no file)."""
    path = Path(path)
    records = [clip_record(row, query_column, video_root) for row in _clips(rows)]
    if not records:
        return _nothing_to_write(path, "clip records")
    write_jsonl(records, path, offsets_line=False)
    logger.info("wrote %d clip records to %s", len(records), path)
    return len(records)


def export_livecc(data: Iterable[dict[str, Any]], out: str | os.PathLike,
                  video_root: str | os.PathLike | None = None) -> dict[str, Path]:
    """The LiveCC recipes' export: ``OUT/livecc.jsonl`` (conversations and the offsets line) and
    ``OUT/livecc_clips.jsonl`` (the intermediate clip records), for the rows without errors."""
    rows = list(_clips(data))
    out = Path(out)
    written = {}
    for name, export in (("livecc", export_jsonl), ("livecc_clips", export_clips_jsonl)):
        if export(rows, out / f"{name}.jsonl", video_root=video_root):
            written[name] = out / f"{name}.jsonl"
    return written


@dataclass
class LiveCCExport:
    """The LiveCC recipes' export and its settings (``--set export.video_root=FOLDER``):
    ``video_root`` writes each clip's ``video`` relative to that folder (it must exist), so the
    files and the videos can move together; by default paths stay as the rows have them."""

    video_root: str | None = None

    def __post_init__(self) -> None:
        if self.video_root is not None and not (isinstance(self.video_root, str) and os.path.isdir(self.video_root)):
            raise SettingError(f"export.video_root={self.video_root!r}: name an existing folder that holds the videos")

    def __call__(self, data: Iterable[dict[str, Any]], out: str | os.PathLike) -> dict[str, Path]:
        return export_livecc(data, out, video_root=self.video_root)


def write_livecc_preview(conversations: Iterable[Any], path: str | os.PathLike) -> Path:
    """The preview JSON: a JSON list of the same conversations the JSONL holds."""
    return write_json(list(conversations), path)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def is_offsets_line(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def read_livecc_file(path: str | os.PathLike, offsets: str = "auto") -> list[Any]:
    """The conversations of a LiveCC JSONL file (with or without the trailing offsets line)
    or of a preview JSON (a JSON list of conversations).

    ``offsets``: "auto" (a last line that is a list of ints is the index and must match the
    lines' byte offsets), "require" (fail without it) or "none" (skip such a line unchecked).
    An index of character offsets (what upstream writes for non-ASCII files) is ignored with a
    warning; any other mismatch is an error.
    """
    if offsets not in _OFFSETS:
        raise ValueError(f"offsets={offsets!r}: use one of {_OFFSETS}")
    path = str(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    stripped = raw.lstrip()
    if stripped.startswith(b"[") and stripped[1:].lstrip().startswith(b"["):
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except json.JSONDecodeError:
            data = None
        if isinstance(data, list) and data and all(isinstance(c, list) for c in data):
            return data  # preview JSON: a list of conversations
    records = []  # (byte offset, character offset, value)
    position = chars = 0
    for n, line in enumerate(raw.split(b"\n"), 1):
        try:
            text = line.decode("utf-8") if line.strip() else ""
        except UnicodeDecodeError as exc:
            raise FormatError(f"{path}: line {n} is not UTF-8 ({exc.reason})") from None
        if text:
            try:
                records.append((position, chars, json.loads(text)))
            except json.JSONDecodeError as exc:
                raise FormatError(f"{path}: line {n} is not JSON ({exc.msg})") from None
        position += len(line) + 1
        chars += len(text or line.decode("utf-8")) + 1
    has_index = bool(records) and is_offsets_line(records[-1][2])
    if offsets == "require" and not has_index:
        raise FormatError(f"{path}: the last line must list each line's byte offset (offsets='require')")
    if has_index:
        index = records.pop()[2]
        if offsets != "none" and index != [pos for pos, _, _ in records]:
            if index == [c for _, c, _ in records]:
                logger.warning("%s: the offsets line counts characters, not bytes (LiveCC's loader cannot seek "
                               "with it); read the file line by line and ignored the offsets", path)
            else:
                raise FormatError(
                    f"{path}: the offsets line lists {len(index)} offsets that do not match the file's "
                    f"{len(records)} lines; rewrite the file with its exporter (or read it with offsets='none')"
                )
    return [conversation for _, _, conversation in records]


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """Every record of a LiveCC JSONL file that has its offsets line (the line excluded)."""
    return read_livecc_file(path, offsets="require")


def read_offsets(path: str | os.PathLike) -> list[int]:
    """The byte offsets from a LiveCC JSONL file's last line (read from the end of the file)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block, data, position = 1 << 16, b"", size
        while position > 0:  # read backwards until the newline that precedes the last line
            step = min(block, position)
            position -= step
            fh.seek(position)
            data = fh.read(step) + data
            if data.rstrip(b"\n").count(b"\n") >= 1:
                break
            block *= 2
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    offsets = json.loads(last)
    if not is_offsets_line(offsets):
        raise FormatError(f"{path}: the last line is not a list of byte offsets")
    return offsets


def read_line(path: str | os.PathLike, index: int, offsets: list[int] | None = None) -> Any:
    """Record ``index`` of a LiveCC JSONL file, by seeking to its offset."""
    offsets = offsets if offsets is not None else read_offsets(path)
    with open(path, "rb") as fh:
        fh.seek(offsets[index])
        return json.loads(fh.readline())


def _float(value: Any, where: str, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise FormatError(f"{where}: {name} must be seconds, got {value!r}")


def parse_conversation(conversation: Any, where: str = "conversation") -> dict[str, Any]:
    """A LiveCC two-turn conversation as a flat ``LIVECC_FEATURES`` row."""
    if not isinstance(conversation, list) or len(conversation) < 2:
        raise FormatError(f"{where}: expected a list of two turns (user, assistant)")
    user = next((t for t in conversation if isinstance(t, dict) and t.get("role") == "user"), None)
    assistant = next((t for t in conversation if isinstance(t, dict) and t.get("role") == "assistant"), None)
    if user is None or assistant is None:
        raise FormatError(f"{where}: needs a 'user' turn and an 'assistant' turn")
    video = next((c for c in user.get("content", []) if c.get("type") == "video"), None)
    text = next((c for c in user.get("content", []) if c.get("type") == "text"), {}) or {}
    stream = next((c for c in assistant.get("content", []) if c.get("type") == "text_stream"), None)
    if video is None:
        raise FormatError(f"{where}: the user turn has no {{'type': 'video'}} item")
    if stream is None:
        raise FormatError(f"{where}: the assistant turn has no {{'type': 'text_stream'}} item")
    words = []
    for k, triple in enumerate(stream.get("text_stream") or []):
        if not (isinstance(triple, (list, tuple)) and len(triple) == 3):
            raise FormatError(f"{where}: text_stream item {k} must be [start, end, word], got {triple!r}")
        words.append({"start": _float(triple[0], where, "start"), "end": _float(triple[1], where, "end"),
                      "word": str(triple[2])})
    return {
        "video": str(video.get("video") or ""),
        "video_start": _float(video.get("video_start"), where, "video_start"),
        "video_end": _float(video.get("video_end"), where, "video_end"),
        "query": str(text.get("text") or ""),
        "previous": str(text.get("previous") or ""),
        "title": str(text.get("title") or ""),
        "category": str(text.get("category") or ""),
        "text_stream": words,
    }
