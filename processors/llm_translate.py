"""Subtitle translation with an instruct LLM (``translate.model=embedded:qwen2.5-coder-1.5b``,
what ``--embedded`` sets): the offline path when no CTranslate2 translation model is at hand.

A row's subtitle lines go out in numbered chunks of at most ``lines_per_request``; the reply is
JSON ``{"lines": [...]}`` whose schema asks for exactly as many strings as the chunk has lines,
so the translation is line for line and keeps every line's ``start`` and ``end``. A reply is
refused (and retried by the LLM layer, whose retry prompt says why) when a line is empty, still
holds Chinese, Japanese or Korean script while the target is a Latin-script language, or repeats
an earlier line whose source line differs (the sign of lines merged and padded: the timestamps
would no longer match), or when a line does not match its source line (``alignment_problem``:
a number or a Latin-script name of the source line missing from its translation, or a length
far from what the chunk's other lines give: the sign of two lines merged and the rest shifted
up, with an invented last line to keep the count), or when a line is the model's note instead of
a translation (``echo_problem``: in <...>, about the request, or the retry note's words).
Empty input lines stay empty and are not sent.

Degrades, not fails (``TranslateToEnglish.run_batch``): a chunk that stays invalid after its tries
is split in halves, a half in single lines, and retried; a row fails only when a single line
cannot be translated. ``LEVELS`` names what translated each part (``chunk``, ``half``, ``line``);
the row's ``generation`` column counts them.
"""

from __future__ import annotations

import re
from typing import Any

from lomo_datasets.llm import prompts as P
from lomo_datasets.llm.stage import TaskSpec
from lomo_datasets.processors.aggregate import stop_phrase

#: Language names for the prompt (ISO 639-1 codes, as Whisper writes them).
NAMES = {
    "zh": "Chinese", "en": "English", "ja": "Japanese", "ko": "Korean", "yue": "Cantonese", "fr": "French",
    "de": "German", "es": "Spanish", "ru": "Russian", "pt": "Portuguese", "it": "Italian", "vi": "Vietnamese",
    "th": "Thai", "ar": "Arabic", "hi": "Hindi", "id": "Indonesian", "tr": "Turkish",
}
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_LATIN_TARGETS = {"en", "fr", "de", "es", "pt", "it", "id", "tr", "vi"}


def language_name(code: str | None) -> str:
    code = (code or "").lower().split("-")[0]
    return NAMES.get(code, code or "the source language")


def chunks(lines: list[dict[str, Any]], size: int) -> list[list[int]]:
    """Indices of the lines with text, in groups of at most ``size``."""
    todo = [i for i, line in enumerate(lines) if (line.get("text") or "").strip()]
    return [todo[k : k + size] for k in range(0, len(todo), size)]


LEVELS = ("chunk", "half", "line")
_DIGITS = re.compile(r"\d+")
_LATIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]+")
#: Characters of the target per source character, when the chunk's own lines give no better
#: figure: CJK to a Latin-script language (about 3.5 for zh -> en in the embedded model's output).
_RATIO_LIMITS = (0.8, 12.0)


#: A line is out of step when its translation is this many times longer or shorter (plus the
#: slack, for short lines) than the chunk's median characters-per-source-character predicts: the
#: reply that merged two lines of eight had one line 2x and the invented last one 0.45x; correct
#: reference translation of those eight lines stays within 1.3x. A false alarm costs a split, never a line.
LENGTH_FACTOR = 1.6
LENGTH_SLACK = 8


def _numbers(text: str) -> set[str]:
    return {d.lstrip("0") or "0" for d in _DIGITS.findall(text)}


