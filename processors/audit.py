"""The QA audit as recipe steps (lomo_datasets/audit/checks.py has the checks and figures).

- ``VerifyKeys`` (step ``verify``): the answer-key verifier. An LLM answers each multiple-choice
  item of a row with the evidence the item was made from (the summary for GVQA/GVS, the subtitle
  lines overlapping the item's window for SVS/SVQA/VVQA) and writes ``verified_answers``.
- ``BlindAnswer`` (step ``blind``): an LLM answers each multiple-choice item of a row from its
  question and options alone (no subtitles, no video) and writes ``blind_answers``.

Both use circular evaluation: every item is asked in ``checks.ROTATIONS`` rotations of its options
and counts as answered only when the same option (by content, not letter) wins every rotation;
the columns keep each rotation's pick. All rotations of all items of a batch of rows go out in
one ``generate_json`` call (``LLMStage.answers_in_one_call``) with a tiny JSON answer schema.
A rotation without a valid answer is not a row error (the video is fine, only its audit lacks
that answer). Any backend of the LLM layer; under ``--embedded`` the embedded chat model.
``enabled=false`` skips a step (no model loads).
- ``AuditQuestions`` (step ``audit``): writes ``audit_flags``, the failed checks of the row's
  items (reason codes in ``audit.REASONS``), from the item, its video (duration, subtitle lines,
  transcript) and the two steps' picks. Flagged items stay in ``questions``: the audit never drops
  one. The ``drop`` setting (a list of reasons) moves items flagged with one of them to
  ``audit_dropped``.

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
class _CircularStage(LLMStage):
    """Asks every multiple-choice item of a row in every rotation of its options and writes the
    picks (features.BLIND_ANSWERS shape) to ``column``."""

    column: ClassVar[str] = ""

    enabled: bool = True

    def features(self) -> Features:
        return Features({self.column: F.BLIND_ANSWERS})

    def rotations(self, row: dict[str, Any]) -> list[tuple[dict[str, Any], list[A.Rotation]]]:
        """Per multiple-choice item asked, the item and its requests (one per rotation)."""
        raise NotImplementedError

    def prepare(self, row: dict[str, Any]) -> Requests | Ready:
        if not self.enabled:
            return Ready({self.column: []})
        return self.requests(row)

    def requests(self, row: dict[str, Any]) -> Requests:
        return {
            f"{str(q.get('question_id'))}#{r}": (messages, task)
            for q, rotations in self.rotations(row) for r, (messages, task, _) in enumerate(rotations)
        }

    def run_batch(self, items: list[Requests]) -> list[Any]:
        """Per item, ``{key: answer or its error}``, all in one call: a failed rotation is no row
        error (the base class fails a row on its first failed key)."""
        return self.answers_in_one_call(items)

    def finish(self, row: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
        picks = A.Picks()
        asked = []
        for q, rotations in self.rotations(row):
            qid = str(q.get("question_id"))
            picks.rotations[qid] = [A.decode_pick(answers.get(f"{qid}#{r}"), order) for r, (_, _, order) in enumerate(rotations)]
            picks[qid] = A.circular_pick(picks.rotations[qid])
            asked.append(q)
        return {self.column: A.picks_column(asked, picks)}


@dataclass
class BlindAnswer(_CircularStage):
    """Writes ``blind_answers``: per multiple-choice item, the option the LLM picks blind in
    every rotation ("" when none wins every rotation) and each rotation's pick."""

    name: ClassVar[str] = "blind"
    version: ClassVar[str] = "2+" + A.BLIND.sha()
    reads: ClassVar[tuple[str, ...]] = ("questions",)
    column: ClassVar[str] = "blind_answers"

    def rotations(self, row: dict[str, Any]) -> list[tuple[dict[str, Any], list[A.Rotation]]]:
        return [(q, A.blind_requests(q)) for q in row.get("questions") or [] if A.is_multiple_choice(q) and A.parse_options(q)]


@dataclass
class VerifyKeys(_CircularStage):
    """Writes ``verified_answers``: per multiple-choice item with evidence, the option the LLM
    picks from that evidence in every rotation ("" when none wins every rotation)."""

    name: ClassVar[str] = "verify"
    version: ClassVar[str] = "1+" + A.VERIFY.sha()
    reads: ClassVar[tuple[str, ...]] = ("questions", "summary", "segments_en")
    column: ClassVar[str] = "verified_answers"

    def rotations(self, row: dict[str, Any]) -> list[tuple[dict[str, Any], list[A.Rotation]]]:
        video = A.Video.from_row(row)
        asked = [(q, A.verify_requests(q, video)) for q in row.get("questions") or []]
        return [(q, rotations) for q, rotations in asked if rotations]


@dataclass
class AuditQuestions(Stage):
    """Writes ``audit_flags`` (and, with ``drop``, moves those items to ``audit_dropped``)."""

    name: ClassVar[str] = "audit"
    version: ClassVar[str] = "2"
    # and duration, title, segments, segments_en, blind_answers, verified_answers where present
    reads: ClassVar[tuple[str, ...]] = ("questions",)

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
        report = A.audit([video], A.answers_from_rows([row]), verified=A.answers_from_rows([row], "verified_answers"))
        (flags,) = A.flag_column([video], report)
        dropped_ids = {f["question_id"] for f in flags if f["reason"] in self.drop}
        questions = list(row.get("questions") or [])
        return {
            "questions": [q for q in questions if q.get("question_id") not in dropped_ids],
            "audit_flags": flags,
            "audit_dropped": [q for q in questions if q.get("question_id") in dropped_ids],
        }
