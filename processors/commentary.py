"""Commentary judging for LiveCC SFT (B6, "prompt making"): an LLM judges whether a clip's speech is real-time
commentary on what the video shows, and for those clips writes a generic user query that the
commentary answers (for example "Please commentate on this match as it happens.").

The LLM answers in JSON validated against ``{"result": "YES" | "NO", "query": string}``
(constrained decoding where the backend supports it; see ``lomo_datasets.llm.stage``). Rows judged NO
get no query (``None``) and ``commentary = False``; ``Filter("commentary", "commentary", low=1)``
drops them. Rows whose LLM output stays invalid after the bounded retries get a row error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from datasets import Features

from lomo_datasets.core import features as F
from lomo_datasets.llm.stage import LLMStage, Messages, Requests, TaskSpec
from lomo_datasets.processors.clip import join_words
from lomo_datasets.core.stage import SettingError

logger = logging.getLogger(__name__)

SYSTEM = "You are a careful annotator of video speech transcripts. You answer in JSON only."

INSTRUCTION = """Below is the speech transcript of a video clip, with the video's title and category.

Title: {title}
Category: {category}
Transcript: {transcript}

Decide whether the speech is real-time commentary: the speaker describes or reacts to what is happening in the video while it happens (like a sports commentator, a game streamer, or a person narrating what they are doing step by step). Speech that is a lecture, an interview, a monologue to the camera, a song, an advertisement, or unrelated to what is shown is not real-time commentary.

If it is real-time commentary, also write one generic user query that would ask for this kind of commentary. The query must not reveal any specific content of the transcript (no names, numbers, or events); it should read like a general request for commentary on this kind of video, naming at most the kind of activity (a match, a game, a recipe, a repair), not what happens in it.

Answer with a JSON object with two keys: "result", which is "YES" or "NO", and "query", which holds your generic user query (an empty string when the result is NO)."""

SCHEMA = {
    "type": "object",
    "properties": {
        "result": {"type": "string", "enum": ["YES", "NO"]},
        "query": {"type": "string", "maxLength": 300},
    },
    "required": ["result", "query"],
    "additionalProperties": False,
}


def _check(obj: dict[str, Any]) -> None:
    if obj["result"] == "YES" and not obj["query"].strip():
        raise ValueError("result is YES but the query is empty")


TASK = TaskSpec("commentary_prompt", SCHEMA, max_new_tokens=96, check=_check)


def clip_transcript(row: dict[str, Any], max_words: int | None) -> str:
    words = join_words(row.get("content") or []).split()
    if not words:
        text = " ".join(s["text"].strip() for s in (row.get("segments") or []))
        words = text.split()
    if max_words is not None:
        words = words[:max_words]
    return " ".join(words)


@dataclass
class MakePrompt(LLMStage):
    """Writes ``commentary`` (bool) and ``query`` (the generic user query; ``None`` for NO).

    ``max_words``: the transcript is cut to its first words to bound the prompt length."""

    name = "prompt"
    version = "1"
    reads = ("content",)  # and title, category when present

    max_words: int | None = 400

    def validate(self) -> None:
        super().validate()
        if self.max_words is not None and (not isinstance(self.max_words, int) or self.max_words < 1):
            raise SettingError(f"prompt.max_words={self.max_words!r}: use an integer >= 1 or null")

    def features(self) -> Features:
        return Features({k: F.LIVECC[k] for k in ("commentary", "query")})

    def messages(self, row: dict[str, Any]) -> Messages:
        transcript = clip_transcript(row, self.max_words)
        if not transcript:
            raise ValueError("the clip has no transcript to judge")
        user = INSTRUCTION.format(
            title=row.get("title") or "(none)", category=row.get("category") or "(none)", transcript=transcript
        )
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

    def requests(self, row: dict[str, Any]) -> Requests:
        return {"prompt": (self.messages(row), TASK)}

    def finish(self, row: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
        return to_columns(answers["prompt"])


def to_columns(answer: dict[str, Any]) -> dict[str, Any]:
    """A validated answer -> the row's columns (NO rows get no query)."""
    yes = answer["result"] == "YES"
    return {"commentary": yes, "query": answer["query"].strip() if yes else None}


__all__ = ["MakePrompt", "TASK", "SCHEMA", "to_columns", "clip_transcript"]
