"""Speech recognition with faster-whisper: ``Transcribe`` and its quality flags.

``Transcribe`` decodes each row's audio in memory (``lomo_datasets.media.decode.decode_audio``, no
temporary wav), runs faster-whisper (``BatchedInferencePipeline`` when ``batch_size > 1``) and
writes::

    language, language_probability       what Whisper detected (or the language it was given)
    segments  [{start, end, text}]       short subtitle lines (see ``split_lines``)
    words     [{start, end, word, probability}]
    asr_score, asr_flags, asr_stats      likely-hallucination score and its reasons

Short lines come from the word timestamps, not from ``chunk_length=5`` as LoMo-Pipe did (that
makes ASR about 4x slower on the same model): a line ends at a sentence end, at a pause, or
before it grows past ``max_line_seconds``.

Presets follow the two upstream pipelines; each is a ``Transcribe`` subclass whose field
defaults are the preset (recipe steps use the classes)::

    LomoTranscribe()      # Transcribe.preset("lomo"): large-v2, language detected (Mandarin prompt for Mandarin), beam 5, VAD
    LiveCCTranscribe()    # Transcribe.preset("livecc"): large-v3-turbo, batched (16), word timestamps

and each carries the right ``--embedded`` model (``embedded:whisper-base`` for Mandarin,
``embedded:whisper-tiny.en`` for English).

Quality: ``asr_score`` is the share of transcribed time in segments with no warning sign
(1.0 clean, 0.0 all suspicious or nothing transcribed); ``asr_flags`` names the reasons
(``repetition``, ``high_compression``, ``low_logprob``, ``no_speech_text``, ``empty``). Drop
rows with the two-step filter, e.g. ``Filter("asr_quality", column="asr_score", low=0.5)``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Sequence

from datasets import Features

from lomo_datasets.core import features as F
from lomo_datasets.media import decode as media
from lomo_datasets.models.zoo import resolve_model
from lomo_datasets.core.stage import SettingError, Stage, auto_precision, seeded_random, split_device

logger = logging.getLogger(__name__)

#: Characters that end a sentence, in Latin and CJK scripts.
SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")
#: Characters that end a clause: where a line that grows too long is cut (Latin and CJK).
CLAUSE_END = (",", ";", ":", "，", "、", "；", "：")
#: Words with a period that do not end a sentence.
ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "e.g", "i.e", "approx"})

_TASKS = ("transcribe", "translate")
_COMPUTE_TYPES = (
    "auto", "default", "int8", "int8_float32", "int8_float16", "int8_bfloat16",
    "int16", "float16", "bfloat16", "float32",
)

ASR_STATS = F.ASR_QUALITY["asr_stats"]


# --------------------------------------------------------------------------------------------
# Helpers (pure functions, usable without a model)
# --------------------------------------------------------------------------------------------


def _base(language: str | None) -> str:
    """"zh-CN" -> "zh"; None -> ""."""
    return (language or "").lower().split("-")[0].split("_")[0]


def ends_sentence(word: str, following: str | None) -> bool:
    """Whether ``word`` ends a sentence: it ends in ``.?!。？！`` and is no abbreviation
    ("Mr.", "e.g.", an initial), and the next word (if any) does not start in lower case.
    The package's one sentence-boundary rule: subtitle lines end here, clips start after it."""
    word = word.strip()
    if not word.endswith(SENTENCE_END):
        return False
    if word.lower().rstrip(".") in ABBREVIATIONS or (len(word) == 2 and word[0].isalpha() and word[1] == "."):
        return False
    nxt = (following or "").strip()
    return not (nxt[:1].isalpha() and nxt[:1].islower())


def split_lines(
    words: Sequence[dict[str, Any]],
    max_seconds: float = 5.0,
    pause: float = 0.5,
) -> list[dict[str, Any]]:
    """Subtitle lines ``{start, end, text}`` from timed words.

    A line ends after a word that ends a sentence (``.?!。？！``, not "Mr." or an initial, and
    not before a lower-case word), before a silence of at least ``pause`` seconds, or when the
    next word would make it longer than ``max_seconds``: then after its last clause mark
    (``,;:，、；：``) if it has one (the rest starts the next line), else before that word.
    Word texts are joined as Whisper wrote them (English words carry their leading space,
    Chinese characters none), so the same rule works for both scripts.
    """
    lines: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []

    def close(upto: int | None = None) -> None:
        part = current[:upto]  # None: all of it
        del current[: len(part)]
        text = "".join(w["word"] for w in part).strip()
        if text:
            lines.append({"start": part[0]["start"], "end": part[-1]["end"], "text": text})

    for i, word in enumerate(words):
        if current and word["start"] - current[-1]["end"] >= pause:
            close()
        if current and word["end"] - current[0]["start"] > max_seconds:
            marks = [k for k, w in enumerate(current) if w["word"].strip().endswith(CLAUSE_END)]
            close(marks[-1] + 1 if marks else None)
            if current and word["end"] - current[0]["start"] > max_seconds:
                close()
        current.append(word)
        following = words[i + 1]["word"] if i + 1 < len(words) else None
        if ends_sentence(word["word"], following):
            close()
    close()
    return lines


