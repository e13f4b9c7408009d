"""What the format modules share: the error type, reading JSON or JSON Lines, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class FormatError(ValueError):
    """A file does not follow the format it was read as; the message names the file and item."""


def read_json_records(path: str | os.PathLike) -> Any:
    """A JSON document, or the objects of a JSON Lines file (as a list)."""
    with open(path, "rb") as fh:
        text = fh.read().decode("utf-8-sig")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise FormatError(f"{path}: line {n} is not JSON ({exc.msg})") from None
    return records


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to a temporary name beside ``path`` and rename it into place, so a
    crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)
    return path


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """``data`` as indented UTF-8 JSON (non-ASCII kept as is), written atomically."""
    return write_text_atomic(json.dumps(data, ensure_ascii=False, indent=1) + "\n", path)
