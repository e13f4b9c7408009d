"""Word-level clipping for LiveCC-style commentary data (pre-training A1 and SFT B3).

From timed text to clip rows:

1. **Words.** ASR word timestamps (the ``words`` column) are used as they are. Timed lines
   (the ``segments`` column, or an SRT/VTT file next to the video) are split into words whose
   times are spread evenly over the line; bracketed lines such as ``[Music]`` are skipped and
   immediate word repeats inside a line are dropped (rolling YouTube captions repeat words).
2. **Clips.** ``mode="pretrain"``: clips of ``min_clip_sec`` to ``max_clip_sec`` seconds, cut
   where the silence between two consecutive words exceeds ``max_silence_sec``; the transcript
   before the clip is kept as ``previous``. ``mode="sft"``: the same rule, but every clip starts
   at a sentence start (the video's first word, or a word whose first character is upper case
   after a word that ends in ``.``, ``?`` or ``!``); the transcript before it is kept as
   ``preasr``.
3. **Words per second.** Every clip gets a ``wps`` score; a ``Filter`` keeps 1 to 4 by default.

``Clip`` is a fan-out stage: one video row becomes zero or more clip rows in a batched map.
A video whose transcript cannot be read gives one row with the error; a video with no clip
gives no row. The pure functions (``split_to_words``, ``pretrain_clips``, ``sft_clips``,
``words_per_second``, ``read_subtitles``) are usable without ``datasets``.

Fixed against the seed: the seed's sentence start tested the whole word with ``isupper()``
(so "The" never started a sentence); here only the first character must be upper case.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from datasets import Features

from lomo_datasets.core import features as F
from lomo_datasets.processors.asr import ends_sentence
from lomo_datasets.core.stage import SettingError, Stage

logger = logging.getLogger(__name__)

SUBTITLE_SUFFIXES = (".srt", ".vtt")

# --------------------------------------------------------------------------------------------
# Timed lines -> words
# --------------------------------------------------------------------------------------------


def _is_bracketed(text: str) -> bool:
    return "[" in text or "]" in text


def split_to_words(lines: Iterable[tuple[float, float, str]], decimals: int = 3) -> list[dict[str, Any]]:
    """Timed lines ``(start, end, text)`` -> words ``{"start", "end", "word"}``.

    Each line's words share its time span evenly. Lines containing ``[`` or ``]`` ("[Music]",
    "[Applause]") are skipped, as are empty lines and immediate repeats of a word inside a line.
    Times are rounded to ``decimals`` places (the seed rounded to 0.1 s).
    """
    words: list[dict[str, Any]] = []
    for start, end, text in lines:
        if text is None or _is_bracketed(text):
            continue
        tokens: list[str] = []
        for token in text.split():
            if not tokens or tokens[-1] != token:
                tokens.append(token)
        if not tokens:
            continue
        start, end = float(start), float(end)
        if end < start:
            start, end = end, start
        step = (end - start) / len(tokens)
        for i, token in enumerate(tokens):
            words.append(
                {
                    "start": round(start + i * step, decimals),
                    "end": round(start + (i + 1) * step, decimals),
                    "word": token,
                }
            )
    return words


_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
_TAG = re.compile(r"<[^>]*>")


def _seconds(match: re.Match) -> float:
    hours, minutes, seconds, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis.ljust(3, "0")) / 1000


def parse_subtitles(text: str, rolling: bool | None = None) -> list[tuple[float, float, str]]:
    """Cues of an SRT or WebVTT document as ``(start, end, text)``; markup tags are removed.

    Both formats are blocks separated by blank lines with a ``start --> end`` timing line; SRT
    uses ``,`` before the milliseconds and VTT ``.``, and VTT hours are optional.

    ``rolling`` (default: on for WebVTT): YouTube's automatic captions roll, so each cue
    repeats the previous cue's last line before its new one; a first line equal to the previous
    cue's last line is dropped, and a cue left empty is skipped.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if rolling is None:
        rolling = text.lstrip("\ufeff").startswith("WEBVTT")
    cues: list[tuple[float, float, str]] = []
    previous: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip("\n").split("\n")
        for k, line in enumerate(lines):
            if "-->" not in line:
                continue
            left, _, right = line.partition("-->")
            start, end = _TIME.search(left), _TIME.search(right)
            if start is None or end is None:
                break
            body = [" ".join(_TAG.sub("", t).split()) for t in lines[k + 1 :]]
            body = [t for t in body if t]
            new = body[1:] if rolling and body and previous and body[0] == previous[-1] else body
            previous = body or previous
            if new or not rolling:
                cues.append((_seconds(start), _seconds(end), " ".join(new)))
            break
    return cues


