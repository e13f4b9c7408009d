"""LiveCC conversation records and their JSONL export (with the byte-offset index line).

One clip row becomes a two-turn conversation (DESIGN.md, "Published formats")::

    [
      {"role": "user", "content": [
        {"type": "video", "video": PATH, "video_start": 12.3, "video_end": 71.0},
        {"type": "text", "text": QUERY, "previous": PREVIOUS, "title": TITLE, "category": CATEGORY}]},
      {"role": "assistant", "content": [
        {"type": "text_stream", "text_stream": [[12.3, 12.6, "The"], [12.6, 12.9, "home"], ...]}]}
    ]

Times in ``text_stream`` are seconds in the source video (the same clock as
``video_start``/``video_end``). The JSONL export writes one conversation per line and then a
last line that is the JSON list of every conversation line's byte offset, which the loaders of
that ecosystem use to seek to line ``i`` directly (``read_line``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

logger = logging.getLogger(__name__)


def text_stream(content: Iterable[dict[str, Any]]) -> list[list]:
    """Timed words ``{"start", "end", "word"}`` -> ``[[start, end, word], ...]``."""
    return [[float(w["start"]), float(w["end"]), w["word"]] for w in content]


def to_conversation(row: dict[str, Any], query_column: str = "query") -> list[dict[str, Any]]:
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
    previous = row.get("previous")
    if previous is None:
        previous = row.get("preasr")
    return [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": row.get("video"), "video_start": start, "video_end": end},
                {
                    "type": "text",
                    "text": row.get(query_column) or "",
                    "previous": previous or "",
                    "title": row.get("title") or "",
                    "category": row.get("category") or "",
                },
            ],
        },
        {"role": "assistant", "content": [{"type": "text_stream", "text_stream": text_stream(content)}]},
    ]


def conversations(rows: Iterable[dict[str, Any]], query_column: str = "query") -> Iterator[list[dict[str, Any]]]:
    """Conversations of clip rows (a ``datasets.Dataset`` iterates as rows)."""
    for row in rows:
        yield to_conversation(row, query_column=query_column)


def write_jsonl(records: Iterable[Any], path: str | os.PathLike) -> list[int]:
    """Write one JSON value per line, then the line listing each line's byte offset.

    The file is written to a temporary name and renamed, so a crash never leaves a file whose
    index line is missing. Returns the offsets.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    offsets: list[int] = []
    with open(tmp, "wb") as fh:
        for record in records:
            offsets.append(fh.tell())
            fh.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        fh.write(json.dumps(offsets).encode("utf-8") + b"\n")
    os.replace(tmp, path)
    return offsets


def read_offsets(path: str | os.PathLike) -> list[int]:
    """The byte offsets from a LiveCC JSONL file's last line."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        # Read backwards until the newline that precedes the last line.
        block, data = 1 << 16, b""
        position = size
        while position > 0:
            step = min(block, position)
            position -= step
            fh.seek(position)
            data = fh.read(step) + data
            if data.rstrip(b"\n").count(b"\n") >= 1:
                break
            block *= 2
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    offsets = json.loads(last)
    if not isinstance(offsets, list) or not all(isinstance(o, int) for o in offsets):
        raise ValueError(f"{path}: the last line is not a list of byte offsets")
    return offsets


def read_line(path: str | os.PathLike, index: int, offsets: list[int] | None = None) -> Any:
    """Record ``index`` of a LiveCC JSONL file, by seeking to its offset."""
    offsets = offsets if offsets is not None else read_offsets(path)
    with open(path, "rb") as fh:
        fh.seek(offsets[index])
        return json.loads(fh.readline())


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """Every record of a LiveCC JSONL file (the offsets line excluded)."""
    with open(path, "rb") as fh:
        lines = [line for line in fh.read().split(b"\n") if line.strip()]
    if not lines:
        return []
    offsets = json.loads(lines[-1])
    records = [json.loads(line) for line in lines[:-1]]
    if len(offsets) != len(records):
        raise ValueError(f"{path}: {len(records)} records but {len(offsets)} offsets in the last line")
    return records


def export_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike, query_column: str = "query") -> int:
    """Write the conversations of clip rows to a LiveCC JSONL file; returns the line count.

    Rows that carry errors are skipped (they have no clip)."""
    kept = (row for row in rows if not row.get("errors") and row.get("content"))
    offsets = write_jsonl(conversations(kept, query_column=query_column), path)
    logger.info("wrote %d conversations to %s", len(offsets), path)
    return len(offsets)


__all__ = [
    "text_stream",
    "to_conversation",
    "conversations",
    "write_jsonl",
    "read_offsets",
    "read_line",
    "read_jsonl",
    "export_jsonl",
]
