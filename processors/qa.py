"""QA generation (LoMo stage 4): six items per video from its two views (LoMo's tasks).

``GenerateQA`` reads ``summary`` and ``temporal`` (processors/compress.py) and the English
subtitle lines, asks the LLM (one batched, schema-constrained request per task over the batch's
rows) for the GVQA and GVS items, and builds the window items from the temporal view:

- GVQA: a question about the video, its answer and three distractors (LLM, from the summary);
- GVS: "what is the video about" (a template drawn per video), the answer and three other topics
  (LLM, from the summary);
- SVS: "what happens between S and E seconds" (a template); the answer is the picked subtitle
  line, the distractors are other lines of the same video (they happen at other times);
- SVQA / VVQA: the temporal question with / without the "From S seconds to E seconds in the
  video," prefix; the answer and distractors from the temporal view;
- VTG: LoMo's grounding item: the picked line's window and the temporal conclusion as its
  description (no question, options or answer);
- VTG_MC (an extra task, off by default: ``extra_tasks=["VTG_MC"]``): VTG as a multiple choice,
  "when does <description> happen", the options windows of subtitle lines.

Every window is a subtitle line's ``[start, end]`` inside ``[0, duration]``, and a question's
text writes the same numbers as its ``window`` (``str`` of the float, as LoMo-Pipe does).
Options are shuffled with a generator seeded from the video id; the correct letter of a video's
k-th multiple-choice item is ``(offset + k) % 4`` with a seeded ``offset`` (so A-D are balanced
over any number of videos, not just in expectation), the distractors fill the other letters in
seeded order. Item ids are ``<video_id>_01`` .. ``<video_id>_06`` (``_07`` for VTG_MC).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from datasets import Features

from lomo_datasets.core import features as F
from lomo_datasets.llm import prompts as P
from lomo_datasets.formats import EXTRA_TASKS, TASKS  # noqa: F401  (the LoMo task lists, defined once in formats)
from lomo_datasets.llm.stage import LLMStage, Requests, TaskSpec
from lomo_datasets.processors import grounding as G
from lomo_datasets.processors.aggregate import stop_phrase
from lomo_datasets.processors.compress import _distinct, english_segments, usable_lines
from lomo_datasets.core.stage import SettingError, seeded_random

logger = logging.getLogger(__name__)

LETTERS = "ABCD"


#: Options that talk about the prompt's evidence instead of the video (bench_yield's en_09 GVQA,
#: "What is the name of the cat?" keyed "The cat's name is not specified in the summary.").
META_PHRASES = ["the summary", "not specified", "not stated", "not mentioned in"]


def _choice_task(name: str, prompt: P.Prompt, with_question: bool, max_chars: int) -> TaskSpec:
    """An invented name, number or colour in a key (en_08's GVQA "What is the name of the
    woman?" keyed "The woman is named Sarah.") is not refused here but flagged by the audit
    (``unsupported``): refused, the 1.5B asked "What colour is the pasta?" again in every try
    and the row failed (test_embedded_qwen)."""
    short = {"type": "string", "minLength": 1, "maxLength": max_chars}
    props: dict[str, Any] = {}
    if with_question:
        props["question"] = {"type": "string", "minLength": 5, "maxLength": 2 * max_chars}
    props["answer"] = short
    props["wrong"] = {"type": "array", "items": short, "minItems": 3, "maxItems": 3}
    schema = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    def check(obj: dict[str, Any]) -> None:
        if with_question and not obj["question"].strip():
            raise ValueError(f"{name}: empty question")
        _distinct([obj["answer"], *obj["wrong"]], f"{name} options")
        hit = stop_phrase([obj.get("question", ""), obj["answer"], *obj["wrong"]])
        if hit:  # QC would drop the item: retry instead
            raise ValueError(f"{name}: mentions '{hit}' (write about what the video shows)")
        hit = stop_phrase([obj.get("question", ""), obj["answer"], *obj["wrong"]], META_PHRASES)
        if hit:
            raise ValueError(f"{name}: says '{hit}', which is about the text you were given: ask about what happens in the video")

        if prompt.copies_example(obj):
            raise ValueError(f"{name}: copied the prompt's example")

    budget = ((6 if with_question else 4) * max_chars) // 3 + 40
    return TaskSpec(name, schema, max_new_tokens=budget, check=check, surplus=("wrong",))


def window_text(start: float, end: float) -> str:
    return f"from {P.format_seconds(start)} to {P.format_seconds(end)} seconds"


def _distinct_other(
    lines: list[tuple[int, dict[str, Any]]], picked_index: int, window: list[float], picked_text: str
) -> tuple[list[str], list[list[float]]]:
    """The other lines' distinct texts and distinct windows (SVS / VTG_MC distractors)."""
    others = [seg for k, seg in lines if k != picked_index]
    texts, seen = [], {" ".join(picked_text.lower().split())}
    for seg in others:
        key = " ".join(seg["text"].lower().split())
        if key not in seen:
            seen.add(key)
            texts.append(seg["text"].strip())
    windows = []
    for seg in others:
        w = [float(seg["start"]), float(seg["end"])]
        if w != window and w not in windows:
            windows.append(w)
    return texts, windows


def _svs_distractors(rng: Any, others: list[str], answer: str, notes: dict[str, Any]) -> list[str]:
    """Three other lines, drawn at random; when the drawn lines would make the answer the
    longest option by the audit's rule, the three other lines closest to it in length."""
    drawn = rng.sample(others, 3)
    notes["svs_longest_before"] = G.key_is_longest(answer, drawn)
    if not notes["svs_longest_before"]:
        return drawn
    return sorted(others, key=lambda t: (abs(len(t) - len(answer)), t))[:3]


def build_items(
    video_id: str,
    temporal: dict[str, Any],
    lines: list[tuple[int, dict[str, Any]]],
    gvqa: dict[str, Any],
    gvs: dict[str, Any],
    extra_tasks: tuple[str, ...] = (),
    notes: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The items of one video: the six LoMo tasks, then the extra tasks asked for (raises
    ``ValueError`` when the video cannot make them). ``notes`` (a dict) gets what the bias
    repair did to SVS (``svs_longest_before``)."""
    notes = {} if notes is None else notes
    rng = seeded_random(video_id, "qa")
    offset = rng.randrange(4)
    picked = dict(lines).get(temporal["index"])
    if picked is None:
        raise ValueError(f"temporal line {temporal['index']} is not a usable subtitle line")
    start, end = float(picked["start"]), float(picked["end"])
    window = [start, end]
    other_texts, other_windows = _distinct_other(lines, temporal["index"], window, picked["text"])
    if len(other_texts) < 3:
        raise ValueError(
            f"too few distinct subtitle lines ({len(other_texts) + 1} distinct of {len(lines)}) for SVS distractors; "
            "at least 4 are needed"
        )
    if "VTG_MC" in extra_tasks and len(other_windows) < 3:
        raise ValueError(f"too few distinct subtitle windows ({len(lines)} lines) for VTG_MC distractors; at least 4 are needed")

    for wrong in temporal["wrong"]:
        if G.is_the_line(wrong, picked["text"]):
            raise ValueError(f"temporal: the wrong answer '{wrong[:40]}' is the window's own line (SVQA/VVQA distractor); rerun compress")
    s, e = P.format_seconds(start), P.format_seconds(end)
    question = temporal["question"].strip()
    conclusion = temporal["conclusion"].strip()
    prefixed = P.TIME_PREFIX.format(start=s, end=e) + " " + (question[:1].lower() + question[1:])
    choices = [
        ("GVQA", gvqa["question"].strip(), gvqa["answer"], gvqa["wrong"], [], ""),
        ("GVS", rng.choice(P.GVS_QUESTIONS), gvs["answer"], gvs["wrong"], [], ""),
        ("SVS", rng.choice(P.SVS_QUESTIONS).format(start=s, end=e), picked["text"].strip(),
         _svs_distractors(rng, other_texts, picked["text"].strip(), notes), window, ""),
        ("SVQA", prefixed, temporal["answer"], temporal["wrong"], window, ""),
        ("VVQA", question, temporal["answer"], temporal["wrong"], window, ""),
    ]
    if "VTG_MC" in extra_tasks:  # its own generator: asking for it leaves the six items as they were
        rng_mc = seeded_random(video_id, "qa", "VTG_MC")
        choices.append(("VTG_MC", P.VTG_QUESTION.format(description=conclusion), window_text(start, end),
                        [window_text(*w) for w in rng_mc.sample(other_windows, 3)], window, conclusion))
    items = []
    for k, (task, text, answer, wrong, win, description) in enumerate(choices):
        position = (offset + k) % 4
        distractors = [w.strip() for w in wrong]
        (rng_mc if task == "VTG_MC" else rng).shuffle(distractors)
        options = distractors[:position] + [answer.strip()] + distractors[position:]
        items.append({"task": task, "question": text, "options": [f"{LETTERS[j]}: {o}" for j, o in enumerate(options)],
                      "answer": LETTERS[position], "window": list(win), "descriptions": description})
    # VTG is LoMo's grounding item: the window and its description, no question or options.
    items.insert(5, {"task": "VTG", "question": "", "options": [], "answer": "", "window": list(window),
                     "descriptions": conclusion})
    return [{"question_id": f"{video_id}_{n:02d}", **item} for n, item in enumerate(items, 1)]


@dataclass
class _Pending:
    requests: Requests
    row: dict[str, Any]


#: The tasks whose distractors the bias repair may write again (SVS draws other lines instead;
#: SVQA/VVQA's come from the temporal view, repaired by compress where the line is checked).
REPAIRED = ("GVQA", "GVS")


@dataclass
class GenerateQA(LLMStage):
    """Writes ``questions`` (six items per video, plus ``extra_tasks``), appends its prompts
    to ``prompts`` and its entries to ``generation``.

    Bias repair (``repair_longest``): when a GVQA/GVS key is the longest option by the audit's
    rule (``audit.checks.answer_is_longest`` with its flag margin), the LLM writes the
    distractors again at comparable lengths (bounded by ``max_tries``); an item still biased
    keeps its first distractors. ``generation`` counts the multiple-choice items whose key is
    longest before and after (``answer_longest_before`` / ``answer_longest_after``)."""

    name: ClassVar[str] = "qa"
    version: ClassVar[str] = "3+" + P.digest()
    reads: ClassVar[tuple[str, ...]] = ("video_id", "summary", "temporal", "segments")  # and segments_en, duration, prompts
    #: ``--embedded``: shorter options for the 1.5B model on CPU (``--set qa.option_max_chars=100``
    #: restores them).
    embedded_settings: ClassVar[dict[str, Any]] = {**LLMStage.embedded_settings, "option_max_chars": 60}
    kept_on_error: ClassVar[tuple[str, ...]] = ("generation",)

    option_max_chars: int = 100
    extra_tasks: list[str] = field(default_factory=list)
    repair_longest: bool = True

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.option_max_chars, int) or self.option_max_chars < 10:
            raise SettingError(f"qa.option_max_chars={self.option_max_chars!r}: use an integer >= 10")
        if not isinstance(self.extra_tasks, (list, tuple)) or set(self.extra_tasks) - set(EXTRA_TASKS):
            raise SettingError(f"qa.extra_tasks={self.extra_tasks!r}: use a list of {list(EXTRA_TASKS)} (or [])")

    def features(self) -> Features:
        return F.merge(F.QA, {"generation": F.GENERATION})

    def requests(self, row: dict[str, Any]) -> Requests:
        if not row.get("summary") or not row.get("temporal"):
            raise ValueError("no summary/temporal view: run compress first")
        usable_lines(english_segments(row), row.get("duration"))  # a row without lines fails before any call
        return {
            "GVQA": (P.GVQA.messages(summary=row["summary"]), _choice_task("GVQA", P.GVQA, True, self.option_max_chars)),
            "GVS": (P.GVS.messages(summary=row["summary"]), _choice_task("GVS", P.GVS, False, self.option_max_chars)),
        }

    def prepare(self, row: dict[str, Any]) -> _Pending:
        return _Pending(self.requests(row), row)

    def run_batch(self, items: list[_Pending]) -> list[Any]:
        """GVQA and GVS for every row, then one more call for the keys that are the longest option."""
        results = [
            next((a for a in per.values() if isinstance(a, BaseException)), None) or {**per, "longest_before": 0, "rewritten": 0}
            for per in self.answers_per_key([item.requests for item in items])
        ]
        asks, owners = [], []
        for n, result in enumerate(results):
            if isinstance(result, BaseException):
                continue
            for task in REPAIRED:
                answer = result[task]
                if G.key_is_longest(answer["answer"], answer["wrong"]):
                    result["longest_before"] += 1
                    if self.repair_longest:
                        question = answer.get("question") or P.GVS_QUESTIONS[0]
                        asks.append(G.distractor_request(question, answer["answer"], self.option_max_chars))
                        owners.append((n, task))
        outputs = self.llm.generate_json([m for m, _ in asks], [t for _, t in asks]) if asks else []
        for (n, task), out in zip(owners, outputs):
            if isinstance(out, BaseException):
                logger.info("qa: %s: %s distractors not repaired: %s", items[n].row.get("video_id"), task, out)
                continue
            try:  # the task's own check too (stop phrases, copies of the prompt's example)
                candidate = {**results[n][task], "wrong": out["wrong"]}
                _choice_task(task, getattr(P, task), task == "GVQA", self.option_max_chars).check(candidate)
            except ValueError as exc:
                logger.info("qa: %s: %s repaired distractors refused: %s", items[n].row.get("video_id"), task, exc)
                continue
            results[n][task] = candidate
            results[n]["rewritten"] += 1
        return results

    def finish(self, row: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
        lines = usable_lines(english_segments(row), row.get("duration"))
        notes: dict[str, Any] = {}
        items = build_items(row["video_id"], row["temporal"], lines, answers["GVQA"], answers["GVS"],
                            tuple(self.extra_tasks), notes)
        provenance = [P.GVQA.provenance(), P.GVS.provenance()] + ([P.DISTRACTORS.provenance()] if answers.get("rewritten") else [])
        before = [p for p in (row.get("prompts") or []) if p["name"] not in {q["name"] for q in provenance}]
        longest = [q for q in items if q["task"] in REPAIRED + ("SVS",) and
                   G.key_is_longest(*_answer_and_wrong(q))]
        svs_before = int(bool(notes.get("svs_longest_before")))  # SVS: the random draw's, before lines of comparable length
        log = [e for e in (row.get("generation") or []) if e.get("stage") != self.name]
        log += [
            {"stage": self.name, "event": "answer_longest_before", "count": int(answers.get("longest_before", 0)) + svs_before},
            {"stage": self.name, "event": "answer_longest_after", "count": len(longest)},
            {"stage": self.name, "event": "distractors_rewritten", "count": int(answers.get("rewritten", 0))},
            {"stage": self.name, "event": "items_checked", "count": len(REPAIRED) + 1},
        ]
        return {"questions": items, "prompts": before + provenance, "generation": log}


def _answer_and_wrong(item: dict[str, Any]) -> tuple[str, list[str]]:
    options = {o[0]: o[3:] for o in item["options"]}
    return options[item["answer"]], [t for k, t in options.items() if k != item["answer"]]

