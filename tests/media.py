"""Test media, made by the tests with PyAV, espeak-ng and gcin-voice; generated once per test run.

``make_all(folder)`` returns a ``TestMedia`` with these files:

- ``english``: English speech (espeak-ng), 320x240 @ 25 fps, text in ``ENGLISH_TEXT``
- ``english2``: a second English clip, text in ``ENGLISH_TEXT2``
- ``mandarin``: Mandarin speech (pypinyin + cmn-latn-pinyin), text in ``MANDARIN_TEXT``
- ``mandarin_human``: eight Mandarin sentences in a real human voice (recorded syllables from
  Debian's ``gcin-voice``, stitched), text in ``MANDARIN_HUMAN_TEXT``
- ``no_audio``: 3 s of frames, no audio track
- ``silent``: 4 s of frames with an all-zero audio track
- ``audio_only``: 3 s of speech in an MP4 with no video track
- ``corrupt``: random bytes named .mp4
- ``truncated``: the first 60 % of a faststart MP4 (header promises more than the packets hold)
- ``truncated_tail``: the first 60 % of a normal MP4 (its index at the end is gone)
- ``zero_byte``: an empty .mp4
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lomo_datasets.media.samples import make_speech_video, write_video

ENGLISH_TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "Today we are testing speech recognition on a short video clip."
)
ENGLISH_TEXT2 = "Please boil the water first. Then add the pasta and wait ten minutes."
MANDARIN_TEXT = "今天天气很好。我们去公园散步。"
MANDARIN_HUMAN_TEXT = ("今天我们在家做饭。首先把水烧开。然后放入面条。再切一个番茄。"
                       "把番茄放进锅里。加一点盐。等十分钟。最后我们一起吃饭。")

SIZE = (320, 240)
FPS = 25


@dataclass(frozen=True)
class TestMedia:
    folder: Path
    english: Path
    english2: Path
    mandarin: Path
    mandarin_human: Path
    no_audio: Path
    silent: Path
    audio_only: Path
    corrupt: Path
    truncated: Path
    truncated_tail: Path
    zero_byte: Path

    def good(self) -> list[Path]:
        return [self.english, self.english2, self.mandarin, self.no_audio, self.silent]

    def bad(self) -> list[Path]:
        return [self.corrupt, self.truncated, self.truncated_tail, self.zero_byte, self.audio_only]

    __test__ = False  # not a pytest test class


def _once(path: Path, make) -> Path:
    if not path.exists():
        tmp = path.with_name(".tmp-" + path.name)
        make(tmp)
        os.replace(tmp, path)
    return path


def _truncate(source: Path, share: float):
    def make(tmp: Path) -> None:
        data = source.read_bytes()
        tmp.write_bytes(data[: int(len(data) * share)])

    return make


def make_all(folder: str | os.PathLike) -> TestMedia:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    english = _once(folder / "english.mp4", lambda p: make_speech_video(p, ENGLISH_TEXT, size=SIZE, fps=FPS))
    english2 = _once(folder / "english2.mp4", lambda p: make_speech_video(p, ENGLISH_TEXT2, size=SIZE, fps=FPS))
    mandarin = _once(folder / "mandarin.mp4", lambda p: make_speech_video(p, MANDARIN_TEXT, language="zh", size=SIZE, fps=FPS))
    mandarin_human = _once(folder / "mandarin_human.mp4",
                           lambda p: make_speech_video(p, MANDARIN_HUMAN_TEXT, language="zh", voice="human", size=SIZE, fps=FPS))
    no_audio = _once(folder / "no_audio.mp4", lambda p: write_video(p, 3.0, audio=None, size=SIZE, fps=FPS))
    silent = _once(folder / "silent.mp4", lambda p: write_video(p, 4.0, audio=np.zeros(1, np.float32), size=SIZE, fps=FPS))
    audio_only = _once(
        folder / "audio_only.mp4",
        lambda p: write_video(p, 3.0, audio=np.sin(np.linspace(0, 3000, 48000)).astype(np.float32) * 0.3, with_video=False),
    )
    rng = np.random.default_rng(0)
    corrupt = _once(folder / "corrupt.mp4", lambda p: p.write_bytes(rng.bytes(50_000)))
    faststart = _once(folder / "faststart.mp4", lambda p: make_speech_video(p, ENGLISH_TEXT, size=SIZE, fps=FPS, faststart=True))
    truncated = _once(folder / "truncated.mp4", _truncate(faststart, 0.6))
    truncated_tail = _once(folder / "truncated_tail.mp4", _truncate(english, 0.6))
    zero_byte = _once(folder / "zero_byte.mp4", lambda p: p.write_bytes(b""))
    return TestMedia(folder, english, english2, mandarin, mandarin_human, no_audio, silent, audio_only, corrupt, truncated, truncated_tail, zero_byte)
