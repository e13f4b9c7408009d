"""Every LLM prompt of the LoMo recipe, in one place, versioned.

A ``Prompt`` has a name, a version and its system/user templates. Bump ``version`` when a
prompt's wording changes: stages put ``digest()`` into their version (so cached results are
recomputed) and record ``provenance()`` (name, version, sha of the text) in each row's
``prompts`` column. Question templates (GVS, SVS, the SVQA time prefix, VTG) live here too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

SET_VERSION = "lomo-prompts-2"


@dataclass(frozen=True)
class Prompt:
    """A chat prompt: ``user`` is a ``str.format`` template; ``example`` is an example reply
    (JSON text) appended to the user message. Small models tend to copy the example, so
    ``copies_example`` lets a task's check reject such replies (they are then retried)."""

    name: str
    version: str
    system: str
    user: str
    example: str = ""

    def sha(self) -> str:
        return hashlib.sha256(f"{self.system}\x1f{self.user}\x1f{self.example}".encode()).hexdigest()[:12]

    def messages(self, **fields: str) -> list[dict[str, str]]:
        user = self.user.format(**fields)
        if self.example:
            user += "\nExample reply (about another video; do not copy it): " + self.example
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def copies_example(self, obj: object) -> bool:
        """True when a string in ``obj`` equals a string of the example reply."""
        if not self.example:
            return False
        example = {_norm(v) for v in _strings(json.loads(self.example))}
        return any(_norm(v) in example for v in _strings(obj))

    def provenance(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha": self.sha()}


_SYSTEM = "You write precise, factual annotations for a video question-answering benchmark. Answer with JSON only."

SUMMARY = Prompt(
    "summary",
    "1",
    _SYSTEM,
    "Video title: {title}\n"
    "Transcript of the video's speech:\n{transcript}\n\n"
    "Write a concise summary (one to three sentences) of what can be seen in the video: the people, "
    "objects, places and actions. Leave out opinions and anything that cannot be seen.",
)

TEMPORAL = Prompt(
    "temporal",
    "2",
    _SYSTEM,
    "Numbered subtitle lines of a video:\n{lines}\n\n"
    "Pick the number of ONE line that describes a complete visual event (an action someone can see).",
)

#: The temporal item, about the picked line only (the model sees no other line).
TEMPORAL_QA = Prompt(
    "temporal_qa",
    "2",
    _SYSTEM,
    "What is said in a video from {start} to {end} seconds:\n\"{line}\"\n\n"
    "Write about that moment only: a short description of the event it shows (conclusion); a "
    "question that what is said there answers (what, who, where, how many, how long); the correct "
    "answer, a few of its words (never all of them); and three wrong answers of the same kind that "
    "it contradicts (another object, place, number or action), each different from the correct "
    "answer and not containing it. Never mention subtitles, lines or the text itself.",
)

#: The grounding check: the picked line is the only evidence for the temporal item's answer.
GROUNDING = Prompt(
    "grounding",
    "2",
    "You check answers against evidence. Use only the evidence given. Answer with JSON only.",
    "Evidence (one subtitle line of a video):\n\"{line}\"\n\n"
    "Question: {question}\n{options}\n\n"
    "Which option does the evidence say is correct? Answer with its letter.",
)

#: Distractors of comparable length (bias repair: the key was the longest option).
DISTRACTORS = Prompt(
    "distractors",
    "1",
    _SYSTEM,
    "A multiple-choice question about a video:\nQuestion: {question}\nCorrect answer: {answer}\n\n"
    "Write three different wrong answers of about the same length as the correct answer "
    "({low} to {high} characters each), of the same kind, each clearly wrong.",
)

GVQA = Prompt(
    "gvqa",
    "1",
    _SYSTEM,
    "Summary of a video:\n{summary}\n\n"
    "Write one question about something visible in the video that the summary answers, the correct "
    "short answer, and three different wrong short answers.",
)

GVS = Prompt(
    "gvs",
    "2",
    _SYSTEM,
    "Summary of a video:\n{summary}\n\n"
    "Write a short phrase, at most eight words and like a title, that says what the whole video is "
    "about (answer), and three short phrases of the same kind about clearly different topics (wrong).",
)

TRANSLATE = Prompt(
    "translate",
    "2",
    "You translate video subtitles. Answer with JSON only.",
    "Translate these {count} numbered subtitle lines of a video from {source} to {target}. Translate "
    "every line on its own and keep their order, one {target} line per numbered line (speech "
    "recognition wrote them and may have made mistakes: translate what is written). Write every "
    "word in {target}, names in Latin letters, and no double quotes inside a line.\n{lines}",
)

PROMPTS = {p.name: p for p in (SUMMARY, TEMPORAL, TEMPORAL_QA, GROUNDING, GVQA, GVS, DISTRACTORS, TRANSLATE)}

#: "What is the video about" questions for GVS (one is drawn per video, seeded by its id).
GVS_QUESTIONS = (
    "What is the video about?",
    "Which of the following best describes the content of the video?",
    "What is the main topic of this video?",
    "Which option summarizes the video best?",
)

#: SVS questions: what happens in a window; every template says "between START and END
#: seconds", as LoMo-Pipe's SVS questions do.
SVS_QUESTIONS = (
    "What happens between {start} and {end} seconds in the video?",
    "Which event takes place between {start} and {end} seconds?",
    "What can be seen in the video between {start} and {end} seconds?",
)

#: The SVQA prefix (VVQA is the same question without it).
TIME_PREFIX = "From {start} seconds to {end} seconds in the video,"

#: VTG: which window shows the description.
VTG_QUESTION = "When does the following happen in the video: {description}"


def _strings(obj: object) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!?")


def format_seconds(value: float) -> str:
    """Seconds as written in questions: the number in the item's ``window`` itself (``str`` of
    the float, as LoMo-Pipe writes it), so text and window always agree."""
    return str(float(value))


def digest() -> str:
    """A short hash of every prompt and template (stages put it in their version)."""
    payload = json.dumps(
        {
            "set": SET_VERSION,
            "prompts": {k: [p.version, p.system, p.user, p.example] for k, p in PROMPTS.items()},
            "templates": [GVS_QUESTIONS, SVS_QUESTIONS, TIME_PREFIX, VTG_QUESTION],
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:10]
