"""PyAV media: probe, in-memory audio decoding, frame sampling, typed errors on bad files."""

from __future__ import annotations

import numpy as np
import pytest

from lomo_datasets.media import decode as media
from lomo_datasets.media.samples import speak
from tests.media import ENGLISH_TEXT, FPS, SIZE


def expected_duration(text: str, pad: float = 0.5) -> float:
    speech, rate = speak(text)
    return len(speech) / rate + 2 * int(pad * rate) / rate


def test_probe_generated_video(test_media):
    info = media.probe(str(test_media.english))
    assert (info.width, info.height) == SIZE
    assert info.fps == pytest.approx(FPS)
    assert info.has_audio and info.has_video
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.duration == pytest.approx(expected_duration(ENGLISH_TEXT), abs=0.1)


def test_probe_no_audio_and_audio_only(test_media):
    info = media.probe(str(test_media.no_audio))
    assert not info.has_audio and info.duration == pytest.approx(3.0, abs=0.1)
    info = media.probe(str(test_media.audio_only))
    assert info.has_audio and not info.has_video and info.width is None


def test_decode_whole_file_16k_mono(test_media):
    audio = media.decode_audio(str(test_media.english))
    assert audio.dtype == np.float32 and audio.ndim == 1
    duration = expected_duration(ENGLISH_TEXT)
    assert len(audio) / media.SAMPLE_RATE == pytest.approx(duration, abs=0.1)
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_decode_range_is_exact_and_matches_whole(test_media):
    whole = media.decode_audio(str(test_media.english))
    part = media.decode_audio(str(test_media.english), start=2.0, end=3.5)
    assert len(part) == int(1.5 * media.SAMPLE_RATE)
    # Seeking lands on the same samples as decoding from the start: the best alignment is at
    # lag 0 (the resampler's phase after a seek differs slightly, hence not exactly equal).
    corr = {lag: np.corrcoef(part, whole[32000 + lag : 56000 + lag])[0, 1] for lag in range(-8, 9)}
    assert max(corr, key=corr.get) == 0 and corr[0] > 0.95


def test_decode_other_rate(test_media):
    audio = media.decode_audio(str(test_media.english2), sample_rate=8000)
    assert len(audio) / 8000 == pytest.approx(media.probe(str(test_media.english2)).duration, abs=0.1)


def test_silent_track_decodes_to_silence(test_media):
    audio = media.decode_audio(str(test_media.silent))
    assert len(audio) / media.SAMPLE_RATE == pytest.approx(4.0, abs=0.1)
    assert np.abs(audio).max() < 1e-3


def test_sample_frames_evenly_spaced(test_media):
    frames = media.sample_frames(str(test_media.english), num_frames=8, size=(160, 90))
    assert len(frames) == 8
    assert all(f.shape == (90, 160, 3) and f.dtype == np.uint8 for f in frames)
    # The synthetic frames move, so evenly spaced samples differ from each other.
    assert len({f.tobytes() for f in frames}) == 8
    full = media.sample_frames(str(test_media.english), num_frames=1, size=None)
    assert full[0].shape == (SIZE[1], SIZE[0], 3)


@pytest.mark.parametrize(
    "name, error",
    [
        ("zero_byte", media.EmptyMediaError),
        ("corrupt", media.CorruptMediaError),
        ("truncated", media.TruncatedMediaError),
        ("truncated_tail", media.CorruptMediaError),
    ],
)
def test_bad_files_raise_typed_errors(test_media, name, error):
    path = str(getattr(test_media, name))
    with pytest.raises(error, match=path.split("/")[-1]):
        media.probe(path)
    with pytest.raises(error):
        media.decode_audio(path)


def test_missing_tracks_raise(test_media, tmp_path):
    with pytest.raises(media.NoAudioError, match="no audio track"):
        media.decode_audio(str(test_media.no_audio))
    with pytest.raises(media.NoVideoError):
        media.sample_frames(str(test_media.audio_only))
    with pytest.raises(media.MediaNotFoundError):
        media.probe(str(tmp_path / "missing.mp4"))
    assert issubclass(media.NoAudioError, media.MediaError)


def test_human_mandarin_voice_is_stitched_from_recorded_syllables(test_media, tmp_path, monkeypatch):
    """gcin-voice's recorded syllables, one per character, with pauses at commas and sentence
    ends; what cannot be read is refused by name, and a missing voice folder says how to get it."""
    from lomo_datasets.media.samples import make_speech_video, speak_human_mandarin
    from tests.media import MANDARIN_HUMAN_TEXT

    one, rate = speak_human_mandarin("今天天气很好。")
    two, _ = speak_human_mandarin("今天天气很好。我们去公园散步。")
    assert rate == 16_000 and one.dtype == np.float32 and 0 < np.abs(one).max() <= 1.0
    # six syllables of about 0.2-0.6 s each, and the sentence pause
    assert 6 * 0.2 + 0.9 <= len(one) / rate <= 6 * 0.6 + 0.9 + 0.2
    assert len(two) > len(one) + rate  # a second sentence says more
    pause = two[len(one) - int(0.85 * rate) : len(one) - int(0.05 * rate)]
    assert np.abs(pause).max() == 0.0  # the sentence pause is silence

    probe = media.probe(test_media.mandarin_human)
    heard = len(speak_human_mandarin(MANDARIN_HUMAN_TEXT)[0]) / rate
    assert probe.has_audio and abs(probe.duration - (heard + 1.0)) < 0.2  # 0.5 s pad each side

    with pytest.raises(ValueError, match="'5'"):
        speak_human_mandarin("我有5个苹果。")
    with pytest.raises(ValueError, match="Mandarin only"):
        make_speech_video(tmp_path / "x.mp4", "hello", "en", voice="human")
    monkeypatch.setenv("LOMO_GCIN_VOICE", str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match="apt-get install gcin-voice"):
        speak_human_mandarin("你好。")
