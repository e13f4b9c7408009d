"""Information compression (LoMo stage 3): the global view and the temporal view of a video.

``Compress`` reads the English transcript (``segments_en``; or ``segments`` when the speech is
English and translation was skipped) and asks the LLM, through ``lomo_datasets.llm.stage``, for:

- ``summary``: a concise summary of the visible information (JSON ``{"summary": ...}``);
- ``temporal``: the model picks ONE subtitle line by its number (the schema allows only the
  numbers shown), and writes a conclusion, a question, its answer and three wrong answers. The
  line's text, start and end are copied from the segments, never taken from numbers the model
  writes, so the window always lies on segment boundaries. ``temporal_choices`` lines, drawn
  per video (seeded by its id), are shown: small models pick the first line they are shown
  (the embedded 1.5B picked line 0 for 15 of 17 videos when shown all of them), which would put
  every windowed item of every video in its first seconds. ``temporal_choices=0`` shows all the
  lines, as LoMo-Pipe did.

Both requests are batched over the rows of a batch (``LLMStage``); a row whose outputs fail validation after
the bounded retries gets an error entry and empty outputs, other rows complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from datasets import Features

from lomo_datasets.core import features as F
from lomo_datasets.llm import prompts as P
from lomo_datasets.llm.stage import LLMStage, Requests, TaskSpec
from lomo_datasets.processors.aggregate import stop_phrase
from lomo_datasets.core.stage import SettingError, seeded_random

logger = logging.getLogger(__name__)

def english_segments(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The English subtitle lines of a row: ``segments_en`` when present, else ``segments`` when
    the detected language is English; raises ``ValueError`` otherwise."""
    translated = [s for s in (row.get("segments_en") or []) if (s.get("text") or "").strip()]
    if translated:
        return translated
    language = (row.get("language") or "").lower()
    if language.startswith("en"):
        return [s for s in (row.get("segments") or []) if (s.get("text") or "").strip()]
    if not row.get("segments"):
        raise ValueError("no subtitle lines (the video has no transcribed speech)")
    raise ValueError(f"no English transcript: the speech is '{language or 'unknown'}' and segments_en is empty; run translate")


def usable_lines(segments: list[dict[str, Any]], duration: float | None) -> list[tuple[int, dict[str, Any]]]:
    """``(index, segment)`` of lines with text whose window lies inside ``[0, duration]``."""
    lines = []
    for i, seg in enumerate(segments):
        start, end = seg.get("start"), seg.get("end")
        if start is None or end is None or not (seg.get("text") or "").strip():
            continue
        if start < 0 or end <= start or (duration is not None and end > duration):
            continue
        lines.append((i, seg))
    return lines


def _distinct(values: list[str], what: str) -> None:
    seen = set()
    for value in values:
        key = " ".join(value.lower().split()).strip(" .!?")
        if not key:
            raise ValueError(f"{what}: an empty entry")
        if key in seen:
            raise ValueError(f"{what}: '{value[:40]}' repeats")
        seen.add(key)


def _check_summary(obj: dict[str, Any]) -> None:
    if len(obj["summary"].split()) < 3:
        raise ValueError("summary: fewer than three words")
    if P.SUMMARY.copies_example(obj):
        raise ValueError("summary: copied the prompt's example")


def _check_temporal(obj: dict[str, Any]) -> None:
    for key in ("conclusion", "question"):
        if not obj[key].strip():
            raise ValueError(f"temporal: empty {key}")
    _distinct([obj["answer"], *obj["wrong"]], "temporal options")
    hit = stop_phrase([obj["conclusion"], obj["question"], obj["answer"], *obj["wrong"]])
    if hit:
        raise ValueError(f"temporal: mentions '{hit}' (write about what happens in the video)")
    if P.TEMPORAL.copies_example({k: v for k, v in obj.items() if k != "index"}):
        raise ValueError("temporal: copied the prompt's example")


