"""Make sample videos offline: synthetic frames (PyAV) with speech from espeak-ng.

Used by ``lomo-datasets sample`` and ``lomo-datasets demo`` (the embedded sample the README's
main command runs on) and by the tests' media fixtures.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleVideo:
    """One sample: a file name, a title, a category, and what is said (English or Mandarin)."""

    name: str
    title: str
    category: str
    text: str
    language: str = "en"


SAMPLES = [
    SampleVideo(
        "cooking_pasta.mp4",
        "Cooking pasta at home",
        "Howto & Style",
        "Today we cook pasta at home. First, boil a large pot of salted water. "
        "Next, add the pasta and stir it well. After ten minutes, drain the water "
        "and mix in the tomato sauce. Finally, serve it with fresh basil.",
    ),
    SampleVideo(
        "city_walk.mp4",
        "A walk through the old town",
        "Travel & Events",
        "We are walking through the old town this morning. On the left you can see "
        "the market square. The church tower was built five hundred years ago. "
        "Now we cross the bridge over the river and look at the boats.",
    ),
    SampleVideo(
        "football_highlights.mp4",
        "Football match highlights",
        "Sports",
        "The home team starts with the ball. A long pass goes to the right wing. "
        "He crosses into the box and the striker scores with a header. "
        "What a goal! The crowd is cheering loudly.",
    ),
    SampleVideo(
        "cooking_zh.mp4",
        "做饭",
        "Howto & Style",
        "今天我们在家做饭。首先把水烧开。然后放入面条。最后加上番茄酱。",
        language="zh",
    ),
]


def require_espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng")
    return exe


def speak(text: str, language: str = "en", speed: int = 150) -> tuple[np.ndarray, int]:
    """Speech for ``text`` as float32 mono samples and their sample rate, via espeak-ng.

    Mandarin text is turned into tone-numbered pinyin and read by the ``cmn-latn-pinyin`` voice.
    """
    exe = require_espeak()
    voice = "en-us"
    if language == "zh":
        from pypinyin import Style, lazy_pinyin

        text = " ".join(lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True))
        voice = "cmn-latn-pinyin"
    result = subprocess.run(
        [exe, "-v", voice, "-s", str(speed), "--stdout", text],
        check=True,
        capture_output=True,
    )
    with wave.open(io.BytesIO(result.stdout)) as wav:
        rate = wav.getframerate()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return data.astype(np.float32) / 32768.0, rate


def _frame(i: int, fps: float, width: int, height: int) -> np.ndarray:
    """A moving colour gradient with a bright square, so every frame differs."""
    t = i / fps
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = (127 + 120 * np.sin(2 * np.pi * (x + 0.1 * t))).astype(np.uint8)
    img[..., 1] = (127 + 120 * np.sin(2 * np.pi * (y + 0.07 * t))).astype(np.uint8)
    img[..., 2] = (127 + 120 * np.cos(2 * np.pi * (x + y + 0.05 * t))).astype(np.uint8)
    side = max(8, height // 6)
    cx = int((width - side) * (0.5 + 0.45 * np.sin(t)))
    cy = int((height - side) * (0.5 + 0.45 * np.cos(0.7 * t)))
    img[cy : cy + side, cx : cx + side] = 255
    return img


def write_video(
    path: str | os.PathLike,
    duration: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16_000,
    size: tuple[int, int] = (320, 240),
    fps: int = 25,
    with_video: bool = True,
    faststart: bool = False,
) -> Path:
    """Write an H.264/AAC MP4 of ``duration`` seconds.

    ``audio`` (mono float32 at ``sample_rate``) is padded with silence or cut to the duration;
    ``audio=None`` writes no audio track. ``with_video=False`` writes an audio-only file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as out:
        vstream = None
        if with_video:
            vstream = out.add_stream("libx264", rate=fps)
            vstream.width, vstream.height = size
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"preset": "ultrafast"}
        astream = None
        if audio is not None:
            astream = out.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        if vstream is not None:
            for i in range(int(round(duration * fps))):
                frame = av.VideoFrame.from_ndarray(_frame(i, fps, *size), format="rgb24")
                out.mux(vstream.encode(frame))
            out.mux(vstream.encode(None))
        if astream is not None:
            total = int(round(duration * sample_rate))
            samples = np.zeros(total, dtype=np.float32)
            n = min(total, len(audio))
            samples[:n] = audio[:n]
            step = 1024
            for k, offset in enumerate(range(0, total, step)):
                chunk = samples[offset : offset + step]
                frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = offset
                out.mux(astream.encode(frame))
            out.mux(astream.encode(None))
    return path


def make_speech_video(path: str | os.PathLike, text: str, language: str = "en", pad: float = 0.5, **kwargs) -> Path:
    """A video whose audio track says ``text`` (espeak-ng), with ``pad`` seconds of silence
    before and after."""
    speech, rate = speak(text, language)
    lead = np.zeros(int(pad * rate), dtype=np.float32)
    audio = np.concatenate([lead, speech, lead])
    return write_video(path, duration=len(audio) / rate, audio=audio, sample_rate=rate, **kwargs)


def make_samples(folder: str | os.PathLike, languages: tuple[str, ...] = ("en", "zh")) -> list[Path]:
    """Write the sample videos (and a ``manifest.jsonl`` with titles and categories) to
    ``folder``; files that already exist are kept."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    manifest = []
    for sample in SAMPLES:
        if sample.language not in languages:
            continue
        path = folder / sample.name
        if not path.exists():
            tmp = path.with_suffix(".partial.mp4")
            make_speech_video(tmp, sample.text, sample.language)
            os.replace(tmp, path)
            logger.info("wrote sample %s", path)
        paths.append(path)
        entry = {"video": sample.name, "title": sample.title, "category": sample.category}
        if sample.language != "en":
            # Given, as a manifest of a mixed collection would: the embedded Whisper base takes
            # espeak-ng's Mandarin for Thai when it has to detect it. English is detected.
            entry["language"] = sample.language
        manifest.append(entry)
    with open(folder / "manifest.jsonl", "w", encoding="utf-8") as fh:
        for item in manifest:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    return paths
