"""The QA quality audit: what a benchmark built by an LLM from subtitles gets wrong.

Every figure is a plain function over question items (the published ``questions`` of a LoMo row:
``question_id``, ``task``, ``question``, ``options`` ``"A: .."``..``"D: .."``, ``answer`` letter,
``window``, ``descriptions``) and, for windows, the video's duration and subtitle lines:

- **blind answerability** (``blind_answers`` + ``blind_figures``): an LLM answers each
  multiple-choice item from the question and options alone (no subtitles, no video). Its accuracy
  per task, with a Wilson 95% confidence interval, against the chance level (1 / options); an item
  it gets right is flagged ``blind_answerable``. The answerer is any backend of the LLM layer
  (``llm_answerer``).
- **answer is the longest option** (``answer_is_longest``): the rate per task (chance: 1 in 4); an
  item whose correct option is longer than every other by ``LONGEST_MARGIN`` is flagged.
- **letter balance** (``letter_counts``, ``balance_p_value``): answers per letter and the
  chi-square p-value of "every letter equally likely".
- **near-duplicate options** within an item (``near_duplicate_options``) and **options repeated
  across items** (``repeated_options``): SVQA and VVQA of one video ask the same question with and
  without the time prefix, so they share options on purpose and are not counted.
- **windows** (``window_problems``): inside ``[0, duration]``, on subtitle-line boundaries, and
  equal to the times written in the question (or, for grounding, in the correct option).
- **coverage** (``coverage``): items per task per video and the videos missing a task.

Items without options (a grounding item) are not multiple-choice: they get the window checks only.
The audit flags items (``Flag``: question id, reason code, detail); it never drops one.
"""

from __future__ import annotations

import contextlib

import dataclasses
import difflib
import json
import logging
import math
import os
import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from lomo_datasets.llm.prompts import Prompt
from lomo_datasets.core.stage import SettingError

logger = logging.getLogger(__name__)

#: An item is flagged ``answer_longest`` when its correct option has at least this many times the
#: characters of the longest other option (a strictly-longest answer by one letter is no tell).
LONGEST_MARGIN = 1.3
#: Two options of one item are near duplicates at this ``difflib`` ratio (or when equal after
#: lower-casing and dropping punctuation and articles).
DUPLICATE_RATIO = 0.9
#: Seconds of slack for window checks (times in questions are written with one decimal).
TIME_TOLERANCE = 0.051
#: The tasks a LoMo video should have (coverage reports videos missing one of those seen).
LOMO_TASKS = ("GVQA", "GVS", "SVS", "SVQA", "VVQA", "VTG")
#: Pairs of tasks of one video that share their options by design.
SHARED_OPTIONS = frozenset({"SVQA", "VVQA"})
AUDIT_JSON = "audit.json"
AUDIT_MD = "audit.md"
GENERATOR = "lomo-datasets audit"

REASONS = {
    "blind_answerable": "the blind answerer got it right from the question and options alone",
    "answer_in_question": "the question text contains the correct option (and no other)",
    "answer_longest": f"the correct option is over {LONGEST_MARGIN:g}x longer than every other",
    "duplicate_options": "two options are (nearly) the same",
    "options_repeat": "the same options as another item",
    "bad_answer": "the answer letter is not one of the options",
    "window_outside_video": "the window is not inside [0, duration]",
    "window_off_subtitles": "the window does not start and end on subtitle lines",
    "window_text_mismatch": "the times in the text differ from the window",
}

_LETTERS = string.ascii_uppercase
_OPTION = re.compile(r"^\s*([A-Z])\s*[:.)]\s*(.*)$", re.S)
#: "from 3 to 5.5 seconds", "between 3 s and 5.5 s", "3-5.5 seconds" (a unit is required, so
#: "from 2019 to 2020" is not a window)
_TIME_PAIR = re.compile(
    r"(\d+(?:\.\d+)?)(\s*(?:s|sec|secs|seconds?)\b)?\s*(?:to|and|-|–)\s*(\d+(?:\.\d+)?)(\s*(?:s|sec|secs|seconds?)\b)?",
    re.I,
)
_ARTICLES = {"a", "an", "the"}

