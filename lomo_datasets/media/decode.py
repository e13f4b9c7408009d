"""Media access with PyAV only: probe, in-memory audio decoding, evenly spaced frames.

No temporary files: audio is decoded straight to 16 kHz mono float32 in memory, and only the
requested time range is kept. Bad inputs raise typed ``MediaError`` subclasses, which stages
turn into row errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import av
import numpy as np

from lomo_datasets.core.redact import mask_url_credentials
from lomo_datasets.media import remote

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000


class MediaError(Exception):
    """A media file cannot be used. Subclasses say why."""


class MediaNotFoundError(MediaError):
    pass


class EmptyMediaError(MediaError):
    pass


class CorruptMediaError(MediaError):
    pass


class TruncatedMediaError(MediaError):
    pass


class NoAudioError(MediaError):
    pass


class NoVideoError(MediaError):
    pass


class NotAFileError(MediaError):
    """The path is a directory, a device (``/dev/zero``), a FIFO or a socket."""


def special_file_kind(mode: int) -> str:
    """What a path that is not a regular file is ("a character device", "a named pipe (FIFO)" ...)."""
    for test, name in (
        (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


@dataclass
class MediaInfo:
    duration: float
    width: int | None
    height: int | None
    fps: float | None
    has_audio: bool
    has_video: bool
    video_codec: str | None
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def _open(path: str) -> Iterator[av.container.InputContainer]:
    """The container of a local file, or of a remote object (``s3://`` ...: read through fsspec
    in blocks, never whole)."""
    path = os.fspath(path)
    if remote.is_remote(path):
        with _open_remote(path) as container:
            yield container
        return
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MediaNotFoundError(f"no such file: {path}") from None
    except OSError as exc:
        raise MediaNotFoundError(f"cannot read ({exc.strerror}): {path}") from None
    if not stat.S_ISREG(mode):
        # Never opened: a FIFO would block forever, /dev/zero and /dev/urandom never end.
        raise NotAFileError(f"{special_file_kind(mode)}, not a video file: {path}")
    if os.path.getsize(path) == 0:
        raise EmptyMediaError(f"file is empty (0 bytes): {path}")
    with _container(path, path) as container:
        yield container


@contextlib.contextmanager
def _open_remote(url: str) -> Iterator[av.container.InputContainer]:
    shown = mask_url_credentials(url)
    try:
        facts = remote.info(url)
    except FileNotFoundError:
        raise MediaNotFoundError(f"no such object: {shown}") from None
    except (OSError, ValueError) as exc:  # permission, network, bad bucket name
        raise MediaNotFoundError(f"cannot read ({exc.__class__.__name__}: {mask_url_credentials(str(exc))}): {shown}") from None
    if facts.get("type") == "directory":
        raise NotAFileError(f"a folder, not a video file: {shown}")
    if not facts.get("size"):
        raise EmptyMediaError(f"file is empty (0 bytes): {shown}")
    with remote.open_file(url) as handle, _container(handle, shown) as container:
        yield container


@contextlib.contextmanager
def _container(source: Any, shown: str) -> Iterator[av.container.InputContainer]:
    """PyAV's container of ``source`` (a path or a file object); ``shown`` names it in errors."""
    try:
        container = av.open(source, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise CorruptMediaError(f"cannot open as media ({exc.__class__.__name__}: {exc}): {shown}") from exc
    with container:
        yield container


def _stream_duration(stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def probe(path: str, verify: bool = True) -> MediaInfo:
    """Container facts of ``path``.

    With ``verify`` the packets are read (not decoded, which is fast) to check the file is
    whole: a truncated file whose header promises more than its packets hold raises
    ``TruncatedMediaError``, and the duration is taken from the packets when the header has none.
    """
    with _open(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise CorruptMediaError(f"no audio or video stream: {path}")
        header = container.duration / av.time_base if container.duration else None
        streams = [s for s in (video, audio) if s is not None]
        stream_durations = [d for d in map(_stream_duration, streams) if d]
        claimed = max(stream_durations) if stream_durations else header
        measured = _packet_extent(container, streams, path) if verify else None
    duration = measured if measured is not None else claimed
    if duration is None or not np.isfinite(duration) or duration <= 0:
        raise CorruptMediaError(f"no usable duration (header says {claimed}): {path}")
    if verify and claimed and measured is not None and measured < claimed - max(1.0, 0.05 * claimed):
        raise TruncatedMediaError(f"file ends at {measured:.2f}s but its header says {claimed:.2f}s: {path}")
    fps = None
    if video is not None:
        rate = video.average_rate or video.guessed_rate
        fps = float(rate) if rate else None
    ctx = audio.codec_context if audio is not None else None
    return MediaInfo(
        duration=round(float(duration), 3),
        width=video.codec_context.width if video is not None else None,
        height=video.codec_context.height if video is not None else None,
        fps=fps,
        has_audio=audio is not None,
        has_video=video is not None,
        video_codec=video.codec_context.name if video is not None else None,
        audio_codec=ctx.name if ctx is not None else None,
        sample_rate=ctx.sample_rate if ctx is not None else None,
        channels=ctx.channels if ctx is not None else None,
    )


def _packet_extent(container, streams, path: str) -> float | None:
    """Largest packet end time over ``streams``, reading packets without decoding."""
    end = None
    try:
        for packet in container.demux(*streams):
            if packet.pts is None or packet.time_base is None:
                continue
            t = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            if packet.stream.start_time is not None:
                t -= float(packet.stream.start_time * packet.time_base)
            end = t if end is None else max(end, t)
    except av.error.FFmpegError as exc:
        raise TruncatedMediaError(f"packets end early ({exc}): {path}") from exc
    return end


def decode_audio(
    path: str,
    start: float | None = None,
    end: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Audio of ``path`` (or of ``[start, end)`` seconds) as mono float32 at ``sample_rate``.

    Decodes in memory; memory is proportional to the range asked for. Raises ``NoAudioError``
    when the file has no audio track and ``CorruptMediaError``/``TruncatedMediaError`` when the
    stream cannot be decoded.
    """
    start = max(0.0, float(start or 0.0))
    if end is not None and end <= start:
        raise ValueError(f"empty audio range [{start}, {end})")
    first = int(round(start * sample_rate))
    last = None if end is None else int(round(end * sample_rate))
    with _open(path) as container:
        if not container.streams.audio:
            raise NoAudioError(f"no audio track: {path}")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        if start > 0:
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        position = None  # sample index (at sample_rate) of the next resampled sample
        got = 0
        try:
            for frame in container.decode(stream):
                if position is None:
                    t0 = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                    t0 -= float(stream.start_time * stream.time_base) if stream.start_time else 0.0
                    position = int(round(max(t0, 0.0) * sample_rate))
                for out in resampler.resample(frame):
                    position, got = _keep(out, position, first, last, chunks, got)
                if last is not None and position is not None and position >= last:
                    break
            else:
                for out in resampler.resample(None):
                    position, got = _keep(out, position, first, last, chunks, got)
        except av.error.FFmpegError as exc:
            if not chunks:
                raise CorruptMediaError(f"cannot decode audio ({exc}): {path}") from exc
            raise TruncatedMediaError(
                f"audio stops decoding after {(first + got) / sample_rate:.2f}s ({exc}): {path}"
            ) from exc
        claimed = _stream_duration(stream) or (container.duration / av.time_base if container.duration else None)
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if end is None and claimed and (first + got) / sample_rate < claimed - max(1.0, 0.05 * claimed):
        raise TruncatedMediaError(
            f"audio ends at {(first + got) / sample_rate:.2f}s but the header says {claimed:.2f}s: {path}"
        )
    return np.ascontiguousarray(audio, dtype=np.float32)


def _keep(frame, position, first, last, chunks, got):
    samples = frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)
    lo = max(first - position, 0)
    hi = len(samples) if last is None else min(len(samples), last - position)
    if hi > lo:
        chunks.append(samples[lo:hi].copy())
        got += hi - lo
    return position + len(samples), got


def sample_frames(
    path: str,
    num_frames: int = 8,
    size: tuple[int, int] | None = (320, 180),
    start: float | None = None,
    end: float | None = None,
) -> list[np.ndarray]:
    """``num_frames`` evenly spaced RGB frames (H x W x 3 uint8) of ``path`` or of a range.

    The frames sit at the middles of ``num_frames`` equal parts of the range. ``size`` is
    (width, height); ``None`` keeps the original size. Raises ``NoVideoError`` for audio-only.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    info = probe(path, verify=False)
    if not info.has_video:
        raise NoVideoError(f"no video track: {path}")
    lo = max(0.0, start or 0.0)
    hi = min(info.duration, end) if end is not None else info.duration
    if hi <= lo:
        raise ValueError(f"empty frame range [{lo}, {hi}] for a {info.duration:.2f}s video")
    targets = [lo + (hi - lo) * (i + 0.5) / num_frames for i in range(num_frames)]
    width, height = size if size else (None, None)
    frames: list[np.ndarray] = []
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        offset = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        try:
            decoded = container.decode(stream)
            current = None
            for target in targets:
                if current is not None and _time(current, offset) >= target:
                    frames.append(_rgb(current, width, height))
                    continue
                if current is None or target - _time(current, offset) > 2.0:
                    container.seek(int((target + offset) / stream.time_base), stream=stream, backward=True)
                    decoded = container.decode(stream)
                for frame in decoded:
                    current = frame
                    if _time(frame, offset) + 0.5 / (info.fps or 25.0) >= target:
                        break
                if current is None:
                    raise CorruptMediaError(f"no decodable frame near {target:.2f}s: {path}")
                frames.append(_rgb(current, width, height))
        except av.error.FFmpegError as exc:
            raise CorruptMediaError(f"cannot decode video ({exc}): {path}") from exc
    return frames


def _time(frame, offset: float) -> float:
    return float(frame.pts * frame.time_base) - offset if frame.pts is not None else 0.0


def _rgb(frame, width, height) -> np.ndarray:
    if width and height:
        return frame.to_ndarray(width=width, height=height, format="rgb24")
    return frame.to_ndarray(format="rgb24")


__all__ = [
    "SAMPLE_RATE",
    "MediaError",
    "MediaNotFoundError",
    "EmptyMediaError",
    "CorruptMediaError",
    "TruncatedMediaError",
    "NoAudioError",
    "NoVideoError",
    "MediaInfo",
    "probe",
    "decode_audio",
    "sample_frames",
]
