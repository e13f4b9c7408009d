"""Machine translation of timed subtitle lines with a CTranslate2 ``Translator``.

``Translate`` reads a list of ``{start, end, text}`` (``segments``, written by ASR) and writes
the same list translated (``segments_en``): exactly one output line per input line, with the
same ``start`` and ``end``. The lines of all rows in a batch go to the translator together
(CTranslate2 sorts them by length and splits them into ``batch_size`` sub-batches), not one
call per line. Empty lines stay empty and are not sent. If a batch call fails, the stage
contract retries the rows one by one so only the row that broke it gets an error.

``TranslateToEnglish`` is the LoMo recipe's step: English speech is copied without a model.

Model families and their conventions (``family="auto"`` reads the tokenizer's class):

- m2m100: the source starts with ``__zh__`` (tokenizer ``src_lang``), the target prefix is
  ``["__en__"]``; language codes are ISO 639-1 ("zh", "en").
- NLLB: the source starts with ``zho_Hans``, the target prefix is ``["eng_Latn"]``; short codes
  ("zh", "en") are mapped to FLORES-200 codes, full codes pass through.
- Marian (opus-mt): one model per language pair, no language tokens, no prefix.

Default model: m2m100_1.2B (as LoMo-Pipe, via hf-hub-ctranslate2). ``model`` takes a local
folder or a hub id of a CTranslate2 conversion that holds the tokenizer files (or give the
tokenizer separately with ``tokenizer``). To make the folder yourself (one time, with
internet and ``pip install 'lomo-datasets[mt]' torch``)::

    ct2-transformers-converter --model facebook/m2m100_1.2B --output_dir m2m100_1.2B-ct2 \\
        --quantization int8_float16 \\
        --copy_files sentencepiece.bpe.model vocab.json tokenizer_config.json \\
                     special_tokens_map.json generation_config.json

then ``Translate(model="m2m100_1.2B-ct2")`` (int8_float16 runs as int8 on CPU). NLLB works the
same way (``--model facebook/nllb-200-distilled-600M``, copy ``sentencepiece.bpe.model
tokenizer.json tokenizer_config.json special_tokens_map.json``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from datasets import Features

from lomo_datasets.core import features as F
from lomo_datasets.llm.stage import EMBEDDED_LLM, LLMSettings, backend_library, make_backend
from lomo_datasets.models.zoo import embedded_kind, resolve_model
from lomo_datasets.processors import llm_translate
from lomo_datasets.core.stage import Ready, SettingError, Stage, auto_precision, split_device

logger = logging.getLogger(__name__)

FAMILIES = ("auto", "m2m100", "nllb", "marian")

#: ISO 639-1 -> FLORES-200 codes for NLLB (full codes such as "zho_Hant" pass through).
NLLB_CODES = {
    "ar": "arb_Arab", "de": "deu_Latn", "en": "eng_Latn", "es": "spa_Latn", "fr": "fra_Latn",
    "hi": "hin_Deva", "id": "ind_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "ko": "kor_Hang",
    "nl": "nld_Latn", "pl": "pol_Latn", "pt": "por_Latn", "ru": "rus_Cyrl", "th": "tha_Thai",
    "tr": "tur_Latn", "uk": "ukr_Cyrl", "vi": "vie_Latn", "zh": "zho_Hans",
}

_COMPUTE_TYPES = (
    "auto", "default", "int8", "int8_float32", "int8_float16", "int8_bfloat16",
    "int16", "float16", "bfloat16", "float32",
)


def family_of(tokenizer: Any) -> str:
    """"m2m100", "nllb" or "marian" from a transformers tokenizer's class name."""
    name = type(tokenizer).__name__.lower()
    for family in ("m2m100", "nllb", "marian"):
        if family in name:
            return family
    raise SettingError(
        f"translate: cannot tell the model family from tokenizer {type(tokenizer).__name__}; "
        f"set translate.family to one of {', '.join(FAMILIES[1:])}"
    )