def alignment_problem(texts: list[str], lines: list[str]) -> str | None:
    """Why the translation ``lines`` of ``texts`` (same count) look shifted, or None.

    Per line: numbers (digits) and Latin-script names of the source are in the translation;
    its length is within ``LENGTH_FACTOR`` (plus ``LENGTH_SLACK`` characters) of what the chunk's median
    characters-per-source-character predicts (only for chunks of three lines or more, where the
    median means something)."""
    for k, (src, out) in enumerate(zip(texts, lines), start=1):
        missing = _numbers(src) - _numbers(out)
        if missing:
            return f"line {k}'s translation lacks the number {sorted(missing)[0]} of its source line: translate each numbered line on its own"
        names = {w.lower() for w in _LATIN_NAME.findall(src) if len(w) >= 2} if _CJK.search(src) else set()
        if names and not all(n in out.lower() for n in names):
            return f"line {k}'s translation lacks a name of its source line: translate each numbered line on its own"
    sized = [(len(src.strip()), len(out.strip())) for src, out in zip(texts, lines) if src.strip()]
    if len(sized) >= 3:
        ratios = sorted(o / s for s, o in sized)
        median = min(max(ratios[len(ratios) // 2], _RATIO_LIMITS[0]), _RATIO_LIMITS[1])
        for k, (s_len, o_len) in enumerate(sized, start=1):
            expected = median * s_len
            if o_len > LENGTH_FACTOR * expected + LENGTH_SLACK or o_len * LENGTH_FACTOR + LENGTH_SLACK < expected:
                return (f"line {k}'s translation is {o_len} characters for a source line that gives about {expected:.0f}: "
                        "lines look merged or shifted; translate each numbered line on its own")
    return None


#: A line in angle brackets: the reply template's ``<text, ...>`` placeholder shape, or a note
#: to the reader (bench_yield's zh_07, a Whisper loop: "<The chicken is still waiting for the reply.>").
_BRACKETED = re.compile(r"^\s*<[^<>]*>\s*$")
#: The model talking about the request instead of translating it (zh_07: "I am unable to respond
#: to your previous request due to the errors in the Chinese input"). Only phrases about the
#: request itself: "I cannot", "I'm sorry", "your request" are ordinary speech.
META_PHRASES = ("as an ai", "language model", "previous reply", "previous request", "placeholder",
                "unable to respond", "unable to translate", "cannot translate", "can't translate")


#: The fixed words of the machinery around the prompt (the retry's note, json_shape's template),
#: four in a row: a translated line holding one repeats them (zh_07: "<A previous reply was
#: refused (lines/0 is the template's placeholder, not a value). Replace every <...> ...>").
#: Not the prompt's own sentences: "may have made mistakes" is something a speaker says.
_MACHINERY = re.findall(r"[a-z0-9']+", "a previous reply was refused. write a new reply that avoids this. reply with this "
                        "json object only, filled in. replace every placeholder of the template with your own text")
MACHINERY_PHRASES = [" ".join(_MACHINERY[k : k + 4]) for k in range(len(_MACHINERY) - 3)]


def echo_problem(line: str, source: str) -> str | None:
    """Why the translated ``line`` is not a translation but the model's note, refusal or an
    echo of its instructions, or None. A phrase its ``source`` line also holds (a Latin-script
    source that says "placeholder") does not count. Phrases match as QC's stop words do."""
    if _BRACKETED.match(line):
        return "is written in <...>: write the line's translation itself, without angle brackets"
    hit = stop_phrase([line], list(META_PHRASES))
    if hit and not stop_phrase([source], [hit]):
        return f"says '{hit}', which is about the request, not the video: translate what the line says"
    if stop_phrase([line], MACHINERY_PHRASES):
        return "repeats the instructions, not the line: translate what the line says"
    return None


def split(group: list[int], level: str) -> tuple[list[list[int]], str]:
    """The parts a failed part is retried as: a chunk in halves, a half in single lines."""
    if level == "chunk" and len(group) > 2:
        middle = (len(group) + 1) // 2
        return [group[:middle], group[middle:]], "half"
    return [[i] for i in group], "line"


def translation_task(texts: list[str], target: str, max_chars: int) -> TaskSpec:
    """Exactly ``len(texts)`` translated lines, each non-empty, in the target's script."""
    n = len(texts)
    schema = {
        "type": "object",
        "properties": {
            "lines": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": max_chars},
                "minItems": n,
                "maxItems": n,
            }
        },
        "required": ["lines"],
        "additionalProperties": False,
    }
    latin = target.lower().split("-")[0] in _LATIN_TARGETS

    def check(obj: dict[str, Any]) -> None:
        seen: dict[str, int] = {}
        for k, line in enumerate(obj["lines"], start=1):
            if not line.strip():
                raise ValueError(f"line {k} is empty")
            if latin and _CJK.search(line):
                # Not quoted: shown the untranslated text again, small models copy it.
                raise ValueError(f"line {k} still has untranslated words; write every word in {language_name(target)}")
            echo = echo_problem(line, texts[k - 1])
            if echo:
                raise ValueError(f"line {k} {echo}")
            key = " ".join(line.lower().split())
            first = seen.setdefault(key, k)
            if first != k and " ".join(texts[first - 1].split()) != " ".join(texts[k - 1].split()):
                raise ValueError(
                    f"line {k} repeats line {first} although their source lines differ: "
                    f"translate each numbered line on its own, {n} lines for {n} lines"
                )
        problem = alignment_problem(texts, obj["lines"])
        if problem:
            raise ValueError(problem)

    # About two tokens per source character (CJK) or per word, plus the JSON around each line.
    budget = sum(min(2 * len(t) + 12, max_chars // 2 + 12) for t in texts) + 24
    return TaskSpec("translate", schema, max_new_tokens=budget, check=check)


def translation_request(texts: list[str], source: str | None, target: str, max_chars: int) -> tuple[list[dict[str, str]], TaskSpec]:
    """The chat messages and the task for one chunk of subtitle lines."""
    numbered = "\n".join(f"{k}. {t.strip()}" for k, t in enumerate(texts, start=1))
    messages = P.TRANSLATE.messages(
        count=str(len(texts)), source=language_name(source), target=language_name(target), lines=numbered
    )
    return messages, translation_task(texts, target, max_chars)


def assemble(lines: list[dict[str, Any]], groups: list[list[int]], answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``lines`` with their texts replaced by the translations (same start and end, same order)."""
    texts = ["" for _ in lines]
    for group, answer in zip(groups, answers):
        for i, text in zip(group, answer["lines"]):
            texts[i] = text.strip()
    return [{"start": line.get("start"), "end": line.get("end"), "text": text} for line, text in zip(lines, texts)]
