"""The published file formats (DESIGN.md, "Published formats"): writers and normalizers.

LoMo, one row per video::

    {"video_id": "BV1xx.mp4", "duration": 93.5, "resolution": "[720, 1280]",
     "questions": [{"question_id": "...", "task": "SVS", "question": "...",
                    "options": ["A: ...", "B: ...", "C: ...", "D: ..."], "answer": "B",
                    "window": [10.0, 25.5], "descriptions": ""}, ...]}

written as one aggregated JSON list (``write_lomo_json``) or as per-task JSON files, one list of
question items per task, each item carrying its video's fields (``write_lomo_task_files``).
Exporters call these writers; the builders in ``lomo_datasets.builders`` read them back (and
the shapes the original scripts wrote) through the same normalizers, so a row means one thing.

LiveCC conversations are written by ``lomo_datasets.processors.conversation`` (JSONL with the
trailing byte-offset line); ``write_livecc_preview`` writes the preview JSON (a JSON list of the
same conversations) and ``parse_conversation`` turns one conversation into a flat typed row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from datasets import Features, List, Value

from lomo_datasets.features import QUESTION

TASKS = ("GVQA", "GVS", "SVS", "SVQA", "VVQA", "VTG")
WINDOW_TASKS = ("SVS", "SVQA", "VVQA", "VTG")
LETTERS = "ABCD"

QUESTION_FEATURES = QUESTION  # one QA item, as the pipeline's `questions` column holds it
#: One row per video (the aggregated LoMo JSON).
LOMO_FEATURES = Features(
    {
        "video_id": Value("string"),
        "duration": Value("float64"),
        "resolution": Value("string"),
        "questions": List(QUESTION_FEATURES),
    }
)
#: One row per question (``layout="question"``): the video's fields and the question's.
LOMO_QUESTION_FEATURES = Features(
    {"video_id": Value("string"), "duration": Value("float64"), "resolution": Value("string"), **QUESTION_FEATURES}
)
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


class FormatError(ValueError):
    """A file does not follow the format it was read as; the message names the file and item."""


# --------------------------------------------------------------------------------------------
# LoMo
# --------------------------------------------------------------------------------------------


def format_resolution(value: Any) -> str | None:
    """``"[H, W]"`` from ``[H, W]``, ``(H, W)``, ``{"height", "width"}`` or that string."""
    if value is None or value == "":
        return None
    if isinstance(value, dict) and "height" in value and "width" in value:
        value = [value["height"], value["width"]]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise FormatError(f"resolution {value!r}: write it as \"[H, W]\"") from None
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"[{int(value[0])}, {int(value[1])}]"
    raise FormatError(f"resolution {value!r}: write it as \"[H, W]\"")


def _options(value: Any, where: str) -> list[str]:
    if isinstance(value, dict):
        items = [(str(k).strip().rstrip(":.").upper(), v) for k, v in value.items()]
        if [k for k, _ in items] != list(LETTERS[: len(items)]):
            raise FormatError(f"{where}: option keys must be A, B, C, D in order, got {list(value)}")
        return [f"{k}: {str(v).strip()}" for k, v in items]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        out = []
        for i, text in enumerate(value):
            letter = LETTERS[i] if i < len(LETTERS) else None
            if letter is None:
                raise FormatError(f"{where}: at most {len(LETTERS)} options, got {len(value)}")
            text = text.strip()
            # "A: ...", "A. ...", "(A) ..." or plain text: keep the letter prefix in one form.
            for prefix in (f"{letter}:", f"{letter}.", f"({letter})", f"{letter})"):
                if text.startswith(prefix):
                    text = text[len(prefix):].strip()
                    break
            out.append(f"{letter}: {text}")
        return out
    raise FormatError(f"{where}: options must be a list of \"A: ...\" strings or a dict A..D, got {value!r}")


def _answer(value: Any, n_options: int, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n_options:
        return LETTERS[value]
    if isinstance(value, str) and value.strip():
        letter = value.strip().lstrip("(")[0].upper()
        if letter in LETTERS[:n_options]:
            return letter
    raise FormatError(f"{where}: answer must be one of {list(LETTERS[:n_options])}, got {value!r}")


def _window(value: Any, where: str) -> list[float]:
    if value is None or value == [] or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise FormatError(f"{where}: window must be [start, end] in seconds, got {value!r}") from None
    if (
        isinstance(value, (list, tuple)) and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and value[0] <= value[1]
    ):
        return [float(value[0]), float(value[1])]
    raise FormatError(f"{where}: window must be [start, end] with start <= end, got {value!r}")


def normalize_question(item: dict[str, Any], video_id: str, index: int, task: str | None = None,
                       where: str = "") -> dict[str, Any]:
    """One question item in the published shape (``QUESTION_FEATURES``)."""
    where = where or f"{video_id} question {index}"
    if not isinstance(item, dict) or "question" not in item:
        raise FormatError(f"{where}: a question item is an object with at least 'question', got {item!r:.80}")
    task = str(item.get("task") or task or "").upper()
    if task not in TASKS:
        raise FormatError(f"{where}: task must be one of {TASKS} (or name the file after the task), got {task!r}")
    options = _options(item.get("options") or [], where) if item.get("options") is not None else []
    descriptions = item.get("descriptions", item.get("description"))
    if isinstance(descriptions, list):
        descriptions = "\n".join(str(d) for d in descriptions)
    qid = item.get("question_id", item.get("id"))
    return {
        "question_id": str(qid) if qid not in (None, "") else f"{video_id}-{task}-{index}",
        "task": task,
        "question": str(item["question"]),
        "options": options,
        "answer": _answer(item.get("answer"), len(options), where) if options else str(item.get("answer") or ""),
        "window": _window(item.get("window"), where),
        "descriptions": "" if descriptions is None else str(descriptions),
    }


def _video_fields(item: dict[str, Any], where: str) -> dict[str, Any]:
    video_id = item.get("video_id", item.get("video_name", item.get("video")))
    if not video_id:
        raise FormatError(f"{where}: every item needs a video_id (the video's file name)")
    duration = item.get("duration")
    if duration is not None and (not isinstance(duration, (int, float)) or isinstance(duration, bool)):
        try:
            duration = float(duration)
        except (TypeError, ValueError):
            raise FormatError(f"{where}: duration must be seconds, got {duration!r}") from None
    resolution = item.get("resolution")
    if resolution in (None, "") and item.get("height") and item.get("width"):
        resolution = [item["height"], item["width"]]  # our records carry height and width
    try:
        resolution = format_resolution(resolution)
    except FormatError as exc:
        raise FormatError(f"{where}: {exc}") from None
    return {
        "video_id": str(video_id),
        "duration": None if duration is None else float(duration),
        "resolution": resolution,
    }


def task_from_filename(path: str | os.PathLike) -> str | None:
    """``GVQA`` for ``GVQA.json``, ``lomo_svs.json``, ``vtg-questions.jsonl``; else None."""
    stem = Path(str(path)).name.split(".")[0].upper()
    parts = [p for p in stem.replace("-", "_").split("_") if p]
    found = [t for t in TASKS if t in parts]
    return found[0] if len(found) == 1 else None


def read_json_records(path: str | os.PathLike) -> Any:
    """A JSON document, or the objects of a JSON Lines file (as a list)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    text = raw.decode("utf-8-sig")
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


