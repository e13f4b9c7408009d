"""Planted defects: copies of real items with one known defect each, to measure what the audit
catches (recall per kind) and what it flags on untouched items (false alarms).

Kinds (``KINDS``: the kind -> the flag that should catch it):

- ``wrong_key``: the key moved to the next option (a distractor becomes the key) -> ``unverified_key``;
- ``moved_window``: a window item's window moved to another subtitle line, the times in its
  question rewritten to match (so the window checks pass) while the key still answers the old
  line -> ``unverified_key``;
- ``near_duplicate``: a distractor replaced by the key said twice (``"Press box press box"``)
  -> ``duplicate_options``;
- ``absurd_distractors``: every distractor replaced by an absurd sentence, so the question and
  options alone give the key away -> ``off_topic_distractors`` (a lexical check; a blind
  answerer that sees it adds ``blind_answerable``).

Every planted copy lives in a copy of its video (``<video_id>~<kind>``, the item id
``<question_id>~<kind>``), so the video's evidence (summary, subtitle lines) stays the same.
Audit each kind's videos apart from the untouched ones: a copy shares its options with its
original, which the dataset-wide ``options_repeat`` check would rightly flag.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

from lomo_datasets.audit import checks as A

KINDS = {
    "wrong_key": "unverified_key",
    "moved_window": "unverified_key",
    "near_duplicate": "duplicate_options",
    "absurd_distractors": "off_topic_distractors",
}

ABSURD = (
    "A purple elephant plays the violin on the moon",
    "Seventeen penguins file their tax returns",
    "A submarine parks on the roof of a bakery",
    "The clouds knit a sweater for a volcano",
    "A piano swims across the desert at midnight",
    "Tiny dragons sell umbrellas to the fish",
    "A teapot wins the election on Mars",
)


def _with_options(item: A.Item, options: dict[str, str], answer: str | None = None) -> A.Item:
    return {**item, "options": [f"{k}: {v}" for k, v in options.items()], "answer": answer or item.get("answer")}


def wrong_key(item: A.Item, video: A.Video) -> A.Item | None:
    letters = list(A.parse_options(item))
    key = A.answer_letter(item)
    if not A.is_multiple_choice(item) or key not in letters:
        return None
    return {**item, "answer": letters[(letters.index(key) + 1) % len(letters)]}


def moved_window(item: A.Item, video: A.Video) -> A.Item | None:
    """The window on the line farthest from the item's own (another line), times rewritten."""
    window = A._window(item)
    if str(item.get("task")) not in A.WINDOW_TASKS or window is None or len(video.lines) < 2:
        return None
    start, end = window
    others = [line for line in video.lines if line[1] <= start + A.TIME_TOLERANCE or line[0] >= end - A.TIME_TOLERANCE]
    if not others:
        return None
    new_start, new_end, _ = max(others, key=lambda line: abs(line[0] - start))
    question = str(item.get("question") or "")
    written = A.text_times(question)
    if written is not None:
        question = re.sub(rf"\b{re.escape(f'{start:g}')}\b", f"{new_start:g}", question, count=1)
        question = re.sub(rf"\b{re.escape(f'{end:g}')}\b", f"{new_end:g}", question, count=1)
    return {**item, "question": question, "window": [new_start, new_end]}


def near_duplicate(item: A.Item, video: A.Video) -> A.Item | None:
    options = A.parse_options(item)
    key = A.answer_letter(item)
    if not A.is_multiple_choice(item) or key not in options:
        return None
    other = next(k for k in reversed(options) if k != key)
    text = options[key].rstrip(".")
    return _with_options(item, {**options, other: f"{text} {text.lower()}"})


def absurd_distractors(item: A.Item, video: A.Video) -> A.Item | None:
    options = A.parse_options(item)
    key = A.answer_letter(item)
    if not A.is_multiple_choice(item) or key not in options:
        return None
    start = sum(map(ord, str(item.get("question_id")))) % len(ABSURD)  # other sentences per item
    absurd = iter(ABSURD[start:] + ABSURD[:start])
    return _with_options(item, {k: (v if k == key else next(absurd)) for k, v in options.items()})


PLANTERS = {"wrong_key": wrong_key, "moved_window": moved_window, "near_duplicate": near_duplicate,
            "absurd_distractors": absurd_distractors}


def plant(videos: Sequence[A.Video], kind: str, only: set[str] | None = None) -> list[A.Video]:
    """Per video, a copy holding the planted ``kind`` copy of each item it applies to (of the
    items in ``only``, when given)."""
    planter = PLANTERS[kind]
    planted = []
    for video in videos:
        items = []
        for q in video.questions:
            if only is not None and str(q.get("question_id")) not in only:
                continue
            bad = planter(dict(q), video)
            if bad is not None:
                items.append({**bad, "question_id": f"{q.get('question_id')}~{kind}"})
        if items:
            planted.append(dataclasses.replace(video, video_id=f"{video.video_id}~{kind}", questions=items))
    return planted


def videos_from_fixture(data: dict[str, Any]) -> tuple[list[A.Video], set[str]]:
    """The fixture's videos (rows of a real run, text only) and the ids of its items a person
    checked and found sound (``clean``)."""
    return [A.Video.from_row(row) for row in data["rows"]], set(data["clean"])
