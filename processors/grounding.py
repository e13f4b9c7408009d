"""Is a window item about its window's line? The cheap lexical tests, and the LLM check's
request, that the temporal view (processors/compress.py) runs before it keeps an item.

A window item (SVQA / VVQA / VTG, and SVS whose answer is the line itself) must be answered by
the one subtitle line its window covers. Two tests, cheapest first:

1. lexical (``lexical_problem``): the answer's content words are in the line (more than half
   of them, so both of two: "Ten minutes" for "Knead the dough for ten minutes"; "The candle
   is being lit" for "I fill the candle with fresh water and switch it on" fails), the conclusion
   shares a content word with it, the answer is not the whole line, and no wrong answer is the
   line itself (or contains it) or contains the answer ("swimming in the sea" for "swimming"), no
   wrong answer is what the line also says (all its content words in the line: "bucket" and
   "water" beside the key "warm soapy water" for "I fill a bucket with warm soapy water") or a
   kind of answer named by the prompt ("Place", "Number or action"). Words are
   compared lower-cased, with number words as digits and on their first five letters (so
   "kneads" / "kneading" match "knead").
2. the LLM (``grounding_request``): the line is the only evidence; the model picks the option
   the line supports, by its letter (a wrong answer the line also supports is caught here). The
   key sits at a different letter in each rotation (``rotations``), so a model that always answers
   "A" cannot pass an item. A pick whose words the line supports less than the key's is
   overruled (``pick_overruled``): the weak model's mistake must not cost the video.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from lomo_datasets.llm import prompts as P
from lomo_datasets.llm.backends import TaskSpec, choice_schema

LETTERS = "ABCD"

STOPWORDS = frozenset(
    """a an the and or but if then than so of to in on at by for with from into onto over under up down out
    off about after before while when where what which who whom whose why how is are was were be been being
    am do does did done has have had having it its it's this that these those there here i me my we us our
    you your he him his she her they them their one's not no nor very just also too can could will would
    shall should may might must let lets let's get gets got some any all each every other another such
    own same as like into via per through during until again once both few more most much many only
    first next then finally now today video line yes true false""".split()
)
NUMBERS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "fifteen": "15", "twenty": "20",
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "hundred": "100",
}
#: The kinds of wrong answer the temporal prompt names ("another object, place, number or
#: action"), stemmed: the 1.5B once wrote them as the wrong answers (bench_yield's zh_01_human:
#: "Another object", "Place", "Number or action").
PROMPT_CATEGORIES = frozenset({"objec", "place", "numbe", "actio", "kind", "thing"})
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _stem(word: str) -> str:
    word = NUMBERS.get(word, word)
    if word.isdigit():
        return word
    for suffix in ("ies", "es", "s"):
        if len(word) > 4 and word.endswith(suffix):
            word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    return word[:5]


def content_words(text: str) -> list[str]:
    """The text's content words, lower-cased and stemmed, in order (stop words left out)."""
    return [_stem(w) for w in _WORD.findall((text or "").lower()) if w not in STOPWORDS]


def _norm(text: str) -> str:
    return " ".join(_WORD.findall((text or "").lower()))


def support(text: str, line: str) -> float | None:
    """The share of ``text``'s content words found in ``line`` (None: ``text`` has none)."""
    words = content_words(text)
    if not words:
        return None
    known = set(content_words(line))
    return sum(w in known for w in words) / len(words)


def is_the_line(option: str, line: str, ratio: float = 0.8) -> bool:
    """The option is the line itself: equal or nearly (``difflib`` ratio), or it contains the
    whole line."""
    a, b = _norm(option), _norm(line)
    if not a or not b:
        return False
    return a == b or b in a or difflib.SequenceMatcher(None, a, b).ratio() >= ratio


def _contains(text: str, part: str) -> bool:
    """``part``'s words appear, in order and together, in ``text``."""
    a, b = f" {_norm(text)} ", f" {_norm(part)} "
    return bool(_norm(part)) and b in a


