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
#: ... or when one holds the other as a run of words covering this share of its words (or only
#: repeats the other's words: "Press box" vs "Press box press box").
CONTAINED_SHARE = 0.6
#: Circular evaluation: each multiple-choice item is asked with its options rotated this many
#: times (at most once per option); it counts as answered only when every rotation picks the same
#: option (by content, not letter), so a model's letter habit cannot score.
ROTATIONS = 4
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
    "blind_answerable": "the blind answerer picked the key from the question and options alone, in every rotation of the options",
    "unverified_key": "the answer-key verifier, given the evidence the item was made from, picked another option in more "
                      "rotations than the key (under `--verify-rule strict`: did not pick the key in every rotation)",
    "unsupported": "a name, number or colour in the correct option appears nowhere in the transcript or title",
    "off_topic_distractors": "every wrong option is a phrase of 3+ words that shares no word with the video's texts, while "
                             "the correct option does: the item gives its key away without the video",
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
    #: the global view the GVQA/GVS items were made from ("" when unknown)
    summary: str = ""
    #: ``(start, end, text)`` of the English subtitle lines (``segments_en``, else ``segments``):
    #: the evidence of the window items
    lines: list[tuple[float, float, str]] = field(default_factory=list)
    #: every text the video gives (title, ``segments``, ``segments_en``): facts in a key must be in it
    transcript: str = ""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Video":
        """From a published LoMo row: ``segments_en`` and ``segments`` lines both count."""
        lines = []
        texts = [str(row.get("title") or "")]
        for column in ("segments_en", "segments"):
            for seg in row.get(column) or []:
                if seg and seg.get("start") is not None and seg.get("end") is not None:
                    lines.append((float(seg["start"]), float(seg["end"])))
                if seg and seg.get("text"):
                    texts.append(str(seg["text"]))
        english = row.get("segments_en") or row.get("segments") or []
        duration = row.get("duration")
        return cls(
            video_id=str(row.get("video_id") or ""),
            questions=[dict(q) for q in row.get("questions") or []],
            duration=float(duration) if isinstance(duration, (int, float)) and math.isfinite(duration) else None,
            subtitles=sorted(set(lines)),
            video=row.get("video"),
            summary=str(row.get("summary") or ""),
            lines=[(float(g["start"]), float(g["end"]), str(g.get("text") or "")) for g in english
                   if g and g.get("start") is not None and g.get("end") is not None],
            transcript="\n".join(t for t in texts if t.strip()),
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


def _contained(a: str, b: str, share: float = CONTAINED_SHARE) -> bool:
    """One option repeats the other's words (``"X"`` vs ``"X X"``: no new word) or holds the other
    as a run of words covering at least ``share`` of its words (``"boil water"`` vs
    ``"boil water now"``). ``a`` and ``b`` are normalised (``_norm``)."""
    short, long = sorted((a.split(), b.split()), key=len)
    if not short or len(short) == len(long):
        return False
    if set(long) <= set(short):
        return True
    if len(short) < 2 or len(short) < share * len(long):
        return False
    n = len(short)
    return any(long[i : i + n] == short for i in range(len(long) - n + 1))


def near_duplicate_options(item: Item, ratio: float = DUPLICATE_RATIO) -> list[tuple[str, str]]:
    """Pairs of letters whose options are the same after normalising, similar at ``ratio``, or
    one contained in the other (``_contained``: repetition, or most of the longer one)."""
    options = [(letter, _norm(text)) for letter, text in parse_options(item).items()]
    counts: dict[str, Counter] = {}
    pairs = []
    for i, (a, text_a) in enumerate(options):
        for b, text_b in options[i + 1 :]:
            if text_a == text_b or _contained(text_a, text_b) or _similar(text_a, text_b, ratio, counts):
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
        if off_topic_distractors(item, video):
            flags.append(Flag(qid, "off_topic_distractors", f"no wrong option shares a word with the video; {answer_letter(item)} does"))
        if video.transcript.strip() and not str(item.get("task")).startswith("VTG"):  # VTG keys are times
            missing = unsupported_facts(options.get(answer_letter(item), ""), video.transcript, str(item.get("question") or ""))
            if missing:
                flags.append(Flag(qid, "unsupported", f"not in the transcript or title: {', '.join(missing)}"))
    flags.extend(window_problems(item, video))
    return flags


# --------------------------------------------------------------------------------------------
# Facts in the key (a cheap lexical test)
# --------------------------------------------------------------------------------------------

COLOURS = frozenset(
    "red orange yellow green blue purple violet pink brown black white grey gray golden silver beige "
    "turquoise crimson scarlet maroon navy teal".split()
)
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
                      "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000"})
