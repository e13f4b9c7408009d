"""The LoMo format: LoMo-Pipe's files (``../shared/formats/LOMO-PIPE.md``) and the Hub rows.

The Hub dataset has one row per video (``LOMO_FEATURES``) with clean names::

    {"video_id": "BV1xx411c7mD", "duration": 93.5, "resolution": "[720, 1280]",
     "questions": [{"question_id": "BV1xx411c7mD_03", "task": "SVS", "question": "...",
                    "options": ["A: ...", "B: ...", "C: ...", "D: ..."], "answer": "B",
                    "window": [10.0, 25.5], "descriptions": ""}, ...]}

``question_id`` is unique within the video; a VTG item is a grounding window (``window`` and
``descriptions``; empty ``question``, ``options`` and ``answer``).

The export writes LoMo-Pipe's own files from those rows (``write_lomo_folder``):

- ``metadata.csv``: ``video_id,duration,resolution``;
- one file per task, a JSON list of videos ``{"video_id", "duration", "resolution", KEY: [...]}``:
  ``GVQA.json``, ``GVS.json``, ``SVS_format.json``, ``SVQA.json``, ``VVQA.json`` (KEY
  ``questions``: ``{"question_id", "question", "options", "answer"}`` plus ``window`` for the
  window tasks) and ``VTG.json`` (KEY ``relevant_windows``: ``{"window_id", "window",
  "descriptions"}``); the extra ``VTG_MC`` task (off by default) goes to ``VTG_MC.json``;
- ``lomo.json``: what LoMo-Pipe's aggregation makes of those files (``aggregate``): the videos
  present in every per-task file, each item with ``"task": <file stem>`` (``SVS_format``).

How names map: ``video_id`` gets the video file's extension (``BV1xx411c7mD.mp4``); an item's
id is ``<stem>_NN``, NN counting the video's items of that task from 01 (LoMo-Pipe gives every
task's item ``<stem>_01``), and the task ``SVS`` is LoMo-Pipe's ``SVS_format``.

The builder reads every shape through ``read_lomo_files``: the per-task files together (items of
different tasks never collapse), the aggregated and quality-controlled files, the metadata CSV,
``resolution`` as ``"[h, w]"`` or ``"h,w"``, ``video_id`` with or without extension, and the flat
per-task items earlier versions of this project wrote. Nothing is dropped silently: an item
that is in several files (the aggregated file and a per-task file) is kept once and logged, a
duplicate inside one file is kept and logged, and a file that cannot be read is a
``FormatError`` naming the file and item.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from datasets import Features, List, Value

from lomo_datasets.core.features import QUESTION
from lomo_datasets.formats.common import FormatError, read_json_records, write_json, write_text_atomic

logger = logging.getLogger(__name__)

#: The six LoMo tasks (the Hub's names), in LoMo-Pipe's order.
TASKS = ("GVQA", "GVS", "SVS", "SVQA", "VVQA", "VTG")
#: Extra tasks this project can make (off by default): VTG as a four-option multiple choice.
EXTRA_TASKS = ("VTG_MC",)
ALL_TASKS = TASKS + EXTRA_TASKS
WINDOW_TASKS = ("SVS", "SVQA", "VVQA", "VTG", "VTG_MC")
#: Hub task -> LoMo-Pipe's file stem, which is also the aggregated file's ``task``.
FILE_STEMS = {"GVQA": "GVQA", "GVS": "GVS", "SVS": "SVS_format", "SVQA": "SVQA", "VVQA": "VVQA", "VTG": "VTG",
              "VTG_MC": "VTG_MC"}
AGGREGATED_FILE = "lomo.json"
METADATA_FILE = "metadata.csv"
METADATA_COLUMNS = ("video_id", "duration", "resolution")
LETTERS = "ABCD"

QUESTION_FEATURES = QUESTION  # one QA item, as the pipeline's `questions` column holds it
#: One row per video (the Hub dataset, and what the builder gives).
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


# --------------------------------------------------------------------------------------------
# Names: tasks, video ids, resolution
# --------------------------------------------------------------------------------------------


def hub_task(name: Any) -> str | None:
    """The Hub task for a task name or LoMo-Pipe file stem (``SVS_format`` -> ``SVS``), else None."""
    key = str(name or "").strip().upper()
    for task, stem in FILE_STEMS.items():
        if key in (task, stem.upper()):
            return task
    return None


def task_from_filename(path: str | os.PathLike) -> str | None:
    """The task a file holds by its name: LoMo-Pipe's ``GVQA.json`` .. ``SVS_format.json``,
    ``VTG.json`` exactly; else a single task word in the name (``lomo_svs.json``); else None."""
    stem = Path(str(path)).name.split(".")[0]
    exact = hub_task(stem)
    if exact:
        return exact
    parts = [p for p in stem.upper().replace("-", "_").split("_") if p]
    found = [t for t in TASKS if t in parts]
    return found[0] if len(found) == 1 else None


def _video_extensions() -> set[str]:
    from lomo_datasets.processors.ingest import VIDEO_EXTENSIONS

    return VIDEO_EXTENSIONS


def video_stem(video_id: str) -> str:
    """``BV1xx.mp4`` -> ``BV1xx``; an id without a video extension is its own stem."""
    root, ext = os.path.splitext(video_id)
    return root if ext.lower() in _video_extensions() else video_id


def file_video_id(row: dict[str, Any]) -> str:
    """LoMo-Pipe's ``video_id``: the video's file name with its extension. Our ids have none, so
    the extension of the row's ``video`` path is added (an id that has one is kept)."""
    video_id = str(row["video_id"])
    if video_stem(video_id) != video_id:
        return video_id
    ext = os.path.splitext(str(row.get("video") or "").split("?")[0])[1]
    return video_id + ext if ext.lower() in _video_extensions() else video_id