def lomo_videos_from_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The videos (``LOMO_FEATURES`` rows) in one LoMo file of any supported shape.

    Shapes: the aggregated list of videos with ``questions``; a per-task list of question items
    that carry their video's fields; a dict ``{video_id: [questions]}`` or
    ``{video_id: {video fields + questions}}``; any of these as JSON Lines. A per-task file
    whose items have no ``task`` takes it from the file name (``SVS.json``).
    """
    data = read_json_records(path)
    file_task = task_from_filename(path)
    if isinstance(data, dict):
        items = []
        for key, value in data.items():
            if isinstance(value, list):
                items.append({"video_id": key, "questions": value})
            elif isinstance(value, dict):
                items.append({"video_id": key, **value})
            else:
                raise FormatError(f"{path}: key {key!r} must map to a list of questions or a video object")
        data = items
    if not isinstance(data, list):
        raise FormatError(f"{path}: expected a JSON list of videos or questions, got {type(data).__name__}")
    videos: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(data):
        where = f"{path} item {i}"
        if not isinstance(item, dict):
            raise FormatError(f"{where}: expected an object, got {item!r:.80}")
        fields = _video_fields(item, where)
        video = videos.setdefault(fields["video_id"], {**fields, "questions": []})
        for key in ("duration", "resolution"):
            if video[key] is None:
                video[key] = fields[key]
        if "questions" in item:
            for j, q in enumerate(item["questions"] or []):
                video["questions"].append(
                    normalize_question(q, video["video_id"], len(video["questions"]), file_task, f"{where} question {j}")
                )
        else:
            video["questions"].append(normalize_question(item, video["video_id"], len(video["questions"]), file_task, where))
    return list(videos.values())


def merge_videos(videos: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Videos with the same ``video_id`` (from several per-task files) merged, first seen first."""
    merged: dict[str, dict[str, Any]] = {}
    for video in videos:
        into = merged.get(video["video_id"])
        if into is None:
            merged[video["video_id"]] = {**video, "questions": list(video["questions"])}
            continue
        for key in ("duration", "resolution"):
            if into[key] is None:
                into[key] = video[key]
        seen = {q["question_id"] for q in into["questions"]}
        into["questions"].extend(q for q in video["questions"] if q["question_id"] not in seen)
    return list(merged.values())


