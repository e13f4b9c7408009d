"""Embedded models: short names resolve to the real small models shipped inside packages."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from lomo_datasets import media, models
from lomo_datasets.stage import SettingError
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
