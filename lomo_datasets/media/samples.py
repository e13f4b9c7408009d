"""Make sample videos offline: synthetic frames (PyAV) with speech from espeak-ng, or Mandarin
stitched from a real human voice's recorded syllables (Debian ``gcin-voice``).

Used by ``lomo-datasets sample`` and ``lomo-datasets demo`` (the embedded sample the README's
main command runs on) and by the tests' media fixtures.
"""

from __future__ import annotations

import io
import logging
import os
import re
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


#: Where Debian's ``gcin-voice`` package keeps its recorded syllables: a folder per Zhuyin
#: syllable and tone (``ㄅㄚ``, ``ㄅㄚ2``..``ㄅㄚ4``; ``1`` is the neutral tone), one ``N.ogg`` per voice.
GCIN_VOICE_DIR = "/usr/share/gcin-voice/ogg"
#: Voice 5 is CC-BY-3 (ChionMeilin, vocal source Chu Lo); voice 3 (GPL/LGPL) fills its few gaps.
GCIN_VOICES = ("5", "3")
_TONE_SUFFIX = {"ˊ": "2", "ˇ": "3", "ˋ": "4", "˙": "1"}
_CLAUSE_END = re.compile(r"[。！？!?.；;]")
_CLAUSE_PAUSE = re.compile(r"[，,、：:]")
_UNSPOKEN = set("“”‘’「」『』（）()《》〈〉\"'—…-·")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+|[^\u3400-\u4dbf\u4e00-\u9fff]+")


def gcin_voice_dir(folder: str | os.PathLike | None = None) -> Path:
    """The gcin-voice syllable folder (``LOMO_GCIN_VOICE`` or Debian's path), or an error that
    says how to get it."""
    path = Path(folder or os.environ.get("LOMO_GCIN_VOICE") or GCIN_VOICE_DIR)
    if not path.is_dir():
        raise RuntimeError(
            f"human Mandarin voice: {path} is not a folder: apt-get install gcin-voice "
            "(or `apt-get download gcin-voice && dpkg-deb -x gcin-voice_*.deb DIR` and set "
            "LOMO_GCIN_VOICE=DIR/usr/share/gcin-voice/ogg)")
    return path


def _read_ogg(path: Path, rate: int) -> np.ndarray:
    from lomo_datasets.media.decode import decode_audio

    audio = decode_audio(str(path), sample_rate=rate)
    # Trim the recording's leading and trailing near-silence, so syllables join as speech.
    loud = np.flatnonzero(np.abs(audio) > 0.02 * (np.abs(audio).max() or 1.0))
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio


def _syllable_file(folder: Path, bopomofo: str) -> Path | None:
    base, suffix = bopomofo, ""
    if bopomofo and bopomofo[-1] in _TONE_SUFFIX:
        base, suffix = bopomofo[:-1], _TONE_SUFFIX[bopomofo[-1]]
    if base.startswith("˙"):  # pypinyin may put the neutral-tone mark first
        base, suffix = base[1:], "1"
    # The recorded tone first; a neutral syllable missing its own recording takes tone 1.
    for name in (base + suffix, base, *(base + t for t in "1234")):
        for voice in GCIN_VOICES:
            path = folder / name / f"{voice}.ogg"
            if path.is_file():
                return path
    return None


def speak_human_mandarin(text: str, rate: int = 16_000, folder: str | os.PathLike | None = None,
                         gap: float = 0.02, pause: float = 0.25, sentence_pause: float = 0.9) -> tuple[np.ndarray, int]:
    """Mandarin speech for ``text`` stitched from a real human voice's recorded syllables
    (Debian ``gcin-voice``): each character's Zhuyin (pypinyin's BOPOMOFO style) picks a
    syllable recording; ``pause`` seconds at commas, ``sentence_pause`` at the end of a sentence.
    A character with no recording raises ``ValueError`` naming it."""
    from pypinyin import Style, pinyin

    root = gcin_voice_dir(folder)
    cache: dict[Path, np.ndarray] = {}
    pieces: list[np.ndarray] = []
    silence = lambda seconds: np.zeros(int(seconds * rate), dtype=np.float32)  # noqa: E731
    for run in _HAN_RUN.findall(text):
        if not _HAN.match(run):
            for char in run:  # punctuation, spaces and anything else: one at a time
                if _CLAUSE_END.fullmatch(char):
                    pieces.append(silence(sentence_pause))
                elif _CLAUSE_PAUSE.fullmatch(char) or char.isspace():
                    pieces.append(silence(pause))
                elif char not in _UNSPOKEN:

                    raise ValueError(f"human Mandarin voice: no recording for {char!r}: write numbers and names in Chinese characters")
            continue
        # A run of Chinese characters at once, so pypinyin reads each in its phrase (了, 行, 得).
        for char, (sound,) in zip(run, pinyin(run, style=Style.BOPOMOFO)):
            path = _syllable_file(root, sound)
            if path is None:
                raise ValueError(f"human Mandarin voice: no recording for {char!r} ({sound}) in {root}")
            if path not in cache:
                cache[path] = _read_ogg(path, rate)
            pieces += [cache[path], silence(gap)]
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    peak = float(np.abs(audio).max() or 1.0)
    return (0.8 * audio / peak).astype(np.float32), rate


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


def make_speech_video(path: str | os.PathLike, text: str, language: str = "en", pad: float = 0.5,
                      voice: str = "espeak", **kwargs) -> Path:
    """A video whose audio track says ``text``, with ``pad`` seconds of silence before and after:
    ``voice="espeak"`` (espeak-ng, any language it reads) or ``voice="human"`` (Mandarin only: a
    real voice's recorded syllables from ``gcin-voice``, see ``speak_human_mandarin``)."""
    if voice == "human":
        if language != "zh":
            raise ValueError(f"voice='human' speaks Mandarin only (language='zh'), not {language!r}")
        speech, rate = speak_human_mandarin(text)
    elif voice == "espeak":
        speech, rate = speak(text, language)
    else:
        raise ValueError(f"voice={voice!r}: use 'espeak' or 'human'")
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