def lomo_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records (ours, with extra columns) in the published LoMo shape, normalized.

    Rows with errors are left out (a failed video has no questions to publish); ``resolution``
    comes from ``height`` and ``width`` when the record has no ``resolution``."""
    out = []
    for i, row in enumerate(rows):
        if row.get("errors"):
            continue
        fields = _video_fields(row, f"row {i}")
        out.append({**fields, "questions": [
            normalize_question(q, fields["video_id"], j) for j, q in enumerate(row.get("questions") or [])
        ]})
    return out


def _write_json(data: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _published_question(q: dict[str, Any]) -> dict[str, Any]:
    """Window only for window tasks, descriptions only for VTG (DESIGN.md)."""
    item = {k: q[k] for k in ("question_id", "task", "question", "options", "answer")}
    if q["task"] in WINDOW_TASKS or q.get("window"):
        item["window"] = q["window"]
    if q["task"] == "VTG" or q.get("descriptions"):
        item["descriptions"] = q["descriptions"]
    return item


def write_lomo_json(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> Path:
    """The aggregated LoMo JSON: a list of videos, each with its questions."""
    videos = [{**{k: v[k] for k in ("video_id", "duration", "resolution")},
               "questions": [_published_question(q) for q in v["questions"]]} for v in lomo_rows(rows)]
    return _write_json(videos, path)


def write_lomo_task_files(rows: Iterable[dict[str, Any]], folder: str | os.PathLike) -> dict[str, Path]:
    """Per-task JSON files ``<TASK>.json``: lists of question items with their video's fields."""
    per_task: dict[str, list[dict[str, Any]]] = {}
    for video in lomo_rows(rows):
        head = {k: video[k] for k in ("video_id", "duration", "resolution")}
        for q in video["questions"]:
            per_task.setdefault(q["task"], []).append({**head, **_published_question(q)})
    return {task: _write_json(items, Path(folder) / f"{task}.json") for task, items in sorted(per_task.items())}


# --------------------------------------------------------------------------------------------
# LiveCC
# --------------------------------------------------------------------------------------------


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


def is_offsets_line(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def read_livecc_file(path: str | os.PathLike, offsets: str = "auto") -> list[Any]:
    """The conversations of a LiveCC JSONL file (with or without the trailing offsets line)
    or of a preview JSON (a JSON list of conversations).

    ``offsets``: "auto" (use the last line as the index when it is a list of ints), "require"
    (fail without it) or "none" (every line is a conversation). A present index must match
    the byte offsets of the lines.
    """
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
    lines: list[tuple[int, bytes]] = []
    position = 0
    for line in raw.split(b"\n"):
        if line.strip():
            lines.append((position, line))
        position += len(line) + 1
    records = []
    for n, (pos, line) in enumerate(lines, 1):
        try:
            records.append((pos, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise FormatError(f"{path}: line {n} is not JSON ({exc.msg})") from None
    has_index = bool(records) and is_offsets_line(records[-1][1]) and offsets != "none"
    if offsets == "require" and not has_index:
        raise FormatError(f"{path}: the last line must list each line's byte offset (offsets='require')")
    if has_index:
        index = records.pop()[1]
        actual = [pos for pos, _ in records]
        if index != actual:
            raise FormatError(
                f"{path}: the offsets line lists {len(index)} offsets that do not match the file's "
                f"{len(actual)} lines; rewrite the file with its exporter"
            )
    return [conversation for _, conversation in records]


def write_livecc_preview(conversations: Iterable[Any], path: str | os.PathLike) -> Path:
    """The preview JSON: a JSON list of the same conversations the JSONL holds."""
    return _write_json(list(conversations), path)