def read_subtitles(path: str | os.PathLike) -> list[tuple[float, float, str]]:
    """Cues of an ``.srt`` or ``.vtt`` file."""
    raw = Path(path).read_bytes()
    return parse_subtitles(raw.decode("utf-8-sig", errors="replace"))


def find_subtitles(video: str) -> Path | None:
    """An SRT/VTT file beside ``video``: ``NAME.srt``, ``NAME.vtt`` or ``NAME.<lang>.vtt``
    (the names yt-dlp writes with ``--write-subs``); English first, then any."""
    if not video:
        return None
    path = Path(video)
    stem = path.with_suffix("")
    for suffix in SUBTITLE_SUFFIXES:
        for candidate in (stem.with_name(stem.name + suffix), stem.with_name(stem.name + ".en" + suffix)):
            if candidate.is_file():
                return candidate
    if path.parent.is_dir():
        for candidate in sorted(path.parent.glob(f"{stem.name}.*")):
            if candidate.suffix.lower() in SUBTITLE_SUFFIXES and candidate.is_file():
                return candidate
    return None


# --------------------------------------------------------------------------------------------
# Clipping
# --------------------------------------------------------------------------------------------


def is_sentence_start(words: Sequence[dict[str, Any]], i: int) -> bool:
    """The first word, or a word whose first character is upper case following a word that
    ends a sentence (``asr.ends_sentence``: the rule subtitle lines use too)."""
    if i == 0:
        return True
    word = words[i]["word"].strip()
    return bool(word) and word[0].isupper() and ends_sentence(words[i - 1]["word"], word)


def _extend(words: Sequence[dict[str, Any]], i: int, max_clip_sec: float, max_silence_sec: float) -> int:
    """End (exclusive) of the longest run from word ``i`` with no gap over ``max_silence_sec``
    and a span of at most ``max_clip_sec``."""
    start = words[i]["start"]
    j = i + 1
    while j < len(words):
        if words[j]["start"] - words[j - 1]["end"] > max_silence_sec:
            break
        if words[j]["end"] - start > max_clip_sec:
            break
        j += 1
    return j


def _clips(
    words: Sequence[dict[str, Any]],
    min_clip_sec: float,
    max_clip_sec: float,
    max_silence_sec: float,
    starts_ok,
) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    i = 0
    n = len(words)
    while i < n:
        if not starts_ok(words, i) or words[i]["end"] - words[i]["start"] > max_clip_sec:
            i += 1
            continue
        j = _extend(words, i, max_clip_sec, max_silence_sec)
        if words[j - 1]["end"] - words[i]["start"] >= min_clip_sec:
            spans.append((i, j))
        i = j
    return spans


def pretrain_clips(
    words: Sequence[dict[str, Any]],
    min_clip_sec: float = 30.0,
    max_clip_sec: float = 240.0,
    max_silence_sec: float = 3.0,
) -> list[tuple[int, int]]:
    """Word index spans ``[i, j)`` of pre-training clips.

    Greedy from the first word: a clip grows word by word until the next word comes after a
    silence over ``max_silence_sec`` or would make the clip longer than ``max_clip_sec``; it is
    kept when it lasts at least ``min_clip_sec`` (first word's start to last word's end), and
    the next clip starts at the word where this one stopped.
    """
    return _clips(words, min_clip_sec, max_clip_sec, max_silence_sec, lambda w, i: True)


def sft_clips(
    words: Sequence[dict[str, Any]],
    min_clip_sec: float = 30.0,
    max_clip_sec: float = 240.0,
    max_silence_sec: float = 3.0,
) -> list[tuple[int, int]]:
    """Like ``pretrain_clips``, but every clip starts at a sentence start
    (see ``is_sentence_start``)."""
    return _clips(words, min_clip_sec, max_clip_sec, max_silence_sec, is_sentence_start)


def words_per_second(words: Sequence[dict[str, Any]]) -> float | None:
    """Words divided by the span from the first word's start to the last word's end."""
    if not words:
        return None
    span = words[-1]["end"] - words[0]["start"]
    return len(words) / span if span > 0 else None


def join_words(words: Sequence[dict[str, Any]]) -> str:
    """A clip's words as one text, joined by spaces (the one helper for it)."""
    return " ".join(w["word"].strip() for w in words if w["word"].strip())


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------

CONTENT = F.CONTENT


class NoClipsError(ValueError):
    """A video that gives no clip (no speech, or too little): its row fails with this reason."""


MODES = ("pretrain", "sft")
SOURCES = ("auto", "words", "segments", "subtitles")


