"""The QA audit as recipe steps (lomo_datasets/audit/checks.py has the checks and figures).

- ``BlindAnswer`` (step ``blind``): an LLM answers each multiple-choice item of a row from its
  question and options alone (no subtitles, no video) and writes ``blind_answers``
  (``question_id``, the letter; ``""`` when it gave no valid answer, which is not a row error:
  the video is fine, only its audit lacks that answer). Any backend of the LLM layer; under
  ``--embedded`` the embedded chat model. ``enabled=false`` skips it (no model loads).
- ``AuditQuestions`` (step ``audit``): writes ``audit_flags``, the failed checks of the row's
  items (reason codes in ``audit.REASONS``), from the item, its video (duration, subtitle lines)
  and the blind picks. Flagged items stay in ``questions``: the audit never drops one. The
  ``drop`` setting (a list of reasons) moves items flagged with one of them to ``audit_dropped``.

The flags of a row depend on that row only, so a sharded run flags the same as one run; items
whose options repeat another video's need the whole dataset and are counted in the card's audit
table and ``audit.md`` (written with the data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from datasets import Features

from lomo_datasets.audit import checks as A
from lomo_datasets.core import features as F
from lomo_datasets.llm.stage import LLMStage, Requests
from lomo_datasets.core.stage import Ready, SettingError, Stage


@dataclass
class BlindAnswer(LLMStage):
    """Writes ``blind_answers``: the LLM's letter per multiple-choice item, seen blind."""

    name: ClassVar[str] = "blind"
    version: ClassVar[str] = "1+" + A.BLIND.sha()
    reads: ClassVar[tuple[str, ...]] = ("questions",)

    enabled: bool = True

    def features(self) -> Features:
        return Features({"blind_answers": F.BLIND_ANSWERS})

    def prepare(self, row: dict[str, Any]) -> Requests | Ready:
        if not self.enabled:
            return Ready({"blind_answers": []})
        return self.requests(row)

    def requests(self, row: dict[str, Any]) -> Requests:
        return {
            str(k): (A.blind_messages(q), A.blind_task(list(A.parse_options(q))))
            for k, q in enumerate(row.get("questions") or []) if A.is_multiple_choice(q) and A.parse_options(q)
        }

    def run_batch(self, items: list[Requests]) -> list[Any]:
        """Per item, ``{key: answer or its error}``: one failed answer is no row error (the
        base class fails a row on its first failed key)."""
        return self.answers_per_key(items)

    def finish(self, row: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
        picks = []
        for k, q in enumerate(row.get("questions") or []):
            if str(k) not in answers:
                continue
            answer = answers[str(k)]
            letter = str(answer.get("answer") or "") if isinstance(answer, dict) else ""
            picks.append({"question_id": str(q.get("question_id")), "answer": letter})
        return {"blind_answers": picks}


@dataclass
class AuditQuestions(Stage):
    """Writes ``audit_flags`` (and, with ``drop``, moves those items to ``audit_dropped``)."""

    name: ClassVar[str] = "audit"
    version: ClassVar[str] = "1"
    reads: ClassVar[tuple[str, ...]] = ("questions",)  # and duration, segments, segments_en, blind_answers

    drop: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not isinstance(self.drop, (list, tuple)) or not all(isinstance(r, str) for r in self.drop):
            raise SettingError(f"audit.drop={self.drop!r}: give a list of reasons, e.g. [blind_answerable]")
        unknown = sorted(set(self.drop) - set(A.REASONS))
        if unknown:
            raise SettingError(f"audit.drop: unknown reason(s) {', '.join(unknown)}; reasons: {', '.join(A.REASONS)}")

    def features(self) -> Features:
        return Features({"questions": F.QUESTIONS, "audit_flags": F.AUDIT_FLAGS, "audit_dropped": F.QUESTIONS})

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        video = A.Video.from_row(row)
        report = A.audit([video], A.answers_from_rows([row]))
        (flags,) = A.flag_column([video], report)
        dropped_ids = {f["question_id"] for f in flags if f["reason"] in self.drop}
        questions = list(row.get("questions") or [])
        return {
            "questions": [q for q in questions if q.get("question_id") not in dropped_ids],
            "audit_flags": flags,
            "audit_dropped": [q for q in questions if q.get("question_id") in dropped_ids],
        }
