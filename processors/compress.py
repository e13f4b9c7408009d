"""Information compression (LoMo stage 3): the global view and the temporal view of a video.

``Compress`` reads the English transcript (``segments_en``; or ``segments`` when the speech is
English and translation was skipped) and asks the LLM, through ``lomo_datasets.llm.stage``, for:

- ``summary``: a concise summary of the visible information (JSON ``{"summary": ...}``);
- ``temporal``: the model picks ONE subtitle line by its number (the schema allows only the
  numbers shown); then, shown that line only, it writes a conclusion, a question, its answer and
  three wrong answers (the grounded item: processors/grounding.py). The line's text, start and
  end are copied from the segments, never taken from numbers the model writes, so the window
  always lies on segment boundaries. ``temporal_choices`` lines, drawn per video (seeded by its
  id), are shown for the pick: small models pick the first line they are shown (the embedded
  1.5B picked line 0 for 15 of 17 videos when shown all of them), which would put every
  windowed item of every video in its first seconds. ``temporal_choices=0`` shows all the
  lines, as LoMo-Pipe did. (Asking for the pick and the item in one reply, the 1.5B often
  wrote the item about another line than the one it picked: ``cooking_zh_04``'s SVQA asked
  about 3.59-5.35 s and keyed the 5.89-7.83 s line.)

Every request is batched over the rows of a batch (``LLMStage``); a row whose outputs fail validation after
the bounded retries gets an error entry and empty outputs, other rows complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from datasets import Features

from lomo_datasets.core import features as F
from lomo_datasets.llm import prompts as P
from lomo_datasets.llm.json_shape import with_feedback
from lomo_datasets.llm.backends import choice_schema
from lomo_datasets.llm.stage import LLMStage, Requests, TaskSpec
from lomo_datasets.processors import grounding as G
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


def _check_temporal(line: str):
    def check(obj: dict[str, Any]) -> None:
        for key in ("conclusion", "question"):
            if not obj[key].strip():
                raise ValueError(f"temporal: empty {key}")
        _distinct([obj["answer"], *obj["wrong"]], "temporal options")
        hit = stop_phrase([obj["conclusion"], obj["question"], obj["answer"], *obj["wrong"]])
        if hit:
            raise ValueError(f"temporal: mentions '{hit}' (write about what happens in the video)")
        problem = G.lexical_problem(obj, line)
        if problem:
            raise ValueError(f"temporal: {problem}")

    return check


def summary_task(max_chars: int) -> TaskSpec:
    schema = {
        "type": "object",
        "properties": {"summary": {"type": "string", "minLength": 10, "maxLength": max_chars}},
        "required": ["summary"],
        "additionalProperties": False,
    }
    return TaskSpec("summary", schema, max_new_tokens=max_chars // 3 + 24, check=_check_summary)


def temporal_task(indices: list[int]) -> TaskSpec:
    """The pick: the number of one of the lines shown (the schema allows only those)."""
    return TaskSpec("temporal", choice_schema("index", "integer", indices), max_new_tokens=16)


def answer_limit(line: str, max_chars: int) -> int:
    """The most characters an answer (and a wrong answer) of the temporal item may have: half of
    ``max_chars`` (at least 20), or up to 60% of a long line (at most ``max_chars``). A few of
    a long line's own words can be longer than half the limit (bench_yield's en_07: "schema:
    answer: 53 characters, at most 50 allowed", then "the answer is the whole line")."""
    short = max(20, max_chars // 2)
    return max(short, min(max_chars, (6 * len(line.strip())) // 10))


def temporal_qa_task(line: str, max_chars: int) -> TaskSpec:
    """The temporal item about ``line`` only; the check refuses an item that is not about it
    by the lexical test (processors/grounding.py), so the LLM layer retries it."""
    short = answer_limit(line, max_chars)
    text = {"type": "string", "minLength": 1, "maxLength": max_chars}
    # Said in the retry of a too long answer: bench_yield's zh_01 wrote a 56-character answer
    # for a 35-character line, told only the limit (50).
    hint = f"the line itself has {len(line.strip())} characters: an answer is a few of its words"
    option = {"type": "string", "minLength": 1, "maxLength": short, "description": hint}
    schema = {
        "type": "object",
        "properties": {
            "conclusion": text,
            "question": text,
            "answer": option,
            "wrong": {
                "type": "array",
                "items": {**option, "description": f"the line itself has {len(line.strip())} characters: a wrong answer is as short as the answer"},
                "minItems": 3,
                "maxItems": 3,
            },
        },
        "required": ["conclusion", "question", "answer", "wrong"],
        "additionalProperties": False,
    }
    budget = (2 * max_chars + 4 * short) // 3 + 48
    return TaskSpec("temporal_qa", schema, max_new_tokens=budget, check=_check_temporal(line), surplus=("wrong",))


@dataclass
class _Pending:
    """What ``Compress.prepare`` hands to ``run_batch``: the first requests, and what the
    grounded temporal item needs (the row's English lines, its id)."""

    requests: Requests
    segments: list[dict[str, Any]]
    video_id: str
    #: The lines shown for the pick, in the order the ones not picked are tried when the picked
    #: line gives no grounded item (seeded by the video's id).
    others: list[int]


@dataclass
class Compress(LLMStage):
    """Writes ``summary``, ``temporal``, ``prompts`` (prompt provenance) and its entries of
    ``generation`` (how many rounds the temporal item took).

    ``max_transcript_chars`` bounds the transcript in the summary prompt; ``max_lines`` the
    numbered lines shown for the temporal pick (evenly spaced when there are more);
    ``summary_max_chars`` / ``text_max_chars`` bound what the model may write (the grammar
    enforces them, and the token budget follows).

    The temporal item is grounded (processors/grounding.py): the model picks a line, then
    writes the item seeing that line only; an item that fails the lexical test is retried by
    the LLM layer (``max_tries``), and one whose key the LLM check (the line as the only
    evidence, ``grounding_rotations`` key positions) does not pick, or that stayed invalid
    after its tries, is written again with the reason, up to ``grounding_rounds`` times per
    line. Then the next of the other lines shown for the pick is tried the same way, up to
    ``grounding_lines`` lines in all (a long line the weak model keeps copying whole must not
    cost the video); then the row fails with the reasons. ``grounding_rotations=0`` keeps the
    lexical test only."""

    name: ClassVar[str] = "compress"
    version: ClassVar[str] = "4+" + P.digest()
    reads: ClassVar[tuple[str, ...]] = ("segments", "language")  # and segments_en, title, duration when present
    #: ``--embedded``: the 1.5B model on CPU also writes a shorter summary and temporal text (the
    #: demo runs in minutes on 2 cores); ``--set compress.summary_max_chars=400`` restores them.
    embedded_settings: ClassVar[dict[str, Any]] = {**LLMStage.embedded_settings, "summary_max_chars": 240, "text_max_chars": 100}
    kept_on_error: ClassVar[tuple[str, ...]] = ("generation",)

    max_transcript_chars: int = 6000
    max_lines: int = 60
    summary_max_chars: int = 400
    text_max_chars: int = 160
    #: Lines shown for the temporal pick, drawn per video (0: all of them, up to ``max_lines``).
    temporal_choices: int = 3
    #: Times the temporal item is written when the LLM check does not find its key in the line.
    grounding_rounds: int = 3
    #: Lines tried for the temporal item: the picked one, then others shown for the pick (3: every
    #: line shown, as ``temporal_choices`` is 3; bench_yield's zh_01 failed after two).
    grounding_lines: int = 3
    #: Key positions the LLM check tries (each must pick the key); 0: the lexical test only.
    grounding_rotations: int = 2
    #: Bias repair: distractors of comparable length when the key is the longest option.
    repair_longest: bool = True

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.temporal_choices, int) or isinstance(self.temporal_choices, bool) or self.temporal_choices < 0:
            raise SettingError(f"compress.temporal_choices={self.temporal_choices!r}: use an integer >= 1, or 0 for every line")
        for key, low in (("max_transcript_chars", 100), ("max_lines", 2), ("summary_max_chars", 40), ("text_max_chars", 20),
                         ("grounding_rounds", 1), ("grounding_lines", 1)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise SettingError(f"compress.{key}={value!r}: use an integer >= {low}")
        if not isinstance(self.grounding_rotations, int) or not 0 <= self.grounding_rotations <= 4:
            raise SettingError(f"compress.grounding_rotations={self.grounding_rotations!r}: use 0 (lexical test only) to 4")

    def features(self) -> Features:
        return F.merge(F.COMPRESS, {"generation": F.GENERATION})

    def _lines(self, row: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
        lines = usable_lines(english_segments(row), row.get("duration"))
        if not lines:
            raise ValueError("no subtitle line lies inside the video's duration")
        if len(lines) > self.max_lines:  # evenly spaced, deterministic
            step = len(lines) / self.max_lines
            lines = [lines[int(k * step)] for k in range(self.max_lines)]
        return lines

    def _shown(self, row: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
        """The lines shown for the temporal pick, in their order."""
        lines = self._lines(row)
        if self.temporal_choices and len(lines) > self.temporal_choices:
            drawn = seeded_random(row.get("video_id"), "temporal").sample(range(len(lines)), self.temporal_choices)
            lines = [lines[k] for k in sorted(drawn)]
        return lines

    def requests(self, row: dict[str, Any], shown: list[tuple[int, dict[str, Any]]] | None = None) -> Requests:
        segments = english_segments(row)
        lines = self._shown(row) if shown is None else shown
        transcript = " ".join(s["text"].strip() for s in segments)[: self.max_transcript_chars]
        numbered = "\n".join(f"{k}. {seg['text'].strip()[:200]}" for k, seg in lines)
        return {
            "summary": (P.SUMMARY.messages(title=row.get("title") or "(none)", transcript=transcript), summary_task(self.summary_max_chars)),
            # One schema per row (its own line numbers), all rows in the same batches.
            "temporal": (P.TEMPORAL.messages(lines=numbered), temporal_task([k for k, _ in lines])),
        }

    def prepare(self, row: dict[str, Any]) -> _Pending:
        shown = self._shown(row)
        others = [k for k, _ in shown]
        seeded_random(row.get("video_id"), "temporal-next").shuffle(others)
        return _Pending(self.requests(row, shown), english_segments(row), str(row.get("video_id")), others)

    def temporal_qa_request(self, seg: dict[str, Any]) -> tuple[list[dict[str, str]], TaskSpec]:
        line = seg["text"].strip()
        messages = P.TEMPORAL_QA.messages(line=line[:300], start=P.format_seconds(seg["start"]), end=P.format_seconds(seg["end"]))
        return messages, temporal_qa_task(line, self.text_max_chars)

    def run_batch(self, items: list[_Pending]) -> list[Any]:
        """Summary and pick for every row, then the grounded temporal item in rounds: write it
        (about its line only), check it with the LLM, write again with the reason; after
        ``grounding_rounds`` failed rounds on a line, the next line (``_Pending.others``)."""
        first = self.answers_per_key([item.requests for item in items])
        results: list[Any] = [None] * len(items)
        picked: dict[int, dict[str, Any]] = {}  # the row's current line
        index: dict[int, int] = {}
        queue: dict[int, list[int]] = {}
        for n, per in enumerate(first):
            error = next((a for a in per.values() if isinstance(a, BaseException)), None)
            if error is not None:
                results[n] = error
                continue
            index[n] = per["temporal"]["index"]
            picked[n] = items[n].segments[index[n]]
            queue[n] = [k for k in items[n].others if k != index[n]][: self.grounding_lines - 1]
        feedback: dict[int, tuple[str, str]] = {}
        rounds = {n: 0 for n in picked}
        on_line = {n: 0 for n in picked}
        tried: dict[int, list[str]] = {n: [] for n in picked}  # per line given up: its last reason

        def failed(n: int, problem: str, advice: str = "") -> None:
            feedback[n] = (problem, advice)
            logger.info("compress: %s: temporal item not grounded (round %d on line %d): %s", items[n].video_id, on_line[n], index[n], problem)
            if on_line[n] < self.grounding_rounds:
                return
            tried[n].append(f"line {index[n]} '{picked[n]['text'].strip()[:60]}': {problem[:160]}")
            if queue[n]:
                index[n] = queue[n].pop(0)
                picked[n], on_line[n] = items[n].segments[index[n]], 0
                del feedback[n]
                return
            results[n] = ValueError(
                f"temporal: no item grounded in its line after {rounds[n]} rounds on {len(tried[n])} "
                f"line{'s' if len(tried[n]) > 1 else ''} ({'; '.join(tried[n])})"
            )

        while todo := [n for n in picked if results[n] is None]:
            requests = [self.temporal_qa_request(picked[n]) for n in todo]
            messages = [with_feedback(m, *feedback[n]) if n in feedback else m for n, (m, _) in zip(todo, requests)]
            outputs = self.llm.generate_json(messages, [t for _, t in requests])
            written = []
            for n, out in zip(todo, outputs):
                rounds[n] += 1
                on_line[n] += 1
                if isinstance(out, BaseException):  # invalid (e.g. the lexical test) after max_tries
                    failed(n, getattr(out, "reason", "") or str(out), getattr(out, "advice", ""))
                else:
                    written.append((n, out))
            for (n, out), problem in zip(written, self.check_grounding([(items[n].video_id, picked[n], out) for n, out in written])):
                if problem is None:
                    results[n] = {**first[n], "temporal": {"index": index[n]}, "temporal_qa": out, "rounds": rounds[n],
                                  "lines": len(tried[n]) + 1}
                else:
                    failed(n, problem)
        if self.repair_longest:
            self._repair_longest(items, picked, results)
        return results

    def _repair_longest(self, items: list[_Pending], picked: dict[int, dict[str, Any]], results: list[Any]) -> None:
        """Bias repair: a grounded item whose key is the longest option by the audit's rule gets
        distractors of comparable length, kept only when the LLM check still picks the key."""
        todo = [n for n in picked if isinstance(results[n], dict) and G.key_is_longest(results[n]["temporal_qa"]["answer"], results[n]["temporal_qa"]["wrong"])]
        if not todo:
            return
        short = max(20, self.text_max_chars // 2)
        asks = [G.distractor_request(results[n]["temporal_qa"]["question"], results[n]["temporal_qa"]["answer"], short, picked[n]["text"]) for n in todo]
        outputs = self.llm.generate_json([m for m, _ in asks], [t for _, t in asks])
        candidates = []
        for n, out in zip(todo, outputs):
            if isinstance(out, BaseException):
                logger.info("compress: %s: temporal distractors not repaired: %s", items[n].video_id, out)
                continue
            item = {**results[n]["temporal_qa"], "wrong": out["wrong"]}
            try:
                _check_temporal(picked[n]["text"])(item)
            except ValueError as exc:
                logger.info("compress: %s: repaired temporal distractors refused: %s", items[n].video_id, exc)
                continue
            candidates.append((n, item))
        checks = self.check_grounding([(items[n].video_id, picked[n], item) for n, item in candidates])
        for (n, item), problem in zip(candidates, checks):
            if problem is None:
                results[n]["temporal_qa"], results[n]["rewritten"] = item, 1

    def check_grounding(self, written: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[str | None]:
        """Per ``(video_id, line, item)``: None when the LLM, given the line as the only
        evidence, picks the item's key at every key position (or an option the line's words
        support less than the key: ``grounding.pick_overruled``); else why not."""
        if not self.grounding_rotations or not written:
            return [None] * len(written)
        asks, owners = [], []
        for k, (video_id, seg, item) in enumerate(written):
            seed = seeded_random(video_id, "grounding").randrange(4)
            for position in G.key_positions(seed, self.grounding_rotations):
                options = G.options_with_key_at(item["answer"], item["wrong"], position)
                asks.append(G.grounding_request(seg["text"], item["question"], options))
                owners.append((k, position, options))
        answers = self.llm.generate_json([m for m, _ in asks], [t for _, t in asks])
        problems: list[str | None] = [None] * len(written)
        for (k, position, options), answer in zip(owners, answers):
            if problems[k] is not None:
                continue
            if isinstance(answer, BaseException):
                problems[k] = f"the check could not answer ({str(answer)[:80]})"
                continue
            letter = answer["answer"]
            if letter != G.LETTERS[position]:
                chosen = options[G.LETTERS.index(letter)]
                if G.pick_overruled(chosen, written[k][2]["answer"], written[k][1]["text"]):
                    logger.info("compress: %s: the check picked '%s' over the key '%s', which the line's words support more: kept",
                                written[k][0], chosen[:40], written[k][2]["answer"][:40])
                    continue
                said = f"'{chosen[:40]}'"
                problems[k] = (f"the line does not support the answer '{written[k][2]['answer'][:40]}' "
                               f"(given the line only, the check picked {said}); ask what the line says")
        return problems

    def finish(self, row: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
        summary, picked, item = answers["summary"], answers["temporal"], answers["temporal_qa"]
        seg = english_segments(row)[picked["index"]]
        log = [e for e in (row.get("generation") or []) if e.get("stage") != self.name]
        # SVQA and VVQA share the temporal item's options: two items each.
        longest_after = 2 * G.key_is_longest(item["answer"], item["wrong"])
        longest_before = 2 * bool(answers.get("rewritten")) or longest_after
        return {
            "summary": summary["summary"].strip(),
            "temporal": {
                "index": picked["index"],
                "subtitle": seg["text"].strip(),
                "start": float(seg["start"]),
                "end": float(seg["end"]),
                "conclusion": item["conclusion"].strip(),
                "question": item["question"].strip(),
                "answer": item["answer"].strip(),
                "wrong": [w.strip() for w in item["wrong"]],
            },
            "prompts": [P.SUMMARY.provenance(), P.TEMPORAL.provenance(), P.TEMPORAL_QA.provenance(), P.GROUNDING.provenance()],
            "generation": log + [
                {"stage": self.name, "event": "grounding_rounds", "count": int(answers["rounds"])},
                {"stage": self.name, "event": "grounding_lines", "count": int(answers.get("lines", 1))},
                {"stage": self.name, "event": "answer_longest_before", "count": int(longest_before)},
                {"stage": self.name, "event": "answer_longest_after", "count": int(longest_after)},
                {"stage": self.name, "event": "distractors_rewritten", "count": int(answers.get("rewritten", 0))},
                {"stage": self.name, "event": "items_checked", "count": 2},
            ],
        }