@dataclass
class Clip(Stage):
    """Fan-out: one video row -> one row per clip.

    ``source``: where the timed text comes from. ``"words"`` (ASR word timestamps),
    ``"segments"`` (timed lines, split evenly), ``"subtitles"`` (an SRT/VTT file beside the
    video, see ``find_subtitles``), or ``"auto"``: a subtitle file when there is one, else the
    words, else the segments.

    Each clip row keeps the video's columns and gets ``clip_id``, ``content`` (the clip's
    words), ``video_start``/``video_end``, ``wps``, the transcript before the clip (``previous``
    for pre-training, ``preasr`` for SFT), and ``words``/``segments`` cut to the clip.
    """

    name = "clip"
    version = "1"
    reads = ("video_id", "video", "words", "segments")
    fan_out = True
    rows_per_batch = 16

    mode: str = "pretrain"
    source: str = "auto"
    min_clip_sec: float = 30.0
    max_clip_sec: float = 240.0
    max_silence_sec: float = 3.0

    def validate(self) -> None:
        if self.mode not in MODES:
            raise SettingError(f"clip.mode={self.mode!r}: use one of {MODES}")
        if self.source not in SOURCES:
            raise SettingError(f"clip.source={self.source!r}: use one of {SOURCES}")
        for key in ("min_clip_sec", "max_clip_sec", "max_silence_sec"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise SettingError(f"clip.{key}={value!r}: use a number of seconds >= 0")
        if self.max_clip_sec <= 0 or self.min_clip_sec > self.max_clip_sec:
            raise SettingError(
                f"clip: min_clip_sec ({self.min_clip_sec}) must be <= max_clip_sec ({self.max_clip_sec}) and max > 0"
            )

    @property
    def context_column(self) -> str:
        return "previous" if self.mode == "pretrain" else "preasr"

    def features(self) -> Features:
        other = "preasr" if self.mode == "pretrain" else "previous"
        clip = {k: v for k, v in F.CLIP.items() if k != other}
        return Features({**clip, "words": F.WORDS, "segments": F.SEGMENTS})

    def timed_words(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The row's words (with ``probability`` where the ASR gave one), sorted by time."""
        source = self.source
        subtitle = None
        if source in ("auto", "subtitles"):
            subtitle = find_subtitles(row.get("video") or "")
            if subtitle is None and source == "subtitles":
                raise FileNotFoundError(f"no .srt/.vtt file beside {row.get('video')}")
        if subtitle is not None:
            words = split_to_words(read_subtitles(subtitle))
        elif source in ("auto", "words") and row.get("words"):
            words = [
                {"start": float(w["start"]), "end": float(w["end"]), "word": w["word"].strip(), "probability": w.get("probability")}
                for w in row["words"]
                if w.get("word") and w["word"].strip() and w.get("start") is not None and w.get("end") is not None
            ]
        elif source in ("auto", "segments") and row.get("segments"):
            words = split_to_words((s["start"], s["end"], s["text"]) for s in row["segments"])
        else:
            words = []
        words.sort(key=lambda w: (w["start"], w["end"]))
        return words

    def process_row(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        words = self.timed_words(row)
        find = pretrain_clips if self.mode == "pretrain" else sft_clips
        spans = find(words, self.min_clip_sec, self.max_clip_sec, self.max_silence_sec)
        if not spans:  # the video stays in the run's accounting, failed with the reason
            raise NoClipsError(
                f"no clip of {self.min_clip_sec:g}-{self.max_clip_sec:g} s: "
                + (f"{len(words)} timed words" if words else "no speech (no timed words, no subtitles)")
            )
        segments = row.get("segments") or []
        tokens = [w["word"].strip() for w in words]  # joined per clip for the context
        out = []
        for index, (i, j) in enumerate(spans):
            clip = words[i:j]
            start, end = clip[0]["start"], clip[-1]["end"]
            out.append(
                {
                    "clip_id": f"{row.get('video_id')}_{index:04d}",
                    "clip_index": index,
                    "content": [{"start": w["start"], "end": w["end"], "word": w["word"]} for w in clip],
                    self.context_column: " ".join(t for t in tokens[:i] if t),
                    "video_start": start,
                    "video_end": end,
                    "wps": words_per_second(clip),
                    "words": [{**w, "probability": w.get("probability")} for w in clip],
                    "segments": [s for s in segments if s["end"] > start and s["start"] < end],
                }
            )
        return out


__all__ = [
    "Clip",
    "CONTENT",
    "split_to_words",
    "parse_subtitles",
    "read_subtitles",
    "find_subtitles",
    "is_sentence_start",
    "pretrain_clips",
    "sft_clips",
    "words_per_second",
    "join_words",
]