def format_resolution(value: Any) -> str | None:
    """``"[H, W]"`` from ``[H, W]``, ``(H, W)``, ``{"height", "width"}``, ``"[H, W]"`` or ``"H,W"``
    (LoMo-Pipe's quality control strips the brackets and splits on the comma; so does this)."""
    if value is None or value == "":
        return None
    if isinstance(value, dict) and "height" in value and "width" in value:
        value = [value["height"], value["width"]]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        parts = [p.strip() for p in text.split(",")]
        try:
            value = [float(p) for p in parts]
        except ValueError:
            raise FormatError(f"resolution {value!r}: write it as \"[H, W]\" or \"H,W\"") from None
    if (
        isinstance(value, (list, tuple)) and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() for v in value)
    ):
        return f"[{int(value[0])}, {int(value[1])}]"
    raise FormatError(f"resolution {value!r}: write it as \"[H, W]\" or \"H,W\"")


# --------------------------------------------------------------------------------------------
# Reading one item / one video
# --------------------------------------------------------------------------------------------


def _options(value: Any, where: str) -> list[str]:
    if isinstance(value, dict):
        items = [(str(k).strip().rstrip(":.").upper(), v) for k, v in value.items()]
        if [k for k, _ in items] != list(LETTERS[: len(items)]):
            raise FormatError(f"{where}: option keys must be A, B, C, D in order, got {list(value)}")
        return [f"{k}: {str(v).strip()}" for k, v in items]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        if len(value) > len(LETTERS):
            raise FormatError(f"{where}: at most {len(LETTERS)} options, got {len(value)}")
        out = []
        for letter, text in zip(LETTERS, value):
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


def _descriptions(item: dict[str, Any]) -> str:
    value = item.get("descriptions", item.get("description"))
    if isinstance(value, list):
        value = "\n".join(str(d) for d in value)
    return "" if value is None else str(value)


def read_item(item: Any, task: str | None, where: str) -> dict[str, Any]:
    """One item in the Hub shape (``QUESTION_FEATURES``), from a question item (any task) or a
    VTG window entry (``window_id``, ``window``, ``descriptions``). ``task`` is the file's task,
    used when the item names none. ``question_id`` is None when the item has no id."""
    if not isinstance(item, dict):
        raise FormatError(f"{where}: expected an object, got {item!r:.80}")
    if item.get("task") not in (None, ""):
        task = hub_task(item["task"])
        if task is None:
            raise FormatError(f"{where}: task must be one of {ALL_TASKS} or {sorted(set(FILE_STEMS.values()))}, "
                              f"got {item['task']!r}")
    if task is None:
        raise FormatError(f"{where}: task must be one of {ALL_TASKS} (name the file after the task), got None")
    qid = item.get("question_id", item.get("window_id", item.get("id")))
    qid = None if qid in (None, "") else str(qid)
    if "question" not in item:
        if "window_id" not in item and not (task == "VTG" and "window" in item):
            raise FormatError(f"{where}: a question item is an object with at least 'question' "
                              f"(a VTG window entry has 'window_id' and 'window'), got {item!r:.80}")
        if task != "VTG":
            raise FormatError(f"{where}: a window entry (no question) is a VTG item, but this is {task}")
        window = _window(item.get("window"), where)
        if not window:
            raise FormatError(f"{where}: a VTG window entry needs 'window': [start, end]")
        return {"question_id": qid, "task": "VTG", "question": "", "options": [], "answer": "",
                "window": window, "descriptions": _descriptions(item)}
    options = _options(item["options"], where) if item.get("options") is not None else []
    return {
        "question_id": qid,
        "task": task,
        "question": str(item["question"]),
        "options": options,
        "answer": _answer(item.get("answer"), len(options), where) if options else str(item.get("answer") or ""),
        "window": _window(item.get("window"), where),
        "descriptions": _descriptions(item),
    }