def language_code(family: str, code: str) -> str:
    """The code a family's tokenizer uses for ``code`` ("zh" -> "zho_Hans" for NLLB)."""
    if family == "nllb" and "_" not in code:
        if code not in NLLB_CODES:
            raise SettingError(f"translate: no NLLB code known for {code!r}; give the FLORES-200 code (e.g. 'zho_Hans')")
        return NLLB_CODES[code]
    return code


@dataclass
class Translator:
    """What ``Translate.load_model`` returns: the CTranslate2 translator and its tokenizer."""

    translator: Any
    tokenizer: Any
    family: str


@dataclass
class Translate(Stage):
    """Translate ``column`` (timed lines) into ``output_column``, one line out per line in."""

    name: ClassVar[str] = "translate"
    version: ClassVar[str] = "1"
    reads: ClassVar[tuple[str, ...]] = ("segments",)
    requires: ClassVar[dict[str, str]] = {"ctranslate2": "mt", "transformers": "mt", "sentencepiece": "mt"}
    rows_per_batch: ClassVar[int] = 32
    #: CTranslate2 (and the transformers tokenizer) hold thread pools: spawn workers, not fork.
    start_method: ClassVar[str | None] = "spawn"

    #: Local folder or hub id of a CTranslate2 conversion (see the module docs).
    model: str = "michaelfeil/ct2fast-m2m100_1.2B"
    #: Tokenizer folder or hub id; None: the tokenizer files in the model folder.
    tokenizer: str | None = None
    family: str = "auto"
    source_language: str = "zh"
    target_language: str = "en"
    column: str = "segments"
    output_column: str = "segments_en"
    #: Lines per translator sub-batch (CTranslate2 max_batch_size).
    batch_size: int = 32
    beam_size: int = 4
    max_input_length: int = 512
    max_decoding_length: int = 256
    #: "auto": int8 on CPU, int8_float16 on GPU.
    compute_type: str = "auto"
    #: CPU threads per model call (fixed: the output depends on it).
    cpu_threads: int = 1

    def validate(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise SettingError("translate.model must be a CTranslate2 model folder or hub id")
        if self.family not in FAMILIES:
            raise SettingError(f"translate.family={self.family!r}: use one of {', '.join(FAMILIES)}")
        if self.compute_type not in _COMPUTE_TYPES:
            raise SettingError(f"translate.compute_type={self.compute_type!r}: use one of {', '.join(_COMPUTE_TYPES)}")
        for key in ("source_language", "target_language", "column", "output_column"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise SettingError(f"translate.{key} must be a non-empty string")
        if self.column == self.output_column:
            raise SettingError("translate.output_column must differ from translate.column (keep the source lines)")
        for key in ("batch_size", "beam_size", "max_input_length", "max_decoding_length"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingError(f"translate.{key} must be an integer >= 1, got {value!r}")
        if self.family != "auto" and self.family != "marian":
            for key in ("source_language", "target_language"):
                language_code(self.family, getattr(self, key))

    def input_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def features(self) -> Features:
        return Features({self.output_column: F.SEGMENTS})

    # -- model -----------------------------------------------------------------------------

    def model_key(self) -> tuple:
        return (self.model, self.tokenizer, self.family, self.compute_type, self.cpu_threads)

    def model_library(self) -> str:
        return "ctranslate2"

    def load_model(self, device: str) -> Translator:
        import ctranslate2
        from transformers import AutoTokenizer

        path = self._local_model(resolve_model(self.model))
        kind, index = split_device(device)
        compute_type = auto_precision(device, "ctranslate2", quantized=True) if self.compute_type == "auto" else self.compute_type
        translator = ctranslate2.Translator(
            path, device=kind, device_index=index, compute_type=compute_type, intra_threads=self.cpu_threads
        )
        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer or path)
        family = family_of(tokenizer) if self.family == "auto" else self.family
        logger.info("translate: %s (%s, %s on %s:%d)", path, family, compute_type, kind, index)
        return Translator(translator, tokenizer, family)

    @staticmethod
    def _local_model(name: str) -> str:
        if os.path.isdir(name):
            if not os.path.exists(os.path.join(name, "model.bin")):
                raise SettingError(
                    f"translate.model={name!r} has no model.bin: convert the model first with "
                    "ct2-transformers-converter (see lomo_datasets.processors.translate)"
                )
            return name
        from huggingface_hub import snapshot_download

        logger.info("translate: fetching %s from the hub", name)
        return snapshot_download(name)

    @property
    def translator(self) -> Translator:
        """The loaded model of this process (``Stage.loaded_model``)."""
        return self.loaded_model

    # -- processing ------------------------------------------------------------------------

    def _target_prefix(self, loaded: Translator) -> tuple[str | None, list[str] | None]:
        tok = loaded.tokenizer
        if loaded.family == "marian":
            return None, None
        source = language_code(loaded.family, self.source_language)
        target = language_code(loaded.family, self.target_language)
        tok.src_lang = source
        target_token = f"__{target}__" if loaded.family == "m2m100" else target
        if tok.convert_tokens_to_ids(target_token) in (None, tok.unk_token_id):
            raise SettingError(f"translate.target_language={self.target_language!r}: the tokenizer has no token for it")
        return source, [target_token]

    def translate_texts(self, texts: list[str]) -> list[str]:
        """Translations of ``texts``, one per text, in order (empty texts stay empty)."""
        loaded = self.translator
        _, prefix = self._target_prefix(loaded)
        tok = loaded.tokenizer
        todo = [i for i, t in enumerate(texts) if t and t.strip()]
        out = [""] * len(texts)
        if not todo:
            return out
        sources = [
            tok.convert_ids_to_tokens(tok.encode(texts[i].strip(), truncation=True, max_length=self.max_input_length))
            for i in todo
        ]
        results = loaded.translator.translate_batch(
            sources,
            target_prefix=[prefix] * len(sources) if prefix else None,
            max_batch_size=self.batch_size,
            beam_size=self.beam_size,
            max_input_length=self.max_input_length,
            max_decoding_length=self.max_decoding_length,
        )
        if len(results) != len(sources):  # never expected; the 1:1 rule is not negotiable
            raise RuntimeError(f"translator returned {len(results)} results for {len(sources)} lines")
        for i, result in zip(todo, results):
            tokens = result.hypotheses[0]
            if prefix and tokens[: len(prefix)] == prefix:
                tokens = tokens[len(prefix):]
            out[i] = tok.decode(tok.convert_tokens_to_ids(tokens), skip_special_tokens=True).strip()
        return out

    @staticmethod
    def _lines(row: dict[str, Any], column: str) -> list[dict[str, Any]]:
        lines = row.get(column)
        if lines is None:
            return []
        if not isinstance(lines, list) or not all(isinstance(l, dict) and "text" in l for l in lines):
            raise ValueError(f"column '{column}' must be a list of {{start, end, text}}")
        return lines

    def prepare(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        return self._lines(row, self.column)

    def run_batch(self, items: list[list[dict[str, Any]]]) -> list[list[str]]:
        """The lines of all rows in one translator call; per row, its translated texts."""
        translated = self.translate_texts([line["text"] or "" for lines in items for line in lines])
        out, position = [], 0
        for lines in items:
            out.append(translated[position: position + len(lines)])
            position += len(lines)
        return out

    def finish(self, row: dict[str, Any], texts: list[str]) -> dict[str, Any]:
        return self._output(self._lines(row, self.column), texts)

    def _output(self, lines: list[dict[str, Any]], texts: list[str]) -> dict[str, Any]:
        if len(texts) != len(lines):
            raise RuntimeError(f"{len(texts)} translations for {len(lines)} lines")
        return {
            self.output_column: [
                {"start": line.get("start"), "end": line.get("end"), "text": text} for line, text in zip(lines, texts)
            ]
        }


#: ``translate.model=none``: no translation model (English speech still passes through).
NO_MODEL = "none"


@dataclass
class TranslateToEnglish(Translate):
    """The LoMo recipe's translate step: rows whose speech is already English (``language``
    starts with ``target_language``) are copied to ``segments_en`` without loading a model;
    the other rows are translated by ``Translate`` (a CTranslate2 m2m100/NLLB model, the
    production default), or by an instruct LLM line for line under a JSON schema
    (``processors/llm_translate.py``; ``llm_backend``, ``llm_base_url``, ``lines_per_request`` and
    ``max_tries`` apply there): ``engine`` says which, explicitly (``mt``, ``llm``) or by the
    model (``auto``: a GGUF model such as ``embedded:qwen2.5-coder-1.5b``, what ``--embedded``
    sets, or a ``.gguf`` file, is an LLM). With ``model="none"`` non-English
    rows get an error that says which model setting to give, and the run goes on."""

    embedded_setting: ClassVar[str | None] = "model"
    embedded_model: ClassVar[str | None] = EMBEDDED_LLM
    embedded_settings: ClassVar[dict[str, Any]] = {"max_tries": 4}  # as the LLM steps' (llm.LLMStage)
    kept_on_error: ClassVar[tuple[str, ...]] = ("generation",)

    #: What translates: "mt" (a CTranslate2 translation model), "llm" (an instruct LLM through
    #: ``llm_backend``: a GGUF file, or a server's model with ``llm_backend=openai`` and
    #: ``llm_base_url``), or "auto": "llm" for a GGUF model (``embedded:qwen2.5-coder-1.5b``,
    #: ``*.gguf``), else "mt".
    engine: str = "auto"
    llm_backend: str = "ctranslate2"
    llm_base_url: str | None = None
    llm_api_key_env: str = "OPENAI_API_KEY"
    lines_per_request: int = 12
    max_tries: int = 3

    @property
    def uses_llm(self) -> bool:
        if self.engine != "auto":
            return self.engine == "llm"
        return embedded_kind(self.model) == "gguf" or str(self.model).endswith(".gguf")

    def validate(self) -> None:
        if self.engine not in ("auto", "mt", "llm"):
            raise SettingError(f"translate.engine={self.engine!r}: use auto (an LLM for a GGUF model, else a translation "
                               "model), mt (a CTranslate2 translation model) or llm (an instruct LLM via llm_backend)")
        super().validate()
        if not isinstance(self.lines_per_request, int) or self.lines_per_request < 1:
            raise SettingError(f"translate.lines_per_request={self.lines_per_request!r}: use an integer >= 1")
        if self.uses_llm:
            self.llm_settings().validate("translate")
        if self.model == NO_MODEL:
            logger.warning(
                "translate: no translation model (translate.model=none): English speech is used as is; other "
                "languages get an error (give --set translate.model=<CTranslate2 folder> or embedded:qwen2.5-coder-1.5b)"
            )

    @property
    def model_is_remote(self) -> bool:
        """An LLM behind a server (``llm_backend=openai``): no local model to check."""
        from lomo_datasets.llm.backends import backend_class

        return self.uses_llm and bool(getattr(backend_class(self.llm_backend), "remote", False))

    def llm_settings(self) -> LLMSettings:
        return LLMSettings(backend=self.llm_backend, model=self.model, max_tries=self.max_tries,
                           cpu_threads=self.cpu_threads, batch_size=self.batch_size,
                           base_url=self.llm_base_url, api_key_env=self.llm_api_key_env)

    def model_key(self) -> tuple:
        return (*super().model_key(), self.llm_backend, self.max_tries, self.batch_size) if self.uses_llm else super().model_key()

    def model_library(self) -> str | None:
        if self.uses_llm:
            return backend_library(self.llm_backend)
        return super().model_library()

    def load_model(self, device: str) -> Any:
        if self.uses_llm:
            return make_backend(self.llm_settings(), device)
        return super().load_model(device)

    def input_columns(self) -> tuple[str, ...]:
        return (self.column, "language")

    def prepare(self, row: dict[str, Any]) -> Any:
        language = (row.get("language") or "").lower()
        if language and language.split("-")[0] == self.target_language.lower():
            return Ready({self.output_column: [dict(s) for s in (row.get(self.column) or [])]})
        if not row.get(self.column):
            return Ready({self.output_column: []})
        if self.model == NO_MODEL:
            raise ValueError(
                f"speech is '{language or 'unknown'}' and translate.model=none: give a translation model "
                "(--set translate.model=FOLDER, or embedded:qwen2.5-coder-1.5b) to translate it"
            )
        lines = super().prepare(row)
        return (lines, language or self.source_language) if self.uses_llm else lines

    def features(self) -> Features:
        return F.merge(super().features(), {"generation": F.GENERATION})

    def finish(self, row: dict[str, Any], result: Any) -> dict[str, Any]:
        log = [e for e in (row.get("generation") or []) if e.get("stage") != self.name]
        if isinstance(result, tuple):  # the LLM path: texts and the parts per level
            texts, levels = result
            log += [{"stage": self.name, "event": level, "count": int(levels.get(level, 0))} for level in llm_translate.LEVELS]
            log.append({"stage": self.name, "event": "refused_replies", "count": int(levels.get("refused", 0))})
        else:
            texts = result
        return {**super().finish(row, texts), "generation": log}

    def run_batch(self, items: list[Any]) -> list[Any]:
        """The LLM path: every chunk of every row in one ``generate_json`` call; a chunk that
        stays invalid is split (halves, then single lines) and retried with the other rows'
        failed parts; a row fails only when one of its lines cannot be translated."""
        if not self.uses_llm:
            return super().run_batch(items)
        max_chars = self.max_decoding_length * 2
        texts: list[dict[int, str]] = [{} for _ in items]
        levels: list[dict[str, int]] = [{} for _ in items]
        failed: dict[int, BaseException] = {}
        parts = [(n, group, "chunk") for n, (lines, _) in enumerate(items)
                 for group in llm_translate.chunks(lines, self.lines_per_request)]
        while parts:
            requests = [
                llm_translate.translation_request([items[n][0][i]["text"] for i in group], items[n][1], self.target_language, max_chars)
                for n, group, _ in parts
            ]
            answers = self.loaded_model.generate_json([m for m, _ in requests], [t for _, t in requests])
            retry = []
            for (n, group, level), answer in zip(parts, answers):
                if n in failed:
                    continue
                if not isinstance(answer, BaseException):
                    texts[n].update({i: line.strip() for i, line in zip(group, answer["lines"])})
                    levels[n][level] = levels[n].get(level, 0) + 1
                    continue
                levels[n]["refused"] = levels[n].get("refused", 0) + 1
                if len(group) == 1 and level == "line":
                    failed[n] = ValueError(f"line {group[0] + 1} cannot be translated: {answer}")
                    continue
                pieces, next_level = llm_translate.split(group, level)
                logger.info("translate: a %d-line %s failed (%s); retrying as %d %ss", len(group), level,
                            str(answer)[:160], len(pieces), next_level)
                retry += [(n, piece, next_level) for piece in pieces]
            parts = retry
        return [
            failed[n] if n in failed
            else ([texts[n].get(i, "") for i in range(len(lines))], levels[n])
            for n, (lines, _) in enumerate(items)
        ]


__all__ = ["FAMILIES", "NLLB_CODES", "NO_MODEL", "Translate", "TranslateToEnglish", "Translator", "family_of", "language_code"]
