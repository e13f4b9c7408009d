"""Tiny random models of real architectures, built by the tests (no download, no hub).

They have random weights: tests that use them check shapes, alignment and code paths, never
words. Each is built once and cached under ``$LOMO_DATASETS_CACHE/test-models`` (the session
fixture in ``tests/conftest.py`` points that at a per-machine temp folder), keyed by a version
string so a change here rebuilds them.

- ``tiny_m2m100()``: a 2-layer, d_model-64 M2M100 with a ~300-piece sentencepiece tokenizer
  trained on a few hundred generated zh/en lines, converted to CTranslate2 with
  ``ct2-transformers-converter`` (the command the Translate stage's docs give for m2m100_1.2B).
- ``tiny_nllb()``: the same architecture with an ``NllbTokenizer`` (FLORES-200 codes such as
  ``zho_Hans``), converted the same way.
- ``tiny_xlmr_language_classifier()``: a 2-layer XLM-RoBERTa text classifier with language
  labels (the architecture of LiveCC's language detector), same tokenizer pieces.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

from lomo_datasets.models.zoo import build_once, cache_dir

VERSION = "1"

_EN = (
    "the a man woman dog cat water pasta boil city walk market bridge river boat team ball pass goal "
    "today we cook go see look first then next after minutes old town church tower built years ago "
    "quick brown fox jumps over lazy speech video clip testing wait add mix serve fresh basil sauce"
).split()
_ZH = "今天天气很好我们去公园散步先烧水然后加面条等十分钟城市河流桥船球队进球市场教堂塔老城早上看见"


def corpus(lines: int = 400, seed: int = 0) -> list[str]:
    """Generated English and Chinese lines for training the tiny tokenizer."""
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        if i % 2:
            out.append(" ".join(rng.choice(_EN) for _ in range(rng.randint(4, 12))).capitalize() + ".")
        else:
            out.append("".join(rng.choice(_ZH) for _ in range(rng.randint(5, 16))) + "。")
    return out


def _cached(name: str, build) -> Path:
    """A tiny test model built once per cache dir (``models.build_once``: atomic, race-safe)."""
    return build_once(cache_dir() / "test-models" / f"{name}-v{VERSION}", build)


def _sentencepiece(folder: Path, vocab_size: int = 300) -> Path:
    import sentencepiece as spm

    text = folder / "corpus.txt"
    text.write_text("\n".join(corpus()) + "\n", encoding="utf-8")
    prefix = folder / "spm"
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(prefix), vocab_size=vocab_size, character_coverage=1.0,
        model_type="unigram", bos_id=-1, eos_id=-1, unk_id=0, num_threads=1, minloglevel=2,
    )
    text.unlink()
    return prefix.with_suffix(".model")


def tiny_m2m100() -> Path:
    """A tiny random M2M100: ``transformers/`` (weights + tokenizer) and ``ct2/`` (its
    CTranslate2 conversion with the tokenizer files copied in) -> the parent folder."""

    def build(folder: Path) -> None:
        import sentencepiece as spm
        import torch
        from transformers import M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer
        from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES

        hf, work = folder / "transformers", folder / "work"
        hf.mkdir()
        work.mkdir()
        spm_file = _sentencepiece(work)
        pieces = spm.SentencePieceProcessor(model_file=str(spm_file))
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        for i in range(pieces.get_piece_size()):
            piece = pieces.id_to_piece(i)
            if piece not in vocab:
                vocab[piece] = len(vocab)
        (work / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        language_tokens = [f"__{code}__" for code in FAIRSEQ_LANGUAGE_CODES["m2m100"]]
        tokenizer = M2M100Tokenizer(
            vocab_file=str(work / "vocab.json"), spm_file=str(spm_file), src_lang="zh", tgt_lang="en",
            extra_special_tokens=language_tokens,
        )
        tokenizer.save_pretrained(hf)
        torch.manual_seed(0)
        config = M2M100Config(
            vocab_size=len(tokenizer) + tokenizer.num_madeup_words, d_model=64, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
            max_position_embeddings=256, pad_token_id=1, bos_token_id=0, eos_token_id=2,
            decoder_start_token_id=2,
        )
        M2M100ForConditionalGeneration(config).eval().save_pretrained(hf)
        shutil.rmtree(work)
        _convert(hf, folder / "ct2")

    return _cached("m2m100", build)


def tiny_m2m100_ct2() -> Path:
    """The CTranslate2 folder (model.bin + tokenizer files) of ``tiny_m2m100()``."""
    return tiny_m2m100() / "ct2"


def tiny_m2m100_transformers() -> Path:
    """The transformers folder (weights + tokenizer) the CTranslate2 model was converted from."""
    return tiny_m2m100() / "transformers"


def _converter() -> str:
    exe = shutil.which("ct2-transformers-converter")
    if exe:
        return exe
    candidate = Path(sys.executable).with_name("ct2-transformers-converter")
    if candidate.exists():
        return str(candidate)
    raise RuntimeError("ct2-transformers-converter not found: pip install 'lomo-datasets[mt]'")


#: Labels of the tiny language classifier (LiveCC's detector has 20 such labels).
XLMR_LABELS = ["en", "zh", "fr", "de"]


def tiny_xlmr_language_classifier() -> Path:
    """A tiny random XLM-RoBERTa sequence classifier whose labels are language codes, with a
    sentencepiece-unigram tokenizer (``XLMRobertaTokenizer``) -> its transformers folder."""

    def build(folder: Path) -> None:
        import sentencepiece as spm
        import torch
        from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaTokenizer

        work = folder / "work"
        work.mkdir()
        pieces = spm.SentencePieceProcessor(model_file=str(_sentencepiece(work)))
        vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
        vocab += [(pieces.id_to_piece(i), pieces.get_score(i)) for i in range(pieces.get_piece_size())
                  if pieces.id_to_piece(i) not in ("<unk>", "<s>", "</s>")]
        vocab.append(("<mask>", 0.0))
        tokenizer = XLMRobertaTokenizer(vocab=vocab)
        shutil.rmtree(work)
        torch.manual_seed(0)
        config = XLMRobertaConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=130, pad_token_id=1, bos_token_id=0, eos_token_id=2,
            id2label=dict(enumerate(XLMR_LABELS)), label2id={label: i for i, label in enumerate(XLMR_LABELS)},
        )
        XLMRobertaForSequenceClassification(config).eval().save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return _cached("xlmr-langid", build)


def tiny_nllb() -> Path:
    """A tiny random NLLB-style model (M2M100 architecture + ``NllbTokenizer`` with the
    FLORES-200 language tokens; character-level BPE vocabulary), converted to CTranslate2:
    ``transformers/`` and ``ct2/`` as in ``tiny_m2m100()``."""

    def build(folder: Path) -> None:
        import torch
        from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer
        from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

        hf = folder / "transformers"
        chars = sorted({ch for line in corpus() for ch in line.replace(" ", "")} | {"▁"})
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        for ch in chars:
            vocab.setdefault(ch, len(vocab))
        tokenizer = NllbTokenizer(vocab=vocab, merges=[], extra_special_tokens=list(FAIRSEQ_LANGUAGE_CODES),
                                  src_lang="zho_Hans", tgt_lang="eng_Latn")
        tokenizer.save_pretrained(hf)
        torch.manual_seed(0)
        config = M2M100Config(
            vocab_size=len(tokenizer), d_model=64, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
            max_position_embeddings=256, pad_token_id=1, bos_token_id=0, eos_token_id=2,
            decoder_start_token_id=2,
        )
        M2M100ForConditionalGeneration(config).eval().save_pretrained(hf)
        _convert(hf, folder / "ct2")

    return _cached("nllb", build)


def _convert(hf: Path, ct2: Path) -> None:
    """``ct2-transformers-converter`` with the tokenizer files copied next to model.bin."""
    tokenizer_files = [p.name for p in hf.iterdir() if p.suffix != ".safetensors" and p.name not in ("config.json", "generation_config.json")]
    subprocess.run(
        [_converter(), "--model", str(hf), "--output_dir", str(ct2), "--copy_files", *tokenizer_files],
        check=True, capture_output=True, text=True,
    )