def _video_fields(item: dict[str, Any], where: str) -> dict[str, Any]:
    video_id = item.get("video_id", item.get("video_name", item.get("video")))
    if not video_id:
        raise FormatError(f"{where}: every item needs a video_id (the video's file name)")
    duration = item.get("duration")
    if duration == "":
        duration = None
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
    return {"video_id": str(video_id), "duration": None if duration is None else float(duration),
            "resolution": resolution}


def _fill(video: dict[str, Any], fields: dict[str, Any], where: str) -> None:
    """Take the duration and resolution ``video`` lacks from ``fields``; say when they disagree."""
    for key in ("duration", "resolution"):
        if video[key] is None:
            video[key] = fields[key]
        elif fields[key] is not None and fields[key] != video[key]:
            logger.warning("%s: video %s has %s %r here and %r elsewhere; keeping %r",
                           where, video["video_id"], key, fields[key], video[key], video[key])


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _read_metadata_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "video_id" not in reader.fieldnames:
            raise FormatError(f"{path}: a LoMo metadata CSV starts with the header video_id,duration,resolution")
        return [{**_video_fields(row, f"{path} line {n}"), "questions": []} for n, row in enumerate(reader, 2)]


def read_lomo_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The videos in one LoMo file, items in file order with their own ids (None when absent).

    Shapes: LoMo-Pipe's per-task files (video objects with ``questions`` or, for VTG,
    ``relevant_windows``), its aggregated and quality-controlled files (video objects whose
    items carry ``task``), the metadata CSV (videos without items), and the shapes earlier
    versions of this project wrote: flat question items carrying their video's fields, a dict
    ``{video_id: [questions]}`` or ``{video_id: {video fields + questions}}``, JSON Lines.
    """
    if str(path).lower().endswith(".csv"):
        return _read_metadata_csv(path)
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
    for i, obj in enumerate(data):
        where = f"{path} item {i}"
        if not isinstance(obj, dict):
            raise FormatError(f"{where}: expected an object, got {obj!r:.80}")
        fields = _video_fields(obj, where)
        video = videos.get(fields["video_id"])
        if video is None:
            video = videos[fields["video_id"]] = {**fields, "questions": []}
        else:
            _fill(video, fields, where)
        if "questions" in obj or "relevant_windows" in obj:
            for key, task in (("questions", file_task), ("relevant_windows", "VTG")):
                entries = obj.get(key) or []
                if not isinstance(entries, list):
                    raise FormatError(f"{where}: {key} must be a list, got {type(entries).__name__}")
                for j, entry in enumerate(entries):
                    video["questions"].append(read_item(entry, task, f"{where} {key} {j}"))
        elif "question" in obj or "window_id" in obj:  # a flat item with its video's fields
            video["questions"].append(read_item(obj, file_task, where))
    return list(videos.values())


def _task_order(task: str) -> int:
    return ALL_TASKS.index(task)


def _item_key(q: dict[str, Any]) -> str:
    return json.dumps(q, sort_keys=True, ensure_ascii=False)


def finish_video(video: dict[str, Any]) -> dict[str, Any]:
    """Items in task order; ids kept when they are unique in the video, else (LoMo-Pipe gives
    every task's item ``<stem>_01``) all renumbered ``<stem>_01`` .. in that order. Duplicate
    items inside one task are kept and logged."""
    items = sorted(video["questions"], key=lambda q: _task_order(q["task"]))
    ids = [q["question_id"] for q in items]
    if None in ids or len(set(ids)) < len(ids):
        stem = video_stem(video["video_id"])
        items = [{**q, "question_id": f"{stem}_{n:02d}"} for n, q in enumerate(items, 1)]
    repeats = Counter(_item_key({**q, "question_id": None}) for q in items)
    for key, count in repeats.items():
        if count > 1:
            task = json.loads(key)["task"]
            logger.warning("video %s: %d identical %s items (all kept)", video["video_id"], count, task)
    return {**video, "questions": items}


def read_lomo_files(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """The videos of several LoMo files, merged by ``video_id`` (first seen first), as Hub rows.

    Items of different tasks never collapse. An item that another file already gave (the
    aggregated file read beside the per-task files, or the same file twice) is kept once, and
    the count is logged; duplicates inside one file are all kept."""
    merged: dict[str, dict[str, Any]] = {}
    kept: dict[str, Counter] = {}
    repeated: Counter = Counter()
    for path in paths:
        for video in read_lomo_file(path):
            into = merged.get(video["video_id"])
            if into is None:
                into = merged[video["video_id"]] = {**video, "questions": []}
            else:
                _fill(into, video, str(path))
            seen, here = kept.setdefault(video["video_id"], Counter()), Counter()
            for q in video["questions"]:
                key = _item_key(q)
                here[key] += 1
                if here[key] > seen[key]:
                    seen[key] += 1
                    into["questions"].append(q)
                else:
                    repeated[str(path)] += 1
    for path, count in repeated.items():
        logger.info("%s: %d items were already read from another file; kept once", path, count)
    return [finish_video(v) for v in merged.values()]


# --------------------------------------------------------------------------------------------
# Writing: Hub rows -> LoMo-Pipe's files
# --------------------------------------------------------------------------------------------


def lomo_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records (ours, with extra columns) as Hub rows, normalized, with LoMo-Pipe's ``video_id``
    (the file name with its extension, from the ``video`` column).

    Rows with errors are left out (a failed video has no questions to publish); ``resolution``
    comes from ``height`` and ``width`` when the record has no ``resolution``."""
    out = []
    for i, row in enumerate(rows):
        if row.get("errors"):
            continue
        fields = _video_fields(row, f"row {i}")
        fields["video_id"] = file_video_id({**row, "video_id": fields["video_id"]})
        items = [read_item(q, None, f"row {i} ({fields['video_id']}) question {j}")
                 for j, q in enumerate(row.get("questions") or [])]
        out.append({**fields, "questions": sorted(items, key=lambda q: _task_order(q["task"]))})
    return out


def file_item(q: dict[str, Any], item_id: str) -> dict[str, Any]:
    """One item as LoMo-Pipe's per-task file holds it (``item_id`` is its ``<stem>_NN``)."""
    if q["task"] == "VTG":
        return {"window_id": item_id, "window": q["window"], "descriptions": q["descriptions"]}
    item: dict[str, Any] = {"question_id": item_id, "question": q["question"], "options": q["options"],
                            "answer": q["answer"]}
    if q["task"] in WINDOW_TASKS or q["window"]:
        item["window"] = q["window"]
    if q["descriptions"]:
        item["descriptions"] = q["descriptions"]  # none of LoMo-Pipe's question tasks has it; kept
    return item


def items_key(task: str) -> str:
    return "relevant_windows" if task == "VTG" else "questions"


@dataclass
class LomoFiles:
    """The contents of LoMo-Pipe's files for some videos."""

    metadata: list[dict[str, Any]]  # the CSV's rows
    tasks: dict[str, list[dict[str, Any]]]  # Hub task -> the per-task file's list of videos
    aggregated: list[dict[str, Any]]


def aggregate(task_files: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """LoMo-Pipe's aggregation of per-task files (keyed by Hub task, each a list of videos): one
    object per video present in every file, its items from every file with ``"task": <file
    stem>``. A video object without ``questions`` or ``relevant_windows`` adds no items."""
    order = sorted(task_files, key=_task_order)
    if not order:
        return []
    by_task = {t: {v["video_id"]: v for v in task_files[t]} for t in order}
    videos = []
    for first in task_files[order[0]]:
        if not all(first["video_id"] in by_task[t] for t in order):
            continue
        questions = []
        for task in order:
            video = by_task[task][first["video_id"]]
            for item in video.get("questions", video.get("relevant_windows")) or []:
                questions.append({**item, "task": FILE_STEMS[task]})
        videos.append({k: first[k] for k in METADATA_COLUMNS} | {"questions": questions})
    return videos


def lomo_files(rows: Iterable[dict[str, Any]]) -> LomoFiles:
    """LoMo-Pipe's files for our records (see the module docstring for how names map)."""
    videos = lomo_rows(rows)
    tasks: dict[str, list[dict[str, Any]]] = {}
    vtg_with_options = 0
    for video in videos:
        head = {k: video[k] for k in METADATA_COLUMNS}
        per_task: dict[str, list[dict[str, Any]]] = {}
        for q in video["questions"]:
            items = per_task.setdefault(q["task"], [])
            items.append(file_item(q, f"{video_stem(video['video_id'])}_{len(items) + 1:02d}"))
            vtg_with_options += q["task"] == "VTG" and bool(q["options"])
        for task, items in per_task.items():
            tasks.setdefault(task, []).append({**head, items_key(task): items})
    if vtg_with_options:
        logger.warning("%d VTG items have options; LoMo-Pipe's VTG.json holds grounding windows only, so their "
                       "question and options are not written (the VTG_MC task is the multiple-choice form)",
                       vtg_with_options)
    tasks = {t: tasks[t] for t in sorted(tasks, key=_task_order)}
    aggregated = aggregate(tasks)
    if len(aggregated) < len(videos):
        logger.warning("%d of %d videos lack an item of some task, so LoMo-Pipe's aggregation (%s) leaves them "
                       "out; they are in the per-task files", len(videos) - len(aggregated), len(videos),
                       AGGREGATED_FILE)
    return LomoFiles([{k: v[k] for k in METADATA_COLUMNS} for v in videos], tasks, aggregated)


def metadata_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[k] is None else row[k] for k in METADATA_COLUMNS])
    return buffer.getvalue()


