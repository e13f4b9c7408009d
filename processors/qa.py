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
from lomo_datasets.processors.aggregate import stop_phrase
from lomo_datasets.processors.compress import _distinct, english_segments, usable_lines
from lomo_datasets.core.stage import SettingError, seeded_random

logger = logging.getLogger(__name__)

LETTERS = "ABCD"


def _choice_task(name: str, prompt: P.Prompt, with_question: bool, max_chars: int) -> TaskSpec:
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
        if prompt.copies_example(obj):
            raise ValueError(f"{name}: copied the prompt's example")

    budget = ((6 if with_question else 4) * max_chars) // 3 + 40
    return TaskSpec(name, schema, max_new_tokens=budget, check=check)


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


def build_items(
    video_id: str,
    temporal: dict[str, Any],
    lines: list[tuple[int, dict[str, Any]]],
    gvqa: dict[str, Any],
    gvs: dict[str, Any],
    extra_tasks: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """The items of one video: the six LoMo tasks, then the extra tasks asked for (raises
    ``ValueError`` when the video cannot make them)."""
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

    s, e = P.format_seconds(start), P.format_seconds(end)
    question = temporal["question"].strip()
    conclusion = temporal["conclusion"].strip()
    prefixed = P.TIME_PREFIX.format(start=s, end=e) + " " + (question[:1].lower() + question[1:])
    choices = [
        ("GVQA", gvqa["question"].strip(), gvqa["answer"], gvqa["wrong"], [], ""),
        ("GVS", rng.choice(P.GVS_QUESTIONS), gvs["answer"], gvs["wrong"], [], ""),
        ("SVS", rng.choice(P.SVS_QUESTIONS).format(start=s, end=e), picked["text"].strip(), rng.sample(other_texts, 3), window, ""),
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
class GenerateQA(LLMStage):
    """Writes ``questions`` (six items per video, plus ``extra_tasks``) and appends its prompts
    to ``prompts``."""

    name: ClassVar[str] = "qa"
    version: ClassVar[str] = "2+" + P.digest()
    reads: ClassVar[tuple[str, ...]] = ("video_id", "summary", "temporal", "segments")  # and segments_en, duration, prompts
    #: ``--embedded``: shorter options for the 1.5B model on CPU (``--set qa.option_max_chars=100``
    #: restores them).
    embedded_settings: ClassVar[dict[str, Any]] = {**LLMStage.embedded_settings, "option_max_chars": 60}

    option_max_chars: int = 100
    extra_tasks: list[str] = field(default_factory=list)

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.option_max_chars, int) or self.option_max_chars < 10:
            raise SettingError(f"qa.option_max_chars={self.option_max_chars!r}: use an integer >= 10")
        if not isinstance(self.extra_tasks, (list, tuple)) or set(self.extra_tasks) - set(EXTRA_TASKS):
            raise SettingError(f"qa.extra_tasks={self.extra_tasks!r}: use a list of {list(EXTRA_TASKS)} (or [])")

    def features(self) -> Features:
        return F.QA

    def requests(self, row: dict[str, Any]) -> Requests:
        if not row.get("summary") or not row.get("temporal"):
            raise ValueError("no summary/temporal view: run compress first")
        usable_lines(english_segments(row), row.get("duration"))  # a row without lines fails before any call
        return {
            "GVQA": (P.GVQA.messages(summary=row["summary"]), _choice_task("GVQA", P.GVQA, True, self.option_max_chars)),
            "GVS": (P.GVS.messages(summary=row["summary"]), _choice_task("GVS", P.GVS, False, self.option_max_chars)),
        }

    def finish(self, row: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
        lines = usable_lines(english_segments(row), row.get("duration"))
        items = build_items(row["video_id"], row["temporal"], lines, answers["GVQA"], answers["GVS"],
                            tuple(self.extra_tasks))
        provenance = [P.GVQA.provenance(), P.GVS.provenance()]
        before = [p for p in (row.get("prompts") or []) if p["name"] not in {q["name"] for q in provenance}]
        return {"questions": items, "prompts": before + provenance}