def summary_task(max_chars: int) -> TaskSpec:
    schema = {
        "type": "object",
        "properties": {"summary": {"type": "string", "minLength": 10, "maxLength": max_chars}},
        "required": ["summary"],
        "additionalProperties": False,
    }
    return TaskSpec("summary", schema, max_new_tokens=max_chars // 3 + 24, check=_check_summary)


def temporal_task(indices: list[int], max_chars: int) -> TaskSpec:
    short = max(20, max_chars // 2)
    text = {"type": "string", "minLength": 1, "maxLength": max_chars}
    schema = {
        "type": "object",
        "properties": {
            "index": {"type": "integer", "enum": list(indices)},
            "conclusion": text,
            "question": text,
            "answer": {"type": "string", "minLength": 1, "maxLength": short},
            "wrong": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": short},
                "minItems": 3,
                "maxItems": 3,
            },
        },
        "required": ["index", "conclusion", "question", "answer", "wrong"],
        "additionalProperties": False,
    }
    budget = (2 * max_chars + 4 * short) // 3 + 48
    return TaskSpec("temporal", schema, max_new_tokens=budget, check=_check_temporal)


@dataclass
class Compress(LLMStage):
    """Writes ``summary``, ``temporal`` and ``prompts`` (prompt provenance).

    ``max_transcript_chars`` bounds the transcript in the summary prompt; ``max_lines`` the
    numbered lines shown for the temporal pick (evenly spaced when there are more);
    ``summary_max_chars`` / ``text_max_chars`` bound what the model may write (the grammar
    enforces them, and the token budget follows)."""

    name: ClassVar[str] = "compress"
    version: ClassVar[str] = "1+" + P.digest()
    reads: ClassVar[tuple[str, ...]] = ("segments", "language")  # and segments_en, title, duration when present
    #: ``--embedded``: the 1.5B model on CPU also writes a shorter summary and temporal text (the
    #: demo runs in minutes on 2 cores); ``--set compress.summary_max_chars=400`` restores them.
    embedded_settings: ClassVar[dict[str, Any]] = {**LLMStage.embedded_settings, "summary_max_chars": 240, "text_max_chars": 100}

    max_transcript_chars: int = 6000
    max_lines: int = 60
    summary_max_chars: int = 400
    text_max_chars: int = 160
    #: Lines shown for the temporal pick, drawn per video (0: all of them, up to ``max_lines``).
    temporal_choices: int = 3

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.temporal_choices, int) or isinstance(self.temporal_choices, bool) or self.temporal_choices < 0:
            raise SettingError(f"compress.temporal_choices={self.temporal_choices!r}: use an integer >= 1, or 0 for every line")
        for key, low in (("max_transcript_chars", 100), ("max_lines", 2), ("summary_max_chars", 40), ("text_max_chars", 20)):
            value = getattr(self, key)
            if not isinstance(value, int) or value < low:
                raise SettingError(f"compress.{key}={value!r}: use an integer >= {low}")

    def features(self) -> Features:
        return F.COMPRESS

    def _lines(self, row: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
        lines = usable_lines(english_segments(row), row.get("duration"))
        if not lines:
            raise ValueError("no subtitle line lies inside the video's duration")
        if len(lines) > self.max_lines:  # evenly spaced, deterministic
            step = len(lines) / self.max_lines
            lines = [lines[int(k * step)] for k in range(self.max_lines)]
        return lines

    def requests(self, row: dict[str, Any]) -> Requests:
        segments = english_segments(row)
        lines = self._lines(row)
        transcript = " ".join(s["text"].strip() for s in segments)[: self.max_transcript_chars]
        if self.temporal_choices and len(lines) > self.temporal_choices:  # in their order
            drawn = seeded_random(row.get("video_id"), "temporal").sample(range(len(lines)), self.temporal_choices)
            lines = [lines[k] for k in sorted(drawn)]
        numbered = "\n".join(f"{k}. {seg['text'].strip()[:200]}" for k, seg in lines)
        return {
            "summary": (P.SUMMARY.messages(title=row.get("title") or "(none)", transcript=transcript), summary_task(self.summary_max_chars)),
            # One schema per row (its own line numbers), all rows in the same batches.
            "temporal": (P.TEMPORAL.messages(lines=numbered), temporal_task([k for k, _ in lines], self.text_max_chars)),
        }

    def finish(self, row: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
        summary, picked = answers["summary"], answers["temporal"]
        seg = english_segments(row)[picked["index"]]
        return {
            "summary": summary["summary"].strip(),
            "temporal": {
                "index": picked["index"],
                "subtitle": seg["text"].strip(),
                "start": float(seg["start"]),
                "end": float(seg["end"]),
                "conclusion": picked["conclusion"].strip(),
                "question": picked["question"].strip(),
                "answer": picked["answer"].strip(),
                "wrong": [w.strip() for w in picked["wrong"]],
            },
            "prompts": [P.SUMMARY.provenance(), P.TEMPORAL.provenance()],
        }