def write_lomo_task_files(rows: Iterable[dict[str, Any]], folder: str | os.PathLike) -> dict[str, Path]:
    """LoMo-Pipe's per-task files (``GVQA.json`` .. ``SVS_format.json`` .. ``VTG.json``), keyed by task."""
    files = lomo_files(rows)
    return {task: write_json(v, Path(folder) / f"{FILE_STEMS[task]}.json") for task, v in files.tasks.items()}


def write_lomo_json(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> Path:
    """LoMo-Pipe's aggregated file for our records."""
    return write_json(lomo_files(rows).aggregated, path)


def write_lomo_folder(rows: Iterable[dict[str, Any]], folder: str | os.PathLike) -> dict[str, Path]:
    """All of LoMo-Pipe's files in ``folder``: ``metadata.csv``, the per-task files and
    ``lomo.json`` (keys ``"metadata"``, the tasks, ``"lomo"``)."""
    folder = Path(folder)
    files = lomo_files(rows)
    written = {"metadata": write_text_atomic(metadata_csv(files.metadata), folder / METADATA_FILE)}
    for task, videos in files.tasks.items():
        written[task] = write_json(videos, folder / f"{FILE_STEMS[task]}.json")
    written["lomo"] = write_json(files.aggregated, folder / AGGREGATED_FILE)
    logger.info("wrote LoMo-Pipe files for %d videos to %s", len(files.metadata), folder)
    return written


def export_lomo(data: Iterable[dict[str, Any]], out: str | os.PathLike) -> dict[str, Path]:
    """The LoMo recipe's export: LoMo-Pipe's files in ``OUT/lomo/`` (``write_lomo_folder``) for
    the rows without errors that have items, and ``OUT/buckets.json`` (videos and items per
    ``duration_bucket``; outside ``lomo/`` so that ``lomo/*`` holds only LoMo-Pipe's files)."""
    rows = [r for r in data if not r.get("errors") and r.get("questions")]
    written = write_lomo_folder(rows, Path(out) / "lomo")
    buckets: dict[str, dict[str, int]] = {}
    for row in rows:
        bucket = buckets.setdefault(row.get("duration_bucket") or "none", {"videos": 0, "items": 0})
        bucket["videos"] += 1
        bucket["items"] += len(row["questions"])
    written["buckets"] = write_text_atomic(json.dumps(buckets, indent=2, sort_keys=True) + "\n",
                                           Path(out) / "buckets.json")
    return written
