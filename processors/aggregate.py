"""Aggregation and quality control of the LoMo recipe (after QA generation).

Rows are already one per video, so aggregation means: a video is kept only when it has an item
of every task (as LoMo did), after quality control removed the bad ones:

- ``QualityControl`` (a map) removes items whose question or options contain a stop phrase
  (matched on whole words), checks the resolution floor, checks that every task is present,
  labels the duration bucket, and writes ``qc_pass`` (1.0 / 0.0) with ``qc_reason``, plus
  ``resolution`` as ``"[H, W]"``;
- ``KeepQC`` (the recipe's ``keep_qc`` step) keeps ``qc_pass == 1``; dropped videos
  keep their reason in the run's ``dropped.jsonl``.

Duration buckets are a setting (``buckets``: list of ``[name, low, high]``, ``high`` null for
"no upper bound"; default covers all durations, 60-120 min included, so no video is dropped
silently: a video outside every bucket fails QC with that reason). ``sample`` maps a bucket
name to the fraction of its videos to keep, chosen by a hash of the video id (reproducible).

The LoMo files are written by ``lomo_datasets.formats.lomo.export_lomo`` (the recipe's export).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from datasets import Features

from lomo_datasets.core import features as F
from lomo_datasets.formats import TASKS
from lomo_datasets.core.stage import Filter, SettingError, Stage, seeded_random

logger = logging.getLogger(__name__)

DEFAULT_BUCKETS = [
    ["0-1min", 0, 60],
    ["1-5min", 60, 300],
    ["5-15min", 300, 900],
    ["15-30min", 900, 1800],
    ["30-60min", 1800, 3600],
    ["60-120min", 3600, 7200],
    ["120min+", 7200, None],
]

#: Phrases that mark an item as leaking the annotation process or refusing (whole words).
DEFAULT_STOP_WORDS = [
    "subtitle", "subtitles", "transcript", "caption", "captions", "as an ai", "language model",
    "i cannot", "i can't", "i'm sorry", "not mentioned", "no information",
]


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c == "'" else " " for c in text.lower()).split()


def stop_phrase(texts: list[str], stop_words: list[str] = DEFAULT_STOP_WORDS) -> str | None:
    """The first stop phrase in ``texts`` (what QC would drop the item for), or None. The LLM
    stages check their outputs with it, so such an item is retried instead of dropped later."""
    return contains_phrase(" ".join(texts), [_words(p) for p in stop_words if _words(p)])


def contains_phrase(text: str, phrases: list[list[str]]) -> str | None:
    """The first phrase (as a word list) that occurs as whole words in ``text``."""
    words = _words(text)
    for phrase in phrases:
        n = len(phrase)
        if any(words[i : i + n] == phrase for i in range(len(words) - n + 1)):
            return " ".join(phrase)
    return None


@dataclass
class QualityControl(Stage):
    """LoMo post-processing QC; see the module docstring."""

    name: ClassVar[str] = "qc"
    version: ClassVar[str] = "1"
    reads: ClassVar[tuple[str, ...]] = ("video_id", "questions")  # and width, height, duration

    min_width: int = 0
    min_height: int = 240
    stop_words: list[str] = field(default_factory=lambda: list(DEFAULT_STOP_WORDS))
    required_tasks: list[str] = field(default_factory=lambda: list(TASKS))
    buckets: list[list[Any]] = field(default_factory=lambda: [list(b) for b in DEFAULT_BUCKETS])
    sample: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        for key in ("min_width", "min_height"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                raise SettingError(f"qc.{key} must be an integer >= 0 (pixels)")
        unknown = sorted(set(self.required_tasks) - set(TASKS))
        if unknown:
            raise SettingError(f"qc.required_tasks: unknown {unknown}; tasks are {list(TASKS)}")
        names = []
        for b in self.buckets:
            ok = isinstance(b, (list, tuple)) and len(b) == 3 and isinstance(b[1], (int, float)) and (
                b[2] is None or (isinstance(b[2], (int, float)) and b[2] > b[1])
            )
            if not ok:
                raise SettingError(f"qc.buckets: {b!r} is not [name, low_seconds, high_seconds or null] with high > low")
            names.append(str(b[0]))
        if len(set(names)) != len(names):
            raise SettingError("qc.buckets: bucket names repeat")
        for name, frac in self.sample.items():
            if name not in names or not isinstance(frac, (int, float)) or not 0 <= frac <= 1:
                raise SettingError(f"qc.sample: {name}={frac!r}; use a bucket name from {names} and a fraction in [0, 1]")

    def features(self) -> Features:
        return F.QC

    def bucket(self, duration: float | None) -> str | None:
        if duration is None:
            return None
        for name, low, high in self.buckets:
            if duration >= low and (high is None or duration < high):
                return str(name)
        return None

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        phrases = [_words(p) for p in self.stop_words if _words(p)]
        kept, removed = [], Counter()
        for item in row.get("questions") or []:
            text = " ".join([item["question"], *item["options"], item.get("descriptions") or ""])
            hit = contains_phrase(text, phrases)
            if hit:
                removed[hit] += 1
            else:
                kept.append(item)
        reasons = []
        width, height = row.get("width") or 0, row.get("height") or 0
        if width < self.min_width or height < self.min_height:
            reasons.append(f"resolution {width}x{height} below {self.min_width}x{self.min_height}")
        missing = [t for t in self.required_tasks if t not in {q["task"] for q in kept}]
        if missing:
            why = f"missing tasks {missing}"
            if removed:
                why += f" (items with stop words: {dict(removed)})"
            reasons.append(why)
        bucket = self.bucket(row.get("duration"))
        if bucket is None:
            reasons.append(f"duration {row.get('duration')} is in no bucket of qc.buckets")
        elif bucket in self.sample and seeded_random(row["video_id"], "bucket").random() >= self.sample[bucket]:
            reasons.append(f"not sampled from bucket {bucket} (qc.sample={self.sample[bucket]})")
        return {
            "questions": kept,
            "resolution": f"[{height}, {width}]" if width and height else None,
            "duration_bucket": bucket,
            "qc_pass": 0.0 if reasons else 1.0,
            "qc_reason": "; ".join(reasons) or None,
        }


@dataclass
class KeepQC(Filter):
    """The recipe's ``keep_qc`` step: keep videos that passed quality control."""

    name: str = "keep_qc"
    column: str = "qc_pass"
    low: float | None = 1.0