Item = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class Video:
    """One video's items and what the window checks need."""

    video_id: str
    questions: list[Item]
    duration: float | None = None
    #: ``(start, end)`` of the subtitle lines the windows should sit on (empty: not checked)
    subtitles: list[tuple[float, float]] = field(default_factory=list)
    video: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Video":
        """From a published LoMo row: ``segments_en`` and ``segments`` lines both count."""
        lines = []
        for column in ("segments_en", "segments"):
            for seg in row.get(column) or []:
                if seg and seg.get("start") is not None and seg.get("end") is not None:
                    lines.append((float(seg["start"]), float(seg["end"])))
        duration = row.get("duration")
        return cls(
            video_id=str(row.get("video_id") or ""),
            questions=[dict(q) for q in row.get("questions") or []],
            duration=float(duration) if isinstance(duration, (int, float)) and math.isfinite(duration) else None,
            subtitles=sorted(set(lines)),
            video=row.get("video"),
        )


@dataclass(frozen=True)
class Flag:
    """One failed check of one item."""

    question_id: str
    reason: str
    detail: str = ""


# --------------------------------------------------------------------------------------------
# Item helpers
# --------------------------------------------------------------------------------------------


def parse_options(item: Item) -> dict[str, str]:
    """``{"A": "text", ...}`` from ``"A: text"`` options (unlabelled options get A, B, ...)."""
    parsed: dict[str, str] = {}
    for i, option in enumerate(item.get("options") or []):
        match = _OPTION.match(str(option))
        if match:
            parsed[match.group(1)] = match.group(2).strip()
        elif i < len(_LETTERS):
            parsed[_LETTERS[i]] = str(option).strip()
    return parsed


def is_multiple_choice(item: Item) -> bool:
    """At least two options and an answer letter (a grounding item without options is not)."""
    return len(item.get("options") or []) >= 2 and bool(str(item.get("answer") or "").strip())


def answer_letter(item: Item) -> str:
    return str(item.get("answer") or "").strip().upper()[:1]


def chance_level(item: Item) -> float:
    n = len(parse_options(item))
    return 1.0 / n if n else 0.0


def _norm(text: str) -> str:
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


