"""Transcript plausibility (the LoMo recipe's ``plausibility`` step): is the transcript language
at all, or the ASR's gibberish?

Whisper can write fluent-looking nonsense for speech it does not follow (the Mandarin sample's
``净天瓦门在压座範...`` for ``今天我们在家做饭``) with a high ``asr_score``; questions built on it
pass every other check. ``TranscriptPlausibility`` scores every subtitle line with the causal
LM-loss code LiveCC's filter uses (``processors/lm_loss.py``: the mean cross-entropy of the
line's tokens, in the seed's chat layout, the line as the assistant's reply), in the
transcript's own language (the ``segments`` column: no translation in between), and writes

- ``transcript_loss``: the mean of the lines' losses (lines without tokens left out);
- ``transcript_implausible``: ``transcript_loss`` above the threshold of the row's language
  (``thresholds``: a language code, or ``other``), or the ASR step's own hallucination tests
  flagged most of the speech (``asr_score`` below ``min_asr_score``, 0.5), when the row has
  ``asr_score``;
- ``transcript_reasons``: why (``lm_loss``, ``asr``; empty when plausible).

A Whisper loop (``是,是,是,...``, bench_yield's zh_07_human) is the case the loss misses: a
repeated token is easy to predict, so its loss is low (1.75 against 3.0-4.0 for the other
Mandarin transcripts), but Whisper's own tests (``repetition``, ``high_compression``) flag all of
its seconds (``asr_score`` 0.0).

It flags; it does not drop (``Filter("keep_plausible", "transcript_loss", high=...)`` would).
The thresholds are calibrated for the embedded SmolLM2-135M (what ``--embedded`` uses) on real
and scrambled transcripts by ``benchmarks/bench_plausibility.py``; another model needs its own
(the benchmark prints them for ``--model``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from datasets import Features, Sequence, Value

from lomo_datasets.core.stage import Ready, SettingError
from lomo_datasets.processors.lm_loss import LMLoss, batch_losses, conversation

#: Per language, the mean per-line loss above which a transcript is flagged (SmolLM2-135M,
#: calibrated by benchmarks/bench_plausibility.py: about the midpoint between the highest real and
#: the lowest scrambled transcript: English real 3.91-5.97, scrambled 8.00-9.73; Mandarin real
#: 3.01-3.86, scrambled and Whisper gibberish 4.48-5.34). ``other`` is not calibrated: English's.
THRESHOLDS = {"en": 7.0, "zh": 4.2, "other": 7.0}


@dataclass
class TranscriptPlausibility(LMLoss):
    """Writes ``transcript_loss`` and ``transcript_implausible`` per video (see the module)."""

    name: ClassVar[str] = "plausibility"
    version: ClassVar[str] = "2"
    reads: ClassVar[tuple[str, ...]] = ("segments",)  # and language, title, asr_score, asr_flags when present

    column: str = "segments"
    thresholds: dict[str, float] = field(default_factory=lambda: dict(THRESHOLDS))
    #: Lines scored per video (evenly spaced when there are more): bounds the cost of long videos.
    max_lines: int = 40
    #: A transcript is also implausible when less than this share of its speech passed the ASR
    #: step's hallucination tests (``asr_score``; 0 turns this off).
    min_asr_score: float = 0.5

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.thresholds, dict) or "other" not in self.thresholds or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in self.thresholds.values()
        ):
            raise SettingError(f"plausibility.thresholds={self.thresholds!r}: use a mapping of language code to a loss > 0, with 'other'")
        if not isinstance(self.max_lines, int) or self.max_lines < 1:
            raise SettingError(f"plausibility.max_lines={self.max_lines!r}: use an integer >= 1")
        if isinstance(self.min_asr_score, bool) or not isinstance(self.min_asr_score, (int, float)) or not 0 <= self.min_asr_score <= 1:
            raise SettingError(f"plausibility.min_asr_score={self.min_asr_score!r}: use a number from 0 (off) to 1")

    def input_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def features(self) -> Features:
        return Features({"transcript_loss": Value("float64"), "transcript_implausible": Value("bool"),
                         "transcript_reasons": Sequence(Value("string"))})

    def threshold(self, language: str | None) -> float:
        code = (language or "").lower().split("-")[0]
        return float(self.thresholds.get(code, self.thresholds["other"]))

    def prepare(self, row: dict[str, Any]) -> Any:
        lines = [(s.get("text") or "").strip() for s in row.get(self.column) or []]
        lines = [t for t in lines if t]
        if not lines:  # no speech: nothing to flag (the steps that need lines say so)
            return Ready({"transcript_loss": None, "transcript_implausible": None, "transcript_reasons": []})
        if len(lines) > self.max_lines:
            step = len(lines) / self.max_lines
            lines = [lines[int(k * step)] for k in range(self.max_lines)]
        return [conversation(row.get("title"), line) for line in lines]

    def run_batch(self, items: list[list[list[dict[str, str]]]]) -> list[float]:
        model, tokenizer = self.lm
        flat = [c for convs in items for c in convs]
        losses: list[float] = []
        for b in range(0, len(flat), self.batch_size):
            losses.extend(batch_losses(model, tokenizer, flat[b : b + self.batch_size], self.max_tokens))
        out, position = [], 0
        for convs in items:
            mine = [x for x in losses[position : position + len(convs)] if math.isfinite(x)]
            position += len(convs)
            out.append(sum(mine) / len(mine) if mine else float("nan"))
        return out

    def finish(self, row: dict[str, Any], loss: float) -> dict[str, Any]:
        if not math.isfinite(loss):
            raise ValueError("the transcript has no tokens to score")
        reasons = []
        if loss > self.threshold(row.get("language")):
            reasons.append("lm_loss")
        score = row.get("asr_score")
        if score is not None and score < self.min_asr_score:
            reasons.append("asr")
        return {"transcript_loss": float(loss), "transcript_implausible": bool(reasons), "transcript_reasons": reasons}


__all__ = ["THRESHOLDS", "TranscriptPlausibility"]
