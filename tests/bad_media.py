"""More bad inputs for the bad-input corpus, made by the tests (PyAV + byte patching), cached
beside the other test media:

- ``single_frame``: a video of exactly one frame, no audio
- ``absurd_duration``: a 2 s Matroska file whose header claims 10 hours
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from lomo_datasets.media.samples import write_video
from tests.media import _once

CLAIMED_SECONDS = 10 * 3600


def claim_duration(mkv: bytes, seconds: float) -> bytes:
    """``mkv`` (a Matroska file written by FFmpeg/PyAV) with its Segment Info Duration element
    (ID 0x4489, an 8-byte float in milliseconds at the default timecode scale) set to
    ``seconds``. The packets are untouched, so the file holds far less than it claims."""
    marker = bytes([0x44, 0x89, 0x88])
    at = mkv.find(marker)
    if at < 0 or at > 4096:
        raise ValueError("no Segment Info Duration element near the start of the file")
    return mkv[: at + 3] + struct.pack(">d", seconds * 1000.0) + mkv[at + 11 :]


def make_bad(folder: str | os.PathLike) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    single = _once(folder / "single_frame.mp4", lambda p: write_video(p, 1 / 25, audio=None, fps=25))
    plain = _once(folder / "two_seconds.mkv", lambda p: write_video(p, 2.0, audio=None))
    absurd = _once(
        folder / "absurd_duration.mkv", lambda p: p.write_bytes(claim_duration(plain.read_bytes(), CLAIMED_SECONDS))
    )
    return {"single_frame": single, "absurd_duration": absurd}