# --------------------------------------------------------------------------------------------
# Figures: plain functions
# --------------------------------------------------------------------------------------------


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for ``z=1.96``); ``(0, 1)`` when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for a chi-square variable with integer ``df`` (closed form, no SciPy)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if x <= 0:
        return 1.0
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= (x / 2) / k
            total += term
        return min(1.0, math.exp(-x / 2) * total)
    total = math.erfc(math.sqrt(x / 2))
    term = math.sqrt(2 * x / math.pi) * math.exp(-x / 2)
    for k in range(1, (df + 1) // 2):
        total += term
        term *= x / (2 * k + 1)
    return min(1.0, total)


def letter_counts(items: Iterable[Item]) -> dict[str, int]:
    """Correct answers per letter over the multiple-choice items (every offered letter listed)."""
    counts: Counter = Counter()
    letters: set[str] = set()
    for item in items:
        if is_multiple_choice(item):
            letters.update(parse_options(item))
            counts[answer_letter(item)] += 1
    return {letter: counts.get(letter, 0) for letter in sorted(letters | set(counts))}


def balance_p_value(counts: dict[str, int]) -> float | None:
    """Chi-square p-value of "every letter equally likely" (None with < 2 letters or no items)."""
    n = sum(counts.values())
    k = len(counts)
    if n == 0 or k < 2:
        return None
    expected = n / k
    stat = sum((c - expected) ** 2 / expected for c in counts.values())
    return chi2_sf(stat, k - 1)


def answer_is_longest(item: Item, margin: float = 1.0) -> bool:
    """The correct option is longer (in characters) than ``margin`` times every other option."""
    options = parse_options(item)
    answer = options.get(answer_letter(item))
    if answer is None or len(options) < 2:
        return False
    longest_other = max(len(text) for letter, text in options.items() if letter != answer_letter(item))
    return len(answer) > longest_other * margin


def answer_in_question(item: Item, min_words: int = 3) -> bool:
    """The question contains the correct option's text (of at least ``min_words`` words) and
    contains no other option's: the text gives the answer away."""
    options = {k: _norm(v) for k, v in parse_options(item).items()}
    answer = options.get(answer_letter(item), "")
    question = f" {_norm(str(item.get('question') or ''))} "
    if len(answer.split()) < min_words or f" {answer} " not in question:
        return False
    return not any(f" {text} " in question for k, text in options.items() if k != answer_letter(item) and text)


def _similar(a: str, b: str, ratio: float, counts: dict[str, Counter]) -> bool:
    """``difflib`` ratio >= ``ratio``, after its cheap upper bounds (lengths, shared letters):
    most pairs of options are far apart."""
    total = len(a) + len(b)
    if not total or 2 * min(len(a), len(b)) < ratio * total:
        return False
    ca = counts.setdefault(a, Counter(a))
    cb = counts.setdefault(b, Counter(b))
    if 2 * sum((ca & cb).values()) < ratio * total:
        return False
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= ratio


def near_duplicate_options(item: Item, ratio: float = DUPLICATE_RATIO) -> list[tuple[str, str]]:
    """Pairs of letters whose options are the same after normalising or similar at ``ratio``."""
    options = [(letter, _norm(text)) for letter, text in parse_options(item).items()]
    counts: dict[str, Counter] = {}
    pairs = []
    for i, (a, text_a) in enumerate(options):
        for b, text_b in options[i + 1 :]:
            if text_a == text_b or _similar(text_a, text_b, ratio, counts):
                pairs.append((a, b))
    return pairs


def _video_of(item: Item) -> str:
    qid = str(item.get("question_id") or "")
    return qid.rsplit("_", 1)[0] if "_" in qid else qid


def repeated_options(items: Sequence[Item]) -> dict[str, str]:
    """``question_id -> the first other item`` with the same set of options (normalised).

    Two items of one video whose tasks are SVQA and VVQA share their options by design and do
    not count. ``video_id`` per item comes from an explicit ``video_id`` key or the id prefix.
    """
    by_key: dict[frozenset, list[Item]] = defaultdict(list)
    for item in items:
        if not is_multiple_choice(item):
            continue
        key = frozenset(_norm(t) for t in parse_options(item).values())
        by_key[key].append(item)
    repeats: dict[str, str] = {}
    for group in by_key.values():
        for item in group:
            for other in group:
                if other is item:
                    continue
                same_video = (item.get("video_id") or _video_of(item)) == (other.get("video_id") or _video_of(other))
                if same_video and {item.get("task"), other.get("task")} <= SHARED_OPTIONS and item.get("task") != other.get("task"):
                    continue
                repeats[str(item.get("question_id"))] = str(other.get("question_id"))
                break
    return repeats


def text_times(text: str) -> tuple[float, float] | None:
    """The first ``start .. end`` pair of times written in ``text`` (``from 3.2 to 5 seconds``)."""
    for match in _TIME_PAIR.finditer(text or ""):
        start, end = float(match.group(1)), float(match.group(3))
        if (match.group(2) or match.group(4)) and end >= start:
            return start, end
    return None


def _window(item: Item) -> tuple[float, float] | None:
    window = item.get("window") or []
    if len(window) != 2 or any(not isinstance(v, (int, float)) for v in window):
        return None
    return float(window[0]), float(window[1])


def window_problems(item: Item, video: Video, tolerance: float = TIME_TOLERANCE) -> list[Flag]:
    """The window checks of one item: inside the video, on subtitle lines, equal to its text."""
    qid = str(item.get("question_id") or "")
    window = _window(item)
    written = text_times(str(item.get("question") or ""))
    if written is None and not is_multiple_choice(item):
        written = text_times(str(item.get("answer") or ""))
    if written is None and is_multiple_choice(item):
        # grounding as multiple choice: the correct option is the window
        correct = parse_options(item).get(answer_letter(item), "")
        if str(item.get("task")).startswith("VTG"):  # VTG_MC: the grounding item as a choice
            written = text_times(correct)
    flags: list[Flag] = []
    if window is None:
        if written is not None:
            flags.append(Flag(qid, "window_text_mismatch", f"the text says {written[0]:g}-{written[1]:g} s but the item has no window"))
        return flags
    start, end = window
    if start < -tolerance or end <= start or (video.duration is not None and end > video.duration + tolerance):
        limit = f"{video.duration:g}" if video.duration is not None else "?"
        flags.append(Flag(qid, "window_outside_video", f"[{start:g}, {end:g}] vs duration {limit} s"))
    if video.subtitles:
        starts = [s for s, _ in video.subtitles]
        ends = [e for _, e in video.subtitles]
        on_start = any(abs(start - s) <= tolerance for s in starts)
        on_end = any(abs(end - e) <= tolerance for e in ends)
        if not (on_start and on_end):
            flags.append(Flag(qid, "window_off_subtitles", f"[{start:g}, {end:g}] does not start and end on subtitle lines"))
    if written is not None and (abs(written[0] - start) > tolerance or abs(written[1] - end) > tolerance):
        flags.append(Flag(qid, "window_text_mismatch", f"text {written[0]:g}-{written[1]:g} s, window [{start:g}, {end:g}]"))
    return flags


def item_flags(item: Item, video: Video) -> list[Flag]:
    """Every check of one item that needs no LLM and no other item."""
    qid = str(item.get("question_id") or "")
    flags: list[Flag] = []
    if is_multiple_choice(item):
        options = parse_options(item)
        if answer_letter(item) not in options:
            flags.append(Flag(qid, "bad_answer", f"answer {item.get('answer')!r}, options {''.join(options)}"))
        if answer_in_question(item):
            flags.append(Flag(qid, "answer_in_question", f"{answer_letter(item)} is written in the question"))
        if answer_is_longest(item, LONGEST_MARGIN):
            flags.append(Flag(qid, "answer_longest", f"{answer_letter(item)} is the longest option"))
        for a, b in near_duplicate_options(item):
            flags.append(Flag(qid, "duplicate_options", f"{a} ~ {b}"))
    flags.extend(window_problems(item, video))
    return flags


def coverage(videos: Sequence[Video], tasks: Sequence[str] | None = None) -> dict[str, Any]:
    """Items per task per video and, per task, the videos that lack it.

    ``tasks`` defaults to every task seen in the data (so a LiveCC-free QA set with only some
    tasks is not blamed for the others)."""
    per_video = {v.video_id: dict(Counter(str(q.get("task")) for q in v.questions)) for v in videos}
    seen = sorted({t for counts in per_video.values() for t in counts}, key=_task_order)
    expected = list(tasks) if tasks is not None else seen
    missing = {t: [vid for vid, counts in per_video.items() if not counts.get(t)] for t in expected}
    counts_per_task = {t: sorted(Counter(c.get(t, 0) for c in per_video.values()).items()) for t in expected}
    return {
        "videos": len(per_video),
        "videos_without_items": [vid for vid, c in per_video.items() if not c],
        "items_per_task_per_video": {t: {str(k): n for k, n in pairs} for t, pairs in counts_per_task.items()},
        "missing": {t: vids for t, vids in missing.items() if vids},
    }


def _task_order(task: str) -> tuple[int, str]:
    return (LOMO_TASKS.index(task) if task in LOMO_TASKS else len(LOMO_TASKS), task)


# --------------------------------------------------------------------------------------------
# Blind answerability
# --------------------------------------------------------------------------------------------

BLIND = Prompt(
    "blind",
    "1",
    "You take a multiple-choice test about a video that you cannot see. Pick the most likely option "
    "from the question and the options alone, even when unsure. Answer with JSON only.",
    'Question: {question}\nOptions:\n{options}\nReply as JSON: {{"answer": "<letter>"}}',
)

#: ``(messages_list, task) -> one dict or exception per item`` (the LLM layer's generate_json)
JsonGenerator = Callable[[list, Any], list]


def blind_messages(item: Item) -> list[dict[str, str]]:
    """The blind answerer's chat: the question and options, nothing about the video."""
    options = "\n".join(f"{k}: {v}" for k, v in parse_options(item).items())
    return BLIND.messages(question=str(item.get("question") or "").strip(), options=options)


def blind_task(letters: Sequence[str]) -> Any:
    from lomo_datasets.llm.backends import TaskSpec

    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": list(letters)}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    return TaskSpec(f"blind.{''.join(letters)}", schema, max_new_tokens=16)


def blind_settings(values: dict[str, Any] | None = None, embedded: bool = False) -> Any:
    """``LLMSettings`` for the blind answerer from ``{setting: value}`` (``--llm KEY=VALUE``);
    ``embedded`` makes the embedded chat model the default model. Unknown names fail at once."""
    from lomo_datasets.llm.stage import LLMStage
    from lomo_datasets.llm.backends import LLMSettings

    values = dict(values or {})
    names = [f.name for f in dataclasses.fields(LLMSettings)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise SettingError(f"blind answerer: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    if embedded and "model" not in values:
        values["model"] = LLMStage.embedded_model
    settings = LLMSettings(**values)
    settings.validate("blind")
    return settings


def llm_answerer(settings: Any, device: str | None = None) -> JsonGenerator:
    """The blind answerer on any backend of the LLM layer (``settings``: ``LLMSettings``), on
    ``device`` (default: the package's device rule for one process).

    The one place the audit touches the LLM layer."""
    from lomo_datasets.llm.backends import make_backend
    from lomo_datasets.core.stage import resolve_device

    return make_backend(settings, device or resolve_device(0)).generate_json


def blind_answers(items: Sequence[Item], generate: JsonGenerator, batch_size: int = 64) -> dict[str, str | None]:
    """``question_id -> the letter the blind answerer chose`` (None when it gave no valid
    answer) for every multiple-choice item."""
    mc = [item for item in items if is_multiple_choice(item) and parse_options(item)]
    answers: dict[str, str | None] = {}
    for start in range(0, len(mc), batch_size):
        chunk = mc[start : start + batch_size]
        messages = [blind_messages(item) for item in chunk]
        tasks = [blind_task(list(parse_options(item))) for item in chunk]
        for item, result in zip(chunk, generate(messages, tasks)):
            qid = str(item.get("question_id"))
            if isinstance(result, dict) and result.get("answer"):
                answers[qid] = str(result["answer"]).strip().upper()[:1]
            else:
                logger.info("blind answer for %s: %s", qid, result)
                answers[qid] = None
    return answers


@dataclass
class BlindFigure:
    """Blind accuracy of one task (or ``all``) against chance."""

    asked: int
    answered: int
    correct: int
    accuracy: float | None
    ci_low: float
    ci_high: float
    chance: float
    correct_ids: list[str] = field(default_factory=list)
    #: the blind answerer's picks per letter (a model that favours a letter scores the share of
    #: correct answers with that letter: read the accuracy beside the letter balance)
    picks: dict[str, int] = field(default_factory=dict)

    @property
    def above_chance(self) -> bool:
        return self.answered > 0 and self.ci_low > self.chance


def blind_figure(items: Sequence[Item], answers: dict[str, str | None]) -> BlindFigure:
    asked = [item for item in items if str(item.get("question_id")) in answers]
    answered = [item for item in asked if answers[str(item.get("question_id"))]]
    right = [item for item in answered if answers[str(item.get("question_id"))] == answer_letter(item)]
    low, high = wilson_interval(len(right), len(answered))
    chance = sum(chance_level(i) for i in answered) / len(answered) if answered else 0.25
    return BlindFigure(
        asked=len(asked), answered=len(answered), correct=len(right),
        accuracy=len(right) / len(answered) if answered else None, ci_low=low, ci_high=high, chance=chance,
        correct_ids=[str(i.get("question_id")) for i in right],
        picks=dict(sorted(Counter(str(answers[str(i.get("question_id"))]) for i in answered).items())),
    )


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


@dataclass
class TaskFigures:
    """Every figure of one task (or of ``all`` items)."""

    items: int
    multiple_choice: int
    blind: BlindFigure | None
    longest_rate: float | None
    letters: dict[str, int]
    letter_p: float | None
    duplicate_option_items: int
    repeated_option_items: int
    windows: int
    window_outside_video: int
    window_off_subtitles: int
    window_text_mismatch: int
    flagged_items: int


@dataclass
class AuditReport:
    tasks: dict[str, TaskFigures]
    coverage: dict[str, Any]
    flags: list[Flag]
    blind_model: str | None = None
    #: ``question_id -> the blind answerer's letter`` (None: no valid answer); None: not run
    blind_answers: dict[str, str | None] | None = None

    @property
    def overall(self) -> TaskFigures:
        return self.tasks["all"]

    def flags_by_item(self) -> dict[str, list[Flag]]:
        grouped: dict[str, list[Flag]] = defaultdict(list)
        for flag in self.flags:
            grouped[flag.question_id].append(flag)
        return dict(grouped)

    def to_dict(self) -> dict[str, Any]:
        tasks = {}
        for name, fig in self.tasks.items():
            data = dataclasses.asdict(fig)
            if fig.blind is not None:
                data["blind"]["above_chance"] = fig.blind.above_chance
            tasks[name] = data
        return {
            "generator": GENERATOR,
            "blind_model": self.blind_model,
            "blind_answers": self.blind_answers,
            "tasks": tasks,
            "coverage": self.coverage,
            "flags": [dataclasses.asdict(f) for f in self.flags],
            "reasons": REASONS,
        }

    def markdown(self, max_listed: int = 50) -> str:
        return audit_markdown(self, max_listed)


def audit(
    videos: Sequence[Video],
    answers: dict[str, str | None] | None = None,
    tasks: Sequence[str] | None = None,
    blind_model: str | None = None,
) -> AuditReport:
    """Every figure per task and overall, and the per-item flags. ``answers`` are the blind
    answerer's letters (``blind_answers``); without them blind answerability is not reported."""
    flags: list[Flag] = []
    items: list[Item] = []
    for video in videos:
        for q in video.questions:
            items.append({**q, "video_id": video.video_id})
            flags.extend(item_flags(q, video))
    repeats = repeated_options(items)
    flags.extend(Flag(qid, "options_repeat", f"same options as {other}") for qid, other in repeats.items())
    if answers is not None:
        right = {str(i.get("question_id")) for i in items if answers.get(str(i.get("question_id"))) == answer_letter(i) and answer_letter(i)}
        flags.extend(Flag(qid, "blind_answerable", f"blind answer {answers[qid]}") for qid in sorted(right))
    order = {str(i.get("question_id")): k for k, i in enumerate(items)}
    flags.sort(key=lambda f: (order.get(f.question_id, len(order)), f.reason))
    by_task: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_task[str(item.get("task"))].append(item)
    figures = {task: _figures(by_task[task], flags, repeats, answers) for task in sorted(by_task, key=_task_order)}
    figures["all"] = _figures(items, flags, repeats, answers)
    return AuditReport(figures, coverage(videos, tasks), flags, blind_model, answers)


def _figures(items: list[Item], flags: list[Flag], repeats: dict[str, str], answers) -> TaskFigures:
    ids = {str(i.get("question_id")) for i in items}
    reasons: dict[str, set[str]] = defaultdict(set)
    for flag in flags:
        if flag.question_id in ids:
            reasons[flag.reason].add(flag.question_id)
    mc = [i for i in items if is_multiple_choice(i)]
    letters = letter_counts(mc)
    return TaskFigures(
        items=len(items),
        multiple_choice=len(mc),
        blind=blind_figure(mc, answers) if answers is not None else None,
        longest_rate=sum(answer_is_longest(i) for i in mc) / len(mc) if mc else None,
        letters=letters,
        letter_p=balance_p_value(letters),
        duplicate_option_items=len(reasons["duplicate_options"]),
        repeated_option_items=len(ids & set(repeats)),
        windows=sum(_window(i) is not None for i in items),
        window_outside_video=len(reasons["window_outside_video"]),
        window_off_subtitles=len(reasons["window_off_subtitles"]),
        window_text_mismatch=len(reasons["window_text_mismatch"]),
        flagged_items=len({f.question_id for f in flags if f.question_id in ids}),
    )


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def blind_cell(blind: BlindFigure | None) -> str:
    if blind is None or not blind.answered:
        return "not run" if blind is None else "– (no choices)" if not blind.asked else "no answers"
    mark = " ▲" if blind.above_chance else ""
    return f"{_pct(blind.accuracy)} [{_pct(blind.ci_low)}, {_pct(blind.ci_high)}] of {blind.answered}{mark}"


def audit_table(report: AuditReport) -> str:
    """The per-task Markdown table (the card shows it; ``audit.md`` starts with it)."""
    rows = [
        "| task | items | blind accuracy [95% CI] | answer longest | letters | letter balance p | near-dup options | options repeat | windows: outside / off subtitles / text mismatch | flagged |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, fig in report.tasks.items():
        letters = " ".join(f"{k}{v}" for k, v in fig.letters.items()) or "–"
        p = "–" if fig.letter_p is None else f"{fig.letter_p:.2f}"
        windows = f"{fig.window_outside_video} / {fig.window_off_subtitles} / {fig.window_text_mismatch} of {fig.windows}" if fig.windows else "–"
        name = f"**{task}**" if task == "all" else task
        rows.append(
            f"| {name} | {fig.items} | {blind_cell(fig.blind)} | {_pct(fig.longest_rate)} | {letters} | {p} | "
            f"{fig.duplicate_option_items} | {fig.repeated_option_items} | {windows} | {fig.flagged_items} |"
        )
    return "\n".join(rows)


def audit_markdown(report: AuditReport, max_listed: int = 50) -> str:
    chance = report.overall.blind.chance if report.overall.blind else 0.25
    lines = [
        f"<!-- written by {GENERATOR} -->",
        "# QA audit",
        "",
        audit_table(report),
        "",
        f"Blind accuracy: an LLM ({report.blind_model or 'none'}) answers from the question and options alone; "
        f"chance is {_pct(chance)}; ▲ marks a task whose whole 95% interval is above chance. "
        "Answer longest: share of items whose correct option is the longest (chance 25%). "
        "Letter balance p: chi-square test that every letter is equally likely (small p: unbalanced).",
        "",
        *([f"Blind picks per letter: {' '.join(f'{k}{v}' for k, v in report.overall.blind.picks.items())} "
           "(a model that favours one letter scores the share of correct answers with that letter; "
           "read blind accuracy beside the letters column).", ""] if report.overall.blind and report.overall.blind.picks else []),
        "## Coverage",
        "",
        f"Videos: {report.coverage['videos']}.",
    ]
    for task, vids in report.coverage["missing"].items():
        lines.append(f"- {len(vids)} videos without {task}: {', '.join(vids[:max_listed])}{' ...' if len(vids) > max_listed else ''}")
    if not report.coverage["missing"]:
        lines.append("- every video has every task")
    if report.overall.blind is not None:
        right = report.overall.blind.correct_ids
        lines += ["", f"## Items the blind answerer got right ({len(right)})", ""]
        lines += [f"- `{qid}`" for qid in right[:max_listed]] + (["- ..."] if len(right) > max_listed else [])
    grouped = report.flags_by_item()
    lines += ["", f"## Flagged items ({len(grouped)})", "", "| question_id | reasons |", "|---|---|"]
    for qid, flags in list(grouped.items())[:max_listed]:
        lines.append(f"| `{qid}` | {'; '.join(f'{f.reason} ({f.detail})' if f.detail else f.reason for f in flags)} |")
    if len(grouped) > max_listed:
        lines.append(f"| ... | {len(grouped) - max_listed} more in {AUDIT_JSON} |")
    lines += ["", "Reasons: " + "; ".join(f"`{k}` {v}" for k, v in REASONS.items()) + "."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------

_COLUMNS = ("video_id", "video", "duration", "questions", "segments", "segments_en")
#: The columns ``report_from_rows`` reads (``blind_answers``: the blind step's picks).
ROW_COLUMNS = (*_COLUMNS, "blind_answers")


def answers_from_rows(rows: Sequence[dict[str, Any]]) -> dict[str, str | None] | None:
    """The ``blind_answers`` column as ``question_id -> letter`` (None: the column is absent)."""
    if not any("blind_answers" in row for row in rows):
        return None
    answers: dict[str, str | None] = {}
    for row in rows:
        for entry in row.get("blind_answers") or []:
            answers[str(entry.get("question_id"))] = (entry.get("answer") or None)
    return answers


def report_from_rows(rows: Sequence[dict[str, Any]], blind_model: str | None = None) -> AuditReport:
    """The audit of published rows, with the blind picks of their ``blind_answers`` column."""
    return audit([Video.from_row(r) for r in rows], answers_from_rows(rows), blind_model=blind_model)


def blind_model(provenance: Any) -> str | None:
    """``backend:model`` of the recipe's ``blind`` step (from a card ``Provenance``), or None."""
    for step in getattr(provenance, "steps", None) or []:
        if step.name == "blind" and step.settings.get("enabled", True):
            return f"{step.settings.get('backend', '?')}:{step.settings.get('model', '?')}"
    return None


def flag_column(videos: Sequence[Video], report: AuditReport) -> list[list[dict[str, str]]]:
    """Per video, its items' flags (the ``audit_flags`` column, features.AUDIT_FLAGS)."""
    by_item = report.flags_by_item()
    return [
        [dataclasses.asdict(f) for q in v.questions for f in by_item.get(str(q.get("question_id")), [])]
        for v in videos
    ]


def card_summary(report: AuditReport) -> dict[str, Any]:
    """What the dataset card shows: the table, counts, the blind accuracy per task (the plot)."""
    blind = {
        task: {k: getattr(fig.blind, k) for k in ("accuracy", "ci_low", "ci_high", "chance", "answered")}
        for task, fig in report.tasks.items() if fig.blind is not None and fig.blind.answered
    }
    return {
        "table": audit_table(report),
        "questions": report.overall.items,
        "flagged_items": report.overall.flagged_items,
        "reasons": dict(Counter(f.reason for f in report.flags).most_common()),
        "blind": blind,
        "link": AUDIT_MD,
    }


def read_rows(folder: str | os.PathLike, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows of a dataset folder in the Hub layout (``data/*.parquet``), only ``columns``."""
    import pyarrow.parquet as pq

    root = Path(folder)
    files = sorted((root / "data").glob("*.parquet")) if (root / "data").is_dir() else []
    if not files:
        raise SettingError(f"{root}: no data/*.parquet here; give a folder written by `lomo-datasets run`")
    rows: list[dict[str, Any]] = []
    for path in files:
        with parquet_errors(path):
            schema = pq.read_schema(path)
            wanted = [c for c in (columns or schema.names) if c in schema.names]
            rows.extend(pq.read_table(path, columns=wanted).to_pylist())
    return rows


@contextlib.contextmanager
def parquet_errors(path: Path):
    """A damaged shard as one line that names it and the fix (not pyarrow's ArrowInvalid)."""
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException) and exc.errno is not None:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise SettingError(
            f"{path}: not a readable Parquet file ({type(exc).__name__}: {first}); restore it, or rerun "
            "`lomo-datasets run` with the same --out to write the folder again"
        ) from None


def read_videos(folder: str | os.PathLike) -> list[Video]:
    rows = read_rows(folder, _COLUMNS)
    if rows and "questions" not in rows[0]:
        raise SettingError(f"{folder}: the rows have no 'questions' column; the audit is for LoMo-style QA datasets")
    return [Video.from_row(r) for r in rows]


def write_report(report: AuditReport, folder: str | os.PathLike) -> tuple[Path, Path]:
    """``audit.json`` and ``audit.md`` in ``folder``. A file of that name that this tool did
    not write is never overwritten."""
    folder = Path(folder)
    paths = folder / AUDIT_JSON, folder / AUDIT_MD
    for path in paths:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise SettingError(f"{path} is a link or not a regular file; lomo-datasets never writes through it: remove it first")
        if path.exists() and GENERATOR not in path.read_text(encoding="utf-8", errors="replace")[:2000]:
            raise SettingError(f"{path} exists and was not written by lomo-datasets; move it away first")
    paths[0].write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    paths[1].write_text(report.markdown(), encoding="utf-8")
    return paths


def read_report(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The ``audit.json`` of a folder, or None."""
    path = Path(folder) / AUDIT_JSON
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and data.get("generator") == GENERATOR else None


def audit_folder(
    folder: str | os.PathLike, generate: JsonGenerator | None = None, blind_model: str | None = None,
    tasks: Sequence[str] | None = None,
) -> AuditReport:
    """Audit a LoMo dataset folder; ``generate`` (``llm_answerer``) runs the blind answerer."""
    videos = read_videos(folder)
    answers = None
    if generate is not None:
        items = [q for v in videos for q in v.questions]
        answers = blind_answers(items, generate)
    return audit(videos, answers, tasks=tasks, blind_model=blind_model)