def _same_text(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def merge_repeats(lines: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``lines`` with each run of consecutive lines of the same text (case, spaces and
    punctuation aside) written once, spanning the run's times.

    Whisper caught in a loop writes one phrase over and over (whisper-base on a human Mandarin
    clip: "声息一呼。" 36 times in 11 seconds); as subtitles that is one line, not 36 windows of
    questions about the same words. The words and the quality flags (``repetition``) keep what
    Whisper wrote."""
    out: list[dict[str, Any]] = []
    for line in lines:
        if out and _same_text(line["text"]) and _same_text(line["text"]) == _same_text(out[-1]["text"]):
            out[-1] = {**out[-1], "end": max(out[-1]["end"], line["end"])}
        else:
            out.append(dict(line))
    return out


def compression_ratio(text: str) -> float:
    """Whisper's measure of repetitive text: UTF-8 length over zlib-compressed length."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _tokens(text: str) -> list[str]:
    """Words for Latin scripts, single characters for CJK (no spaces between words there)."""
    out: list[str] = []
    for piece in text.lower().split():
        if any("\u3000" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" for ch in piece):
            out.extend(ch for ch in piece if ch.isalnum())
        else:
            word = piece.strip(".,!?;:\"'()[]")
            if word:
                out.append(word)
    return out


def longest_repeat(text: str, max_n: int = 8) -> int:
    """How many times in a row the most repeated n-gram (n <= ``max_n`` tokens) occurs.

    "thank you thank you thank you" gives 3; ordinary text gives 1 (or 2 for a doubled word).
    """
    tokens = _tokens(text)
    best = 1 if tokens else 0
    for n in range(1, max_n + 1):
        i = 0
        while i + 2 * n <= len(tokens):
            count = 1
            while tokens[i + count * n: i + (count + 1) * n] == tokens[i: i + n]:
                count += 1
            if count > best:
                best = count
            i += max(1, (count - 1) * n) if count > 1 else 1
    return best


@dataclass(frozen=True)
class QualityThresholds:
    """When a segment or a row counts as a likely hallucination (Whisper's own defaults)."""

    compression_ratio: float = 2.4
    logprob: float = -1.0
    no_speech: float = 0.6
    repetition: int = 4


def assess(segments: Iterable[Any], thresholds: QualityThresholds = QualityThresholds()) -> dict[str, Any]:
    """``asr_score``, ``asr_flags`` and ``asr_stats`` for faster-whisper segments.

    A segment is suspicious when its compression ratio is above the threshold, its average
    log-probability below it, it has text although Whisper thinks there is no speech
    (``no_speech_prob`` high), or its text loops (an n-gram repeated ``repetition`` times). The
    score is the share of transcribed seconds in segments that are not suspicious; a row with
    no text scores 0.0 and is flagged ``empty``.
    """
    segments = [s for s in segments if s.text.strip()]
    if not segments:
        return {
            "asr_score": 0.0,
            "asr_flags": ["empty"],
            "asr_stats": {k: None for k in ASR_STATS} | {"repetition": 0, "speech_seconds": 0.0},
        }
    flags: set[str] = set()
    total = bad = 0.0
    for seg in segments:
        seconds = max(float(seg.end - seg.start), 0.01)
        reasons = []
        if seg.compression_ratio > thresholds.compression_ratio:
            reasons.append("high_compression")
        if seg.avg_logprob < thresholds.logprob:
            reasons.append("low_logprob")
        if seg.no_speech_prob > thresholds.no_speech:
            reasons.append("no_speech_text")
        if longest_repeat(seg.text) >= thresholds.repetition:
            reasons.append("repetition")
        total += seconds
        if reasons:
            bad += seconds
            flags.update(reasons)
    text = " ".join(s.text.strip() for s in segments)
    repeat = longest_repeat(text)
    if repeat >= thresholds.repetition and "repetition" not in flags:
        flags.add("repetition")  # a loop across segment boundaries: the whole row is suspect
        bad = total
    weights = [max(float(s.end - s.start), 0.01) for s in segments]
    mean = lambda values: sum(v * w for v, w in zip(values, weights)) / sum(weights)  # noqa: E731
    return {
        "asr_score": round(float(1.0 - bad / total), 4),
        "asr_flags": sorted(flags),
        "asr_stats": {
            "avg_logprob": round(float(mean([s.avg_logprob for s in segments])), 4),
            "compression_ratio": round(compression_ratio(text), 4),
            "no_speech_prob": round(float(max(s.no_speech_prob for s in segments)), 4),
            "repetition": repeat,
            "speech_seconds": round(total, 3),
        },
    }


_NUMBER_WORDS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


def normalize_english(text: str) -> str:
    """Lower case, no punctuation, hyphens as spaces, common abbreviations spelled out.

    For word error rates against reference transcripts written out in words (LibriSpeech
    style): "Mr. Dashwood's cold-hearted" -> "mister dashwood's cold hearted".
    """
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    words = [w.strip("'") for w in text.split()]
    return " ".join(_NUMBER_WORDS.get(w, w) for w in words if w)


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


@dataclass
class Transcribe(Stage):
    """faster-whisper ASR over the ``video`` column (any file PyAV reads, audio-only too).

    Rows with ``video_start``/``video_end`` (clips) transcribe only that range; timestamps are
    always seconds in the source file. A file with no audio track or that cannot be decoded
    gets a row error; silence gives empty segments flagged ``empty``.
    """

    name: ClassVar[str] = "asr"
    version: ClassVar[str] = "1"
    reads: ClassVar[tuple[str, ...]] = ("video",)
    requires: ClassVar[dict[str, str]] = {"faster_whisper": "asr"}
    rows_per_batch: ClassVar[int] = 8
    #: CTranslate2 runs its own thread pools, which a forked worker can inherit mid-use as
    #: torch's can: start workers with spawn, as for torch stages.
    start_method: ClassVar[str | None] = "spawn"
    embedded_setting: ClassVar[str | None] = "model"
    embedded_model: ClassVar[str | None] = "embedded:whisper-tiny.en"

    #: Whisper size ("large-v2", "large-v3-turbo"), a hub id or local path of a CTranslate2
    #: conversion, or an ``embedded:*`` model.
    model: str = "large-v3-turbo"
    #: "auto": ``stage.auto_precision`` (int8 on CPU, float16 on GPU); any CTranslate2 compute type.
    compute_type: str = "auto"
    #: Above 1, faster-whisper's BatchedInferencePipeline decodes this many chunks at once.
    batch_size: int = 1
    beam_size: int = 5
    vad_filter: bool = True
    #: None lets Whisper detect it per row. A row's own ``language`` (a manifest column or
    #: download metadata) comes first: mixed collections set it per video.
    language: str | None = None
    initial_prompt: str | None = None
    #: The initial prompt is used only for speech in this language (detected or given); None:
    #: for any. The LoMo preset's Mandarin prompt has "zh", so English is never prompted in
    #: Chinese (Whisper would then write it as Chinese).
    prompt_language: str | None = None
    word_timestamps: bool = True
    #: Seconds per Whisper window (None: the model's 30 s). Short lines come from split_lines.
    chunk_length: int | None = None
    task: str = "transcribe"
    condition_on_previous_text: bool = True
    #: Decoding temperature, or the fallback ladder faster-whisper climbs when an output fails
    #: its compression-ratio / log-prob checks (its default). Sampling at the higher steps is not
    #: seeded, so hard audio can give a different transcript per run: 0 is greedy and
    #: reproducible.
    temperature: float | tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    #: CPU threads per model call (a fixed number: the output depends on it; see
    #: ``stage.DEFAULT_CPU_THREADS``). More speed on a CPU: ``--num-proc``.
    cpu_threads: int = 1
    #: Model replicas per process (faster-whisper's num_workers); rows run in that many threads.
    models_per_gpu: int = 1
    #: Write short subtitle lines built from the word timestamps (else Whisper's segments).
    split_lines: bool = True
    #: Consecutive lines with the same text (a Whisper loop) become one line spanning them
    #: (``merge_repeats``).
    merge_repeats: bool = True
    max_line_seconds: float = 5.0
    line_pause: float = 0.5
    #: A transcript that fails the hallucination tests (``asr_score`` below ``LOOP_SCORE``: most
    #: often a greedy loop, "鸡 鸡 鸡 ..." for a real Mandarin voice) is decoded once more with
    #: faster-whisper's ``repetition_penalty`` at this value, and the one with the higher
    #: ``asr_score`` is kept. Deterministic, unlike the sampled temperature ladder. 1.0: off.
    loop_penalty: float = 1.3
    #: Thresholds of the quality flags (Whisper's defaults).
    max_compression_ratio: float = 2.4
    min_avg_logprob: float = -1.0
    max_no_speech_prob: float = 0.6
    max_repetition: int = 4

    # -- settings --------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "Transcribe":
        """A stage with the settings of preset ``name`` ("lomo", "livecc") and ``overrides``."""
        if name not in PRESET_STAGES:
            raise SettingError(f"unknown asr preset '{name}'; known: {', '.join(sorted(PRESET_STAGES))}")
        return PRESET_STAGES[name](**overrides)

    def validate(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise SettingError("asr.model must be a Whisper size, hub id, local path or embedded:* name")
        if self.task not in _TASKS:
            raise SettingError(f"asr.task={self.task!r}: use 'transcribe' or 'translate'")
        if self.compute_type not in _COMPUTE_TYPES:
            raise SettingError(f"asr.compute_type={self.compute_type!r}: use one of {', '.join(_COMPUTE_TYPES)}")
        for key in ("batch_size", "beam_size", "models_per_gpu", "max_repetition"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingError(f"asr.{key} must be an integer >= 1, got {value!r}")
        if not isinstance(self.cpu_threads, int) or self.cpu_threads < 1:
            raise SettingError(f"asr.cpu_threads must be an integer >= 1 (threads per model call), got {self.cpu_threads!r}")
        steps = self.temperature if isinstance(self.temperature, (list, tuple)) else [self.temperature]
        if not steps or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 2 for t in steps):
            raise SettingError(f"asr.temperature must be a number in [0, 2] or a list of them, got {self.temperature!r}")
        if not isinstance(self.loop_penalty, (int, float)) or isinstance(self.loop_penalty, bool) or not 1.0 <= self.loop_penalty <= 3.0:
            raise SettingError(f"asr.loop_penalty must be a number from 1.0 (off) to 3.0, got {self.loop_penalty!r}")
        if self.chunk_length is not None and (not isinstance(self.chunk_length, int) or not 1 <= self.chunk_length <= 30):
            raise SettingError(f"asr.chunk_length must be null or 1..30 seconds, got {self.chunk_length!r}")
        if self.max_line_seconds <= 0 or self.line_pause <= 0:
            raise SettingError("asr.max_line_seconds and asr.line_pause must be > 0 seconds")
        if self.split_lines and not self.word_timestamps:
            raise SettingError("asr.split_lines needs asr.word_timestamps=true (or set asr.split_lines=false)")
        english_only = self.model.endswith(".en")
        if english_only and self.language not in (None, "en"):
            raise SettingError(
                f"asr.model={self.model!r} is English-only but asr.language={self.language!r}; "
                "use a multilingual model (e.g. embedded:whisper-base or large-v3)"
            )
        if english_only and self.task == "translate":
            raise SettingError(f"asr.model={self.model!r} is English-only and cannot translate; use a multilingual model")

    def features(self) -> Features:
        return F.ASR

    # -- model -----------------------------------------------------------------------------

    def model_key(self) -> tuple:
        return (self.model, self.compute_type, self.cpu_threads, self.models_per_gpu)

    def model_repo(self) -> str | None:
        """The Hub repo of ``model`` (a Whisper size maps to faster-whisper's conversion), for
        the check before any row (``lomo_datasets.models.check``)."""
        from faster_whisper import utils

        sizes = getattr(utils, "_MODELS", {})
        return sizes.get(self.model) or (self.model if self.model.count("/") == 1 else None)

    def model_library(self) -> str:
        return "ctranslate2"

    def load_model(self, device: str) -> Any:
        from faster_whisper import WhisperModel

        kind, index = split_device(device)
        compute_type = auto_precision(device, "ctranslate2") if self.compute_type == "auto" else self.compute_type
        path = resolve_model(self.model)
        logger.info("asr: faster-whisper %s (%s, %s:%d)", path, compute_type, kind, index)
        return WhisperModel(
            path,
            device=kind,
            device_index=index,
            compute_type=compute_type,
            cpu_threads=self.cpu_threads,
            num_workers=self.models_per_gpu,
        )

    @property
    def whisper(self) -> Any:
        """The loaded WhisperModel of this process (``Stage.loaded_model``)."""
        return self.loaded_model

    def transcribe_options(self, language: str | None = None) -> dict[str, Any]:
        """Keyword arguments for faster-whisper's ``transcribe`` (also used by benchmarks) for
        speech in ``language`` (default: the ``language`` setting; None: Whisper detects it)."""
        language = language or self.language
        prompted = self.prompt_language is None or _base(language) == _base(self.prompt_language)
        options: dict[str, Any] = dict(
            language=language,
            task=self.task,
            beam_size=self.beam_size,
            vad_filter=self.vad_filter,
            initial_prompt=self.initial_prompt if prompted else None,
            word_timestamps=self.word_timestamps,
            chunk_length=self.chunk_length,
            condition_on_previous_text=self.condition_on_previous_text,
            temperature=list(self.temperature) if isinstance(self.temperature, (list, tuple)) else float(self.temperature),
        )
        if self.batch_size > 1:
            options["batch_size"] = self.batch_size
            options.pop("condition_on_previous_text")  # the batched pipeline decodes chunks independently
        return options

    # -- processing ------------------------------------------------------------------------

    def _audio(self, row: dict[str, Any]) -> tuple[Any, float, str | None]:
        start = row.get("video_start")
        end = row.get("video_end")
        audio = media.decode_audio(row["video"], start=start, end=end)
        return audio, float(start or 0.0), (row.get("language") or None)

    def speech_language(self, audio: Any, given: str | None = None) -> str | None:
        """The language to decode ``audio`` in: ``given`` (the row's), else the ``language``
        setting, else, when the initial prompt depends on it, Whisper's detection (else None:
        ``transcribe`` detects it)."""
        model = self.whisper
        if not getattr(getattr(model, "model", None), "is_multilingual", True):
            return "en"  # an English-only model (the setting is checked at construction)
        language = given or self.language
        if language or not (self.initial_prompt and self.prompt_language):
            return language
        detected, probability, _ = model.detect_language(audio, vad_filter=self.vad_filter)
        logger.info("asr: detected %s (p=%.2f)", detected, probability)
        return detected

    def transcribe_audio(self, audio: Any, offset: float = 0.0, language: str | None = None) -> dict[str, Any]:
        """Outputs for 16 kHz mono float32 ``audio``; timestamps shifted by ``offset`` seconds;
        ``language``: the row's own (see ``speech_language``)."""
        model = self.whisper
        given = language or self.language
        if audio.size == 0 or not float(abs(audio).max()) > 0.0:
            # Digital silence: nothing to transcribe (and nothing for Whisper to make up).
            return self._empty(given, 1.0 if given else None)
        if self.batch_size > 1:
            from faster_whisper import BatchedInferencePipeline

            runner = BatchedInferencePipeline(model)
        else:
            runner = model
        options = self.transcribe_options(self.speech_language(audio, given))
        result = self._decode(runner, audio, options, offset)
        if self.loop_penalty > 1.0 and result["segments"] and result["asr_score"] < LOOP_SCORE:
            again = self._decode(runner, audio, {**options, "repetition_penalty": float(self.loop_penalty)}, offset)
            logger.info("asr: asr_score %.2f (%s): decoded again with repetition_penalty %.2f: asr_score %.2f",
                        result["asr_score"], ", ".join(result.get("asr_flags") or []), self.loop_penalty, again["asr_score"])
            if again["asr_score"] > result["asr_score"]:
                result = again
        return result

    def _decode(self, runner: Any, audio: Any, options: dict[str, Any], offset: float) -> dict[str, Any]:
        """One decode of ``audio`` with faster-whisper ``options``: the row's outputs."""
        segments_iter, info = runner.transcribe(audio, **options)
        segments = list(segments_iter)  # the generator does the decoding
        words = [
            {"start": round(float(w.start) + offset, 3), "end": round(float(w.end) + offset, 3), "word": w.word,
             "probability": round(float(w.probability), 4)}
            for seg in segments for w in (seg.words or [])
        ]
        if self.split_lines:
            lines = split_lines(words, self.max_line_seconds, self.line_pause)
        else:
            lines = [
                {"start": round(float(s.start) + offset, 3), "end": round(float(s.end) + offset, 3), "text": s.text.strip()}
                for s in segments if s.text.strip()
            ]
        if self.merge_repeats:
            lines = merge_repeats(lines)
        thresholds = QualityThresholds(
            self.max_compression_ratio, self.min_avg_logprob, self.max_no_speech_prob, self.max_repetition
        )
        return {
            "language": info.language,
            "language_probability": round(float(info.language_probability), 4),
            "segments": lines,
            "words": words,
            **assess(segments, thresholds),
        }

    def _empty(self, language: str | None, probability: float | None) -> dict[str, Any]:
        return {"language": language, "language_probability": probability, "segments": [], "words": [],
                **assess([])}

    def _seed(self, row: dict[str, Any]) -> None:
        """The temperature ladder samples above 0: seed CTranslate2 from the row (its video and
        clip start), so a fallback gives the same words in every run and schedule."""
        steps = self.temperature if isinstance(self.temperature, (list, tuple)) else [self.temperature]
        if any(t > 0 for t in steps):
            import ctranslate2

            ctranslate2.set_random_seed(seeded_random(row.get("video_id"), row.get("video"), row.get("video_start"), "asr").getrandbits(31))

    def run_batch(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Transcribe the batch's rows in order (a row that cannot decode raises: the contract
        then runs the rows one by one so only that row fails)."""
        if self.models_per_gpu > 1:  # one thread per model replica, each decodes its own audio
            with ThreadPoolExecutor(max_workers=self.models_per_gpu) as workers:
                return list(workers.map(lambda row: self.transcribe_audio(*self._audio(row)), items))
        # The next row's audio decodes in a thread while Whisper works on the current one.
        results: list[dict[str, Any]] = []
        with ThreadPoolExecutor(max_workers=1) as pool:
            load = pool.submit(self._audio, items[0])
            for i in range(len(items)):
                current = load
                load = pool.submit(self._audio, items[i + 1]) if i + 1 < len(items) else None
                self._seed(items[i])
                results.append(self.transcribe_audio(*current.result()))
        return results


#: Below this ``asr_score`` a transcript is decoded again with ``Transcribe.loop_penalty`` (the
#: plausibility step's ``min_asr_score``: below it the transcript is flagged implausible).
LOOP_SCORE = 0.5


@dataclass
class LomoTranscribe(Transcribe):
    """``Transcribe`` with the LoMo preset: large-v2, beam 5, VAD, word timestamps, short lines;
    the language is detected per video (or given: the row's ``language``, ``asr.language``) and
    LoMo's Mandarin initial prompt applies when it is Mandarin. ``--embedded`` uses the
    multilingual whisper-base."""

    embedded_model = "embedded:whisper-base"
    #: ``--embedded`` decodes greedily (no sampled fallback), so a rerun gives the same lines.
    embedded_settings = {"temperature": 0}

    model: str = "large-v2"
    #: Detected per video (LoMo-Pipe forced "zh": ``--set asr.language=zh`` still does).
    language: str | None = None
    initial_prompt: str | None = "以下是普通话的句子。"
    prompt_language: str | None = "zh"


@dataclass
class LiveCCTranscribe(Transcribe):
    """``Transcribe`` with the LiveCC preset: large-v3-turbo, batched (16), word timestamps."""

    embedded_model = "embedded:whisper-tiny.en"

    batch_size: int = 16


#: The presets by name (recipe steps use the classes; ``Transcribe.preset(name)`` builds one).
PRESET_STAGES: dict[str, type[Transcribe]] = {"lomo": LomoTranscribe, "livecc": LiveCCTranscribe}
#: Each preset's settings that differ from ``Transcribe``'s, and the model ``--embedded`` puts in
#: place of ``model`` (a multilingual one where the preset's language is not English).
PRESETS: dict[str, dict[str, Any]] = {
    name: {
        **{f.name: f.default for f in dataclasses.fields(cls)
           if f.default != next(g.default for g in dataclasses.fields(Transcribe) if g.name == f.name)},
        "embedded_model": cls.embedded_model,
    }
    for name, cls in PRESET_STAGES.items()
}


__all__ = [
    "PRESETS",
    "PRESET_STAGES",
    "LiveCCTranscribe",
    "LomoTranscribe",
    "QualityThresholds",
    "Transcribe",
    "assess",
    "compression_ratio",
    "ends_sentence",
    "longest_repeat",
    "merge_repeats",
    "normalize_english",
    "split_lines",
]