_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|[^\W\d_]+(?:'[^\W\d_]+)?")
#: Capitalised words that open a sentence and name nothing.
_NOT_NAMES = frozenset("i a an the he she it they we you this that these those there his her its their our my".split())


def _fact_tokens(text: str) -> set[str]:
    """Lower-cased words and numbers of ``text``, number words as digits."""
    return {_NUMBER_WORDS.get(t, t) for t in (w.lower().replace(",", "") for w in _TOKEN.findall(text or ""))}


def key_facts(text: str, names: bool = True) -> list[str]:
    """The checkable facts of an option: numbers (digits or number words), colour words and names
    (capitalised words; the first word only when the next one is capitalised too: "Real Madrid").
    ``names=False``: numbers and colours only."""
    words = _TOKEN.findall(text or "")
    facts: list[str] = []
    for i, word in enumerate(words):
        lower = word.lower()
        if word[0].isdigit() or lower in _NUMBER_WORDS or lower in COLOURS:
            facts.append(word)
        elif names and word[0].isupper() and len(word) > 1 and lower not in _NOT_NAMES:
            if i > 0 or (len(words) > 1 and words[1][0].isupper()):
                facts.append(word)
    return list(dict.fromkeys(facts))


_ASKS_NAME = re.compile(r"\b(name|named|called|who|whom|whose|team|brand|city|country)\b", re.I)


#: Words that say nothing about a video's content (for ``off_topic_distractors``).
_FUNCTION_WORDS = frozenset(
    "the and for with from are was were been its this that these those she they you his her their our your what "
    "which who whom how when where why does did has have had not yes into over under about after before then than "
    "there here very just also only can will would could should may might some any all each other more most one two".split()
)
_CONTENT = re.compile(r"[^\W\d_]{3,}")
#: A distractor is judged only when it says this much (short noun phrases such as "Sushi" or
#: "Swimming competition" are ordinary distractors a video need not mention).
OFF_TOPIC_MIN_WORDS = 3


def _content_words(text: str) -> set[str]:
    return {w.lower() for w in _CONTENT.findall(text or "")} - _FUNCTION_WORDS


def off_topic_distractors(item: Item, video: Video, min_words: int = OFF_TOPIC_MIN_WORDS) -> bool:
    """True when the correct option shares a content word with the video's texts (transcript,
    summary, subtitle lines, the question) and every other option is a phrase of
    ``min_words``+ content words that shares none: the options alone give the key away (the
    planted "absurd distractors"; a blind answerer with a letter habit cannot see it). Measured on
    the person-checked items of tests/fixtures/audit_items.json and the demo's: no clean item
    flagged (with ``min_words=2``: 1 of 20 each), 18 of 20 planted items caught."""
    if not is_multiple_choice(item) or str(item.get("task")).startswith("VTG"):
        return False
    options = parse_options(item)
    key = answer_letter(item)
    if key not in options or len(options) < 2:
        return False
    vocabulary = _content_words(" ".join([video.transcript, video.summary, str(item.get("question") or ""),
                                          *(t for _, _, t in video.lines)]))
    if not _content_words(options[key]) & vocabulary:
        return False
    others = [_content_words(text) for letter, text in options.items() if letter != key]
    return all(len(words) >= min_words and not words & vocabulary for words in others)


def title_case(text: str) -> bool:
    """Every word of four letters or more is capitalised ("Old Town Walkthrough"), two at least:
    capitals there are style, not names."""
    long = [w for w in _TOKEN.findall(text or "") if len(w) >= 4 and not w[0].isdigit()]
    return len(long) >= 2 and all(w[0].isupper() for w in long)


def unsupported_facts(key: str, evidence: str, question: str = "") -> list[str]:
    """The facts of ``key`` (``key_facts``) that ``evidence`` never mentions (case-insensitive;
    "3" and "three" are the same). A title-cased key's capitals count as names only when the
    ``question`` asks for one (who, name, team, city ...)."""
    have = _fact_tokens(evidence)
    names = not title_case(key) or bool(_ASKS_NAME.search(question or ""))
    return [f for f in key_facts(key, names) if _NUMBER_WORDS.get(f.lower(), f.lower().replace(",", "")) not in have]


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

VERIFY = Prompt(
    "verify",
    "1",
    "You check the answer key of a multiple-choice test about a video. You are given the evidence "
    "the question was written from. Pick the option that the evidence supports. Answer with JSON only.",
    'Evidence ({kind}):\n{evidence}\n\nQuestion: {question}\nOptions:\n{options}\nReply as JSON: {{"answer": "<letter>"}}',
)

#: Tasks whose items were made from the video's summary, and from their window's subtitle lines.
SUMMARY_TASKS = ("GVQA", "GVS")
WINDOW_TASKS = ("SVS", "SVQA", "VVQA")

#: ``(messages_list, task) -> one dict or exception per item`` (the LLM layer's generate_json)
JsonGenerator = Callable[[list, Any], list]


class Picks(dict):
    """``question_id -> pick`` of a circular evaluation: the letter (in the item's own order) that
    won every rotation, ``""`` when every rotation answered but not with the same option, None
    when a rotation got no valid answer (not counted). ``rotations``: per item, the letter each
    rotation picked, in the item's own order (``""``: no valid answer)."""

    def __init__(self, picks: dict[str, str | None] | None = None, rotations: dict[str, list[str]] | None = None):
        super().__init__(picks or {})
        self.rotations: dict[str, list[str]] = dict(rotations or {})


def as_picks(answers: dict[str, str | None] | None) -> Picks | None:
    """``answers`` as ``Picks`` (a plain dict: one pick per item, taken as it is)."""
    if answers is None or isinstance(answers, Picks):
        return answers
    return Picks(answers)


def rotation_orders(item: Item, rotations: int = ROTATIONS) -> list[list[str]]:
    """Per rotation, the item's own letters in the order they are shown (A B C D, B C D A, ...):
    every option is shown once in every position when there are ``rotations`` options."""
    letters = list(parse_options(item))
    return [letters[r:] + letters[:r] for r in range(min(rotations, len(letters)))]


def _shown_options(item: Item, order: Sequence[str] | None) -> str:
    options = parse_options(item)
    order = list(options) if order is None else order
    return "\n".join(f"{_LETTERS[i]}: {options[letter]}" for i, letter in enumerate(order))


def circular_pick(rotations: Sequence[str]) -> str | None:
    """The letter every rotation picked, ``""`` when they differ, None when one gave none."""
    if not rotations or any(not r for r in rotations):
        return None
    return rotations[0] if len(set(rotations)) == 1 else ""


#: When the key verifier's circular picks flag an item ``unverified_key`` (``audit --verify-rule``).
#: With ``ROTATIONS`` rotations, a verifier that only follows the shown order (the embedded 1.5B
#: often answers the first option it sees) gives every option one vote: that tells nothing about
#: the key, so the default flags only picks that point away from it. Measured on the same picks
#: (``bench_audit.py --planted``): strict caught 16 of 16 planted key defects and flagged 7 of 15
#: clean items; against caught 13 of 16 and flagged none; refuted caught 7 of 16.
VERIFY_RULES = {
    "against": "another option won more rotations than the key (the evidence points away from it)",
    "strict": "the key did not win every rotation (a verifier that cannot tell flags too)",
    "refuted": "one other option won every rotation",
}
VERIFY_RULE = "against"


def key_votes(picks: "Picks", qid: str, key: str) -> tuple[int, str, int]:
    """``(rotations the key won, the other option that won most, how many it won)`` for one
    item (``"?"``, 0 when no other option won one)."""
    got = Counter(r for r in picks.rotations.get(qid) or [] if r)
    won = got.pop(key, 0)
    leader, most = max(got.items(), key=lambda kv: kv[1], default=("?", 0))
    return won, leader, most


def key_unverified(picks: "Picks", qid: str, key: str, rule: str = VERIFY_RULE) -> bool:
    """Whether the verifier's picks of one item flag its key under ``rule`` (``VERIFY_RULES``).
    An item with a rotation that got no valid answer (pick None) is never flagged: not measured."""
    pick = picks.get(qid)
    if pick is None or pick == key:
        return False
    if rule == "refuted":
        return bool(pick)
    if rule == "against":
        won, _, other = key_votes(picks, qid, key)
        return other > won
    return True


def blind_messages(item: Item, order: Sequence[str] | None = None) -> list[dict[str, str]]:
    """The blind answerer's chat: the question and options (shown in ``order``), nothing about
    the video."""
    return BLIND.messages(question=str(item.get("question") or "").strip(), options=_shown_options(item, order))


def evidence(item: Item, video: Video) -> tuple[str, str] | None:
    """``(kind, text)``: what the item was made from. The summary for GVQA/GVS; for SVS, SVQA and
    VVQA the English subtitle lines that overlap the item's window. None: nothing to verify with
    (another task, no summary, no line in the window)."""
    task = str(item.get("task") or "")
    if task in SUMMARY_TASKS:
        return ("the video's summary", video.summary.strip()) if video.summary.strip() else None
    if task in WINDOW_TASKS:
        window = _window(item)
        if window is None:
            return None
        start, end = window
        texts = [t.strip() for s, e, t in video.lines if s < end - TIME_TOLERANCE and e > start + TIME_TOLERANCE and t.strip()]
        return ("the subtitle lines of the question's time window", "\n".join(texts)) if texts else None
    return None


def verify_messages(item: Item, proof: tuple[str, str], order: Sequence[str] | None = None) -> list[dict[str, str]]:
    """The key verifier's chat: the evidence, the question and the options (shown in ``order``)."""
    kind, text = proof
    return VERIFY.messages(kind=kind, evidence=text, question=str(item.get("question") or "").strip(),
                           options=_shown_options(item, order))


def choice_task(name: str, n: int) -> Any:
    """The tiny answer schema: ``{"answer": one of the n shown letters}``."""
    from lomo_datasets.llm.backends import TaskSpec

    letters = list(_LETTERS[:n])
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": letters}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    return TaskSpec(f"{name}.{''.join(letters)}", schema, max_new_tokens=16)


def blind_task(letters: Sequence[str]) -> Any:
    return choice_task("blind", len(letters))


#: One request of a circular evaluation: ``(messages, task, order)``.
Rotation = tuple[list[dict[str, str]], Any, list[str]]


def blind_requests(item: Item) -> list[Rotation]:
    """The blind answerer's requests for one item, one per rotation."""
    return [(blind_messages(item, order), choice_task("blind", len(order)), order) for order in rotation_orders(item)]


def verify_requests(item: Item, video: Video) -> list[Rotation]:
    """The key verifier's requests for one item, one per rotation (none without evidence)."""
    proof = evidence(item, video)
    if proof is None or not is_multiple_choice(item):
        return []
    return [(verify_messages(item, proof, order), choice_task("verify", len(order)), order) for order in rotation_orders(item)]


def decode_pick(result: Any, order: Sequence[str]) -> str:
    """The item's own letter for one rotation's reply (``""``: no valid reply)."""
    if isinstance(result, dict) and isinstance(result.get("answer"), str):
        shown = result["answer"].strip().upper()[:1]
        if shown and shown in _LETTERS[: len(order)]:
            return order[_LETTERS.index(shown)]
    return ""


def circular_answers(requests: dict[str, list[Rotation]], generate: JsonGenerator, batch_size: int = 64) -> Picks:
    """Run every rotation of every item (``question_id -> requests``), ``batch_size`` items (all
    their rotations) per ``generate`` call, and return their ``Picks``."""
    picks = Picks()
    ids = [qid for qid, rots in requests.items() if rots]
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        flat = [(qid, r) for qid in chunk for r in requests[qid]]
        results = generate([r[0] for _, r in flat], [r[1] for _, r in flat])
        got: dict[str, list[str]] = defaultdict(list)
        for (qid, (_, _, order)), result in zip(flat, results):
            if not isinstance(result, dict):
                logger.info("circular answer for %s: %s", qid, result)
            got[qid].append(decode_pick(result, order))
        for qid in chunk:
            picks.rotations[qid] = got[qid]
            picks[qid] = circular_pick(got[qid])
    return picks


def blind_settings(values: dict[str, Any] | None = None, embedded: bool = False) -> Any:
    """``LLMSettings`` for the blind answerer and the key verifier from ``{setting: value}``
    (``--llm KEY=VALUE``); ``embedded`` makes the embedded chat model the default, on the same
    backend and model files as ``run --embedded`` (``LLMStage.embedded_settings``: CTranslate2
    int8). Unknown names fail at once."""
    from lomo_datasets.llm.stage import LLMStage
    from lomo_datasets.llm.backends import LLMSettings

    values = dict(values or {})
    names = [f.name for f in dataclasses.fields(LLMSettings)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise SettingError(f"blind answerer: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    if embedded and "model" not in values:
        values["model"] = LLMStage.embedded_model
        for key, value in LLMStage.embedded_settings.items():
            values.setdefault(key, value)
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


def blind_answers(items: Sequence[Item], generate: JsonGenerator, batch_size: int = 64) -> Picks:
    """The blind answerer's circular picks for every multiple-choice item (``Picks``)."""
    mc = [item for item in items if is_multiple_choice(item) and parse_options(item)]
    return circular_answers({str(i.get("question_id")): blind_requests(i) for i in mc}, generate, batch_size)


def verify_answers(videos: Sequence[Video], generate: JsonGenerator, batch_size: int = 64) -> Picks:
    """The key verifier's circular picks for every multiple-choice item that has evidence."""
    requests = {str(q.get("question_id")): verify_requests(q, v) for v in videos for q in v.questions}
    return circular_answers(requests, generate, batch_size)


@dataclass
class BlindFigure:
    """Circular accuracy of one task (or ``all``): the blind answerer's against chance, or the
    key verifier's (the verified-key rate)."""

    asked: int
    answered: int
    correct: int
    accuracy: float | None
    ci_low: float
    ci_high: float
    chance: float
    correct_ids: list[str] = field(default_factory=list)
    #: consistent picks per letter (a letter habit shows here, not in the accuracy)
    picks: dict[str, int] = field(default_factory=dict)
    #: items answered in every rotation but not with the same option
    inconsistent: int = 0

    @property
    def above_chance(self) -> bool:
        return self.answered > 0 and self.ci_low > self.chance


def blind_figure(items: Sequence[Item], answers: dict[str, str | None]) -> BlindFigure:
    """Right = the key won every rotation; answered = every rotation gave a valid answer."""
    asked = [item for item in items if str(item.get("question_id")) in answers]
    answered = [item for item in asked if answers[str(item.get("question_id"))] is not None]
    right = [item for item in answered if answers[str(item.get("question_id"))] == answer_letter(item)]
    low, high = wilson_interval(len(right), len(answered))
    chance = sum(chance_level(i) for i in answered) / len(answered) if answered else 0.25
    consistent = [str(answers[str(i.get("question_id"))]) for i in answered if answers[str(i.get("question_id"))]]
    return BlindFigure(
        asked=len(asked), answered=len(answered), correct=len(right),
        accuracy=len(right) / len(answered) if answered else None, ci_low=low, ci_high=high, chance=chance,
        correct_ids=[str(i.get("question_id")) for i in right],
        picks=dict(sorted(Counter(consistent).items())),
        inconsistent=len(answered) - len(consistent),
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
    #: the key verifier's circular picks scored against the keys (None: not run)
    verified: BlindFigure | None = None
    unverified_key_items: int = 0
    unsupported_items: int = 0


@dataclass
class AuditReport:
    tasks: dict[str, TaskFigures]
    coverage: dict[str, Any]
    flags: list[Flag]
    blind_model: str | None = None
    #: ``question_id -> the blind answerer's circular pick`` (``Picks``); None: not run
    blind_answers: dict[str, str | None] | None = None
    verifier_model: str | None = None
    #: ``question_id -> the key verifier's circular pick`` (``Picks``); None: not run
    verified_answers: dict[str, str | None] | None = None
    #: which verifier picks flag ``unverified_key`` (a key of ``VERIFY_RULES``)
    verify_rule: str = VERIFY_RULE

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
            "blind_answers": None if self.blind_answers is None else dict(self.blind_answers),
            "blind_rotations": getattr(self.blind_answers, "rotations", None) or None,
            "verifier_model": self.verifier_model,
            "verified_answers": None if self.verified_answers is None else dict(self.verified_answers),
            "verified_rotations": getattr(self.verified_answers, "rotations", None) or None,
            "verify_rule": self.verify_rule if self.verified_answers is not None else None,
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
    verified: dict[str, str | None] | None = None,
    verifier_model: str | None = None,
    verify_rule: str = VERIFY_RULE,
) -> AuditReport:
    """Every figure per task and overall, and the per-item flags. ``answers`` are the blind
    answerer's circular picks (``blind_answers``), ``verified`` the key verifier's
    (``verify_answers``); without them those figures are not reported. ``verify_rule`` (a key of
    ``VERIFY_RULES``) says which verifier picks flag ``unverified_key``."""
    if verify_rule not in VERIFY_RULES:
        raise ValueError(f"verify rule {verify_rule!r}: use one of {', '.join(VERIFY_RULES)}")
    answers, verified = as_picks(answers), as_picks(verified)
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
        flags.extend(Flag(qid, "blind_answerable", _pick_detail("blind pick", answers, qid)) for qid in sorted(right))
    if verified is not None:
        for item in items:
            qid = str(item.get("question_id"))
            pick = verified.get(qid)
            if not key_unverified(verified, qid, answer_letter(item), verify_rule):
                continue
            if pick:
                text = parse_options(item).get(pick, "")
                detail = f"{_pick_detail('the verifier picked', verified, qid)}: {text[:60]!r}; key {answer_letter(item)}"
            else:
                won, leader, most = key_votes(verified, qid, answer_letter(item))
                detail = (f"no consistent pick (rotations: {', '.join(verified.rotations.get(qid) or []) or '?'}): "
                          f"{leader} won {most}, the key {answer_letter(item)} {won}")
            flags.append(Flag(qid, "unverified_key", detail))
    order = {str(i.get("question_id")): k for k, i in enumerate(items)}
    flags.sort(key=lambda f: (order.get(f.question_id, len(order)), f.reason))
    by_task: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_task[str(item.get("task"))].append(item)
    figures = {task: _figures(by_task[task], flags, repeats, answers, verified) for task in sorted(by_task, key=_task_order)}
    figures["all"] = _figures(items, flags, repeats, answers, verified)
    return AuditReport(figures, coverage(videos, tasks), flags, blind_model, answers, verifier_model, verified, verify_rule)


def _pick_detail(what: str, picks: Picks, qid: str) -> str:
    n = len(picks.rotations.get(qid) or [])
    return f"{what} {picks[qid]}" + (f" in {n} of {n} rotations" if n else "")


def _figures(items: list[Item], flags: list[Flag], repeats: dict[str, str], answers, verified=None) -> TaskFigures:
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
        verified=blind_figure(mc, verified) if verified is not None else None,
        unverified_key_items=len(reasons["unverified_key"]),
        unsupported_items=len(reasons["unsupported"]),
    )


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


#: One line each on what the two LLM figures mean (audit.md, the card, the run summary).
BLIND_MEANING = (
    "Blind accuracy: the share of multiple-choice items an LLM answers right from the question and options "
    f"alone (no video, no subtitles), counted only when the key wins in all {ROTATIONS} rotations of the options "
    "(circular evaluation: a letter habit scores nothing); at or below chance (25%) is good; ▲ marks a task whose "
    "whole 95% interval is above chance: items answerable without watching."
)
VERIFIED_MEANING = (
    "Verified keys: the share of multiple-choice items whose key an LLM picks in all "
    f"{ROTATIONS} rotations when given the evidence the item was made from (the summary for GVQA/GVS, the "
    "window's subtitle lines for SVS/SVQA/VVQA); high is good. Items where another option wins more rotations "
    "than the key are flagged `unverified_key` (a wrong key, or a window that does not hold the answer); the rest "
    "are undecided (a verifier too weak to tell, e.g. one that picks the first shown option every time)."
)


def blind_cell(blind: BlindFigure | None, mark_chance: bool = True) -> str:
    if blind is None or not blind.answered:
        return "not run" if blind is None else "– (no choices)" if not blind.asked else "no answers"
    mark = " ▲" if mark_chance and blind.above_chance else ""
    return f"{_pct(blind.accuracy)} [{_pct(blind.ci_low)}, {_pct(blind.ci_high)}] of {blind.answered}{mark}"


def figure_line(name: str, fig: BlindFigure | None) -> str | None:
    """``blind accuracy 8% [2%, 25%] of 20`` (None when not run or nothing answered)."""
    if fig is None or not fig.answered:
        return None
    return f"{name} {_pct(fig.accuracy)} [{_pct(fig.ci_low)}, {_pct(fig.ci_high)}] of {fig.answered}"


def audit_table(report: AuditReport) -> str:
    """The per-task Markdown table (the card shows it; ``audit.md`` starts with it)."""
    rows = [
        "| task | items | blind accuracy [95% CI] | verified keys [95% CI] | unsupported facts | answer longest | letters | letter balance p | near-dup options | options repeat | windows: outside / off subtitles / text mismatch | flagged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, fig in report.tasks.items():
        letters = " ".join(f"{k}{v}" for k, v in fig.letters.items()) or "–"
        p = "–" if fig.letter_p is None else f"{fig.letter_p:.2f}"
        windows = f"{fig.window_outside_video} / {fig.window_off_subtitles} / {fig.window_text_mismatch} of {fig.windows}" if fig.windows else "–"
        name = f"**{task}**" if task == "all" else task
        rows.append(
            f"| {name} | {fig.items} | {blind_cell(fig.blind)} | {blind_cell(fig.verified, False)} | {fig.unsupported_items} | "
            f"{_pct(fig.longest_rate)} | {letters} | {p} | "
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
        f"- {BLIND_MEANING} Answerer: {report.blind_model or 'not run'}; chance is {_pct(chance)}.",
        f"- {VERIFIED_MEANING} Verifier: {report.verifier_model or 'not run'}"
        + (f"; `unverified_key` when {VERIFY_RULES[report.verify_rule]} (rule `{report.verify_rule}`)."
           if report.verified_answers is not None else "."),
        "- Unsupported facts: items whose correct option names a name, number or colour that the transcript and "
        "title never mention.",
        "- Answer longest: share of items whose correct option is the longest (chance 25%). "
        "Letter balance p: chi-square test that every letter is equally likely (small p: unbalanced).",
        "",
        *([f"Blind consistent picks per letter: {' '.join(f'{k}{v}' for k, v in report.overall.blind.picks.items()) or 'none'}; "
           f"no consistent pick: {report.overall.blind.inconsistent} of {report.overall.blind.answered}.", ""]
          if report.overall.blind and report.overall.blind.answered else []),
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

_COLUMNS = ("video_id", "video", "title", "duration", "questions", "segments", "segments_en", "summary")
#: The columns ``report_from_rows`` reads (``blind_answers``, ``verified_answers``: the blind
#: and verify steps' picks).
ROW_COLUMNS = (*_COLUMNS, "blind_answers", "verified_answers")


def answers_from_rows(rows: Sequence[dict[str, Any]], column: str = "blind_answers") -> Picks | None:
    """A picks column (``blind_answers``, ``verified_answers``) as ``Picks`` (None: the column
    is absent). An entry with ``rotations`` is scored from them; one without (written before
    circular evaluation) is its one letter, ``""`` meaning no answer."""
    if not any(column in row for row in rows):
        return None
    answers = Picks()
    for row in rows:
        for entry in row.get(column) or []:
            qid = str(entry.get("question_id"))
            rotations = entry.get("rotations")
            if rotations:
                answers.rotations[qid] = [str(r or "") for r in rotations]
                answers[qid] = circular_pick(answers.rotations[qid])
            else:
                answers[qid] = entry.get("answer") or None
    return answers


def picks_column(questions: Sequence[Item], picks: Picks) -> list[dict[str, Any]]:
    """A row's picks column (features.BLIND_ANSWERS): per asked item, the circular pick (``""``:
    none) and the letter each rotation picked."""
    return [
        {"question_id": str(q.get("question_id")), "answer": picks[str(q.get("question_id"))] or "",
         "rotations": list(picks.rotations.get(str(q.get("question_id")), []))}
        for q in questions if str(q.get("question_id")) in picks
    ]


def report_from_rows(rows: Sequence[dict[str, Any]], blind_model: str | None = None, verifier_model: str | None = None) -> AuditReport:
    """The audit of published rows, with the picks of their ``blind_answers`` and
    ``verified_answers`` columns."""
    return audit([Video.from_row(r) for r in rows], answers_from_rows(rows), blind_model=blind_model,
                 verified=answers_from_rows(rows, "verified_answers"), verifier_model=verifier_model)


def blind_model(provenance: Any, step_name: str = "blind") -> str | None:
    """``backend:model`` of the recipe's ``blind`` (or ``verify``) step (from a card
    ``Provenance``), or None."""
    for step in getattr(provenance, "steps", None) or []:
        if step.name == step_name and step.settings.get("enabled", True):
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
        "blind_line": figure_line("blind accuracy", report.overall.blind),
        "blind_meaning": BLIND_MEANING,
        "verified_line": figure_line("verified keys", report.overall.verified),
        "verified_meaning": VERIFIED_MEANING,
        "verifier_model": report.verifier_model,
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
    tasks: Sequence[str] | None = None, blind: bool = True, verify: bool = True, verify_rule: str = VERIFY_RULE,
) -> AuditReport:
    """Audit a LoMo dataset folder; ``generate`` (``llm_answerer``) runs the blind answerer (with
    ``blind``) and the key verifier (with ``verify``), both with circular evaluation;
    ``verify_rule`` (``VERIFY_RULES``) says which verifier picks flag ``unverified_key``."""
    videos = read_videos(folder)
    answers = verified = None
    if generate is not None:
        if blind:
            answers = blind_answers([q for v in videos for q in v.questions], generate)
        if verify:
            verified = verify_answers(videos, generate)
    return audit(videos, answers, tasks=tasks, blind_model=blind_model if answers is not None else None,
                 verified=verified, verifier_model=blind_model if verified is not None else None, verify_rule=verify_rule)
