"""Embedded models: short names resolve to the real small models shipped inside packages."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from lomo_datasets.media import decode as media

from lomo_datasets.models import zoo as models
from lomo_datasets.core.stage import SettingError
from tests.media import ENGLISH_TEXT


def test_other_names_pass_through():
    assert models.resolve_model("Systran/faster-whisper-large-v3") == "Systran/faster-whisper-large-v3"
    assert models.resolve_model("/models/m2m100") == "/models/m2m100"


def test_unknown_embedded_name():
    with pytest.raises(SettingError, match="embedded:whisper-tiny.en"):
        models.resolve_model("embedded:gpt-5")


def test_whisper_tiny_en_resolves_to_ct2_model():
    path = Path(models.resolve_model("embedded:whisper-tiny.en"))
    assert (path / "model.bin").stat().st_size > 10_000_000
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()


def test_whisper_base_parts_joined_once_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("LOMO_DATASETS_CACHE", str(tmp_path))
    path = Path(models.resolve_model("embedded:whisper-base"))
    assert path.is_relative_to(tmp_path)
    record = json.loads((path / "parts.json").read_text())
    assert (path / "model.bin").stat().st_size == sum(record["sizes"])
    assert record["sha256"] == models._sha256(path / "model.bin")
    mtime = (path / "model.bin").stat().st_mtime_ns
    assert Path(models.resolve_model("embedded:whisper-base")) == path
    assert (path / "model.bin").stat().st_mtime_ns == mtime  # reused, not joined again
    # A damaged cache is detected and rebuilt.
    with open(path / "model.bin", "r+b") as fh:
        fh.truncate(1000)
    path2 = Path(models.resolve_model("embedded:whisper-base"))
    assert (path2 / "model.bin").stat().st_size == sum(record["sizes"])
    assert not any(p.name.startswith(".whisper-base-") for p in path.parent.iterdir())


def test_smollm2_resolves_to_gguf():
    path = models.resolve_model("embedded:smollm2-135m")
    assert path.endswith(".gguf") and os.path.getsize(path) > 50_000_000
    with open(path, "rb") as fh:
        assert fh.read(4) == b"GGUF"


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_whisper_tiny_en_transcribes_generated_speech_with_word_times(test_media):
    from faster_whisper import WhisperModel

    model = WhisperModel(models.resolve_model("embedded:whisper-tiny.en"), device="cpu", compute_type="int8")
    audio = media.decode_audio(str(test_media.english))
    segments, info = model.transcribe(audio, word_timestamps=True, beam_size=1)
    words = [w for s in segments for w in s.words]
    assert info.language == "en" and len(words) >= 10
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= len(audio) / media.SAMPLE_RATE + 0.5 for w in words)
    heard = _words(" ".join(w.word for w in words))
    overlap = len(heard & _words(ENGLISH_TEXT)) / len(_words(ENGLISH_TEXT))
    assert overlap >= 0.5, heard


def test_qwen_coder_joined_from_22_parts_and_pinned_by_hash():
    path = Path(models.resolve_model("embedded:qwen2.5-coder-1.5b"))
    assert path.name.endswith(".gguf") and path.stat().st_size == models.QWEN_CODER_SIZE == 1_117_320_768
    with open(path, "rb") as fh:
        assert fh.read(4) == b"GGUF"
    record = json.loads((path.parent / "parts.json").read_text())
    assert len(record["sizes"]) == 22 and sum(record["sizes"]) == models.QWEN_CODER_SIZE
    assert record["sha256"] == models.QWEN_CODER_SHA256 == models._sha256(path)
    assert models.embedded_kind("embedded:qwen2.5-coder-1.5b") == "gguf"


def test_join_refuses_parts_whose_hash_does_not_match(tmp_path, monkeypatch):
    monkeypatch.setenv("LOMO_DATASETS_CACHE", str(tmp_path / "cache"))
    pieces = []
    for n, data in enumerate((b"GGUF" + b"a" * 100, b"b" * 50), start=1):
        pieces.append(tmp_path / f"part{n:02d}.bin")
        pieces[-1].write_bytes(data)
    target = models.cache_dir() / "models" / "joined" / "m.gguf"
    good = hashlib.sha256(b"GGUF" + b"a" * 100 + b"b" * 50).hexdigest()
    # Pinned size or hash that the joined bytes do not have: an error that says to reinstall,
    # and nothing left in the cache.
    with pytest.raises(SettingError, match="sha256 .* expected .*reinstall"):
        models._join_parts("qwen2.5-coder-1.5b", pieces, target, size=154, sha256="0" * 64)
    with pytest.raises(SettingError, match="joined 154 bytes, expected 999"):
        models._join_parts("qwen2.5-coder-1.5b", pieces, target, size=999, sha256=good)
    assert not target.parent.exists() and list(target.parent.parent.iterdir()) == []
    assert models._join_parts("qwen2.5-coder-1.5b", pieces, target, size=154, sha256=good).read_bytes()[:4] == b"GGUF"
    # A part that changed after the join (another package version) is noticed and joined again.
    pieces[1].write_bytes(b"c" * 51)
    with pytest.raises(SettingError, match="sha256"):
        models._join_parts("qwen2.5-coder-1.5b", pieces, target, size=155, sha256=good)


def _slow_build(target: str, log: str) -> str:
    """Build ``target`` with a build that takes a second and logs each time it runs."""
    import time

    def build(tmp: Path) -> None:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        (tmp / "model.bin").write_text("weights")

    return str(models.build_once(Path(target), build))


def test_two_processes_build_a_model_once_and_the_other_waits(tmp_path):
    """Two runs (or the workers of one) that first need the same model: one builds it, the
    other waits for it and gets the finished folder (before, both built it at once, and the
    conversion that removes its float32 intermediate broke the other's)."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    target, log = tmp_path / "models" / "m-ct2", tmp_path / "builds.log"
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        got = list(pool.map(_slow_build, [str(target)] * 2, [str(log)] * 2))
    assert got == [str(target)] * 2
    assert len(log.read_text().split()) == 1  # built once
    assert (target / "model.bin").read_text() == "weights" and (target / models.COMPLETE).exists()
    # reentrant in one process: a build may lock the target its caller holds
    with models.build_lock(target):
        with models.build_lock(target):
            pass