def lexical_problem(item: dict[str, Any], line: str) -> str | None:
    """Why the temporal item (``answer``, ``wrong``, ``conclusion``) is not about ``line`` by
    the lexical test, or None when it passes."""
    answer = item["answer"]
    share = support(answer, line)
    if share is None:
        return f"the answer '{answer[:40]}' has no content word; answer with the line's own words"
    if share <= 0.5:
        known = set(content_words(line))
        missing = [w for w in _WORD.findall(answer.lower()) if w not in STOPWORDS and _stem(w) not in known]
        return (f"the answer '{answer[:40]}' is not what the line says ({', '.join(missing[:3])}: not in the line); "
                "answer with the line's own words")
    if is_the_line(answer, line) and len(content_words(line)) > 3:
        return "the answer is the whole line; answer with a few words of it"
    if len(content_words(answer)) >= 2 and _contains(item.get("question") or "", answer):
        # The audit's answer_in_question (zh_03_human: "Where does the text refer to a Western
        # five-day society?" keyed "Western Five Day Society").
        return (f"the question already says the answer '{answer[:40]}'; ask about the line without "
                "writing the answer in the question")
    if item.get("conclusion") is not None and not (support(item["conclusion"], line) or 0):
        return "the conclusion is not about the line; describe the event of this line"
    for wrong in item["wrong"]:
        if is_the_line(wrong, line):
            return f"a wrong answer ('{wrong[:40]}') is the line itself; write wrong answers the line does not support"
        if _contains(wrong, answer):
            return f"the wrong answer '{wrong[:40]}' contains the correct answer; write wrong answers the line contradicts"
        words = content_words(wrong)
        if words and set(words) <= PROMPT_CATEGORIES:
            return f"the wrong answer '{wrong[:40]}' names a kind of answer; write a concrete wrong answer of that kind"
        if support(wrong, line) == 1:
            said = ", ".join(dict.fromkeys(w for w in _WORD.findall(wrong.lower()) if w not in STOPWORDS))
            return (f"the wrong answer '{wrong[:40]}' is also what the line says ({said[:60]}: all in the line); "
                    "write wrong answers the line contradicts, with a word the line does not say")
    return None


def pick_overruled(picked: str, answer: str, line: str) -> bool:
    """The LLM check picked ``picked`` over the key ``answer``, but the line's own words support
    the key more (a larger share of its content words are in the line): the weak check is wrong,
    not the item ("Knead the dough for 10 minutes": the 1.5B picked "15 minutes" over the key
    "10 minutes"). A pick the line supports as much as the key stands."""
    return (support(picked, line) or 0.0) < (support(answer, line) or 0.0)


def key_positions(seed: int, rotations: int) -> list[int]:
    """The key's letter in each rotation of the LLM check: different letters, from a seeded start."""
    step = 2 if rotations == 2 else 1
    return [(seed + step * k) % 4 for k in range(max(1, min(rotations, 4)))]


def options_with_key_at(answer: str, wrong: list[str], position: int) -> list[str]:
    wrong = list(wrong)[:3]
    return wrong[:position] + [answer] + wrong[position:]


def grounding_task() -> TaskSpec:
    """A letter only: offered \"none\", the embedded 1.5B took it even for an answer the line states
    word for word; an item the line does not support fails anyway, since the key must win at
    every key position."""
    return TaskSpec("grounding", choice_schema("answer", "string", LETTERS), max_new_tokens=12)


def grounding_request(line: str, question: str, options: list[str]) -> tuple[list[dict[str, str]], TaskSpec]:
    """The LLM check's messages: the line as the only evidence, the question and its options."""
    listed = "\n".join(f"{LETTERS[k]}: {o}" for k, o in enumerate(options))
    return P.GROUNDING.messages(line=line.strip(), question=question.strip(), options=listed), grounding_task()


# --------------------------------------------------------------------------------------------
# Bias repair: distractors of comparable length when the key is the longest option
# --------------------------------------------------------------------------------------------


def key_is_longest(answer: str, wrong: list[str]) -> bool:
    """The audit's rule (``audit.checks.answer_is_longest`` with its flag margin)."""
    from lomo_datasets.audit.checks import LONGEST_MARGIN, answer_is_longest

    item = {"options": [f"{LETTERS[k]}: {o.strip()}" for k, o in enumerate([answer, *wrong])], "answer": "A"}
    return answer_is_longest(item, LONGEST_MARGIN)


def distractor_request(question: str, answer: str, max_chars: int, line: str | None = None) -> tuple[list[dict[str, str]], TaskSpec]:
    """Three wrong answers about as long as ``answer`` (bias repair); with ``line`` (a window
    item) none may be the line itself."""
    from lomo_datasets.audit.checks import LONGEST_MARGIN

    n = len(answer.strip())
    low = max(1, int(n / LONGEST_MARGIN) + 1)
    high = max(low + 4, min(max_chars, int(n * 1.2) + 2))
    schema = {
        "type": "object",
        "properties": {"wrong": {"type": "array", "items": {"type": "string", "minLength": low, "maxLength": high},
                                 "minItems": 3, "maxItems": 3}},
        "required": ["wrong"],
        "additionalProperties": False,
    }

    def check(obj: dict[str, Any]) -> None:
        seen = {_norm(answer)}
        for wrong in obj["wrong"]:
            if _norm(wrong) in seen or not _norm(wrong):
                raise ValueError(f"'{wrong[:40]}' repeats the answer or another option")
            seen.add(_norm(wrong))
            if line is not None and is_the_line(wrong, line):
                raise ValueError(f"'{wrong[:40]}' is the subtitle line itself; write wrong answers")
        if key_is_longest(answer, obj["wrong"]):
            raise ValueError(f"the wrong answers are much shorter than the answer; write {low} to {high} characters each")

    messages = P.DISTRACTORS.messages(question=question.strip(), answer=answer.strip(), low=str(low), high=str(high))
    budget = 3 * (high // 3 + 8) + 24
    return messages, TaskSpec("distractors", schema, max_new_tokens=budget, check=check, surplus=("wrong",))
