"""Download: fetch URL rows (Bilibili, YouTube, direct links) with yt-dlp's Python API.

Rows whose ``video`` is a URL (ingest turns Bilibili BV ids and YouTube ids into URLs) are
downloaded to ``output_dir/<video_id>.<ext>``; their ``video`` becomes the local path, and the
platform's title, category, duration, uploader and language fill the record (metadata a
manifest gave wins). Local rows pass through untouched. A failed download is a row error; the row keeps its
URL so the failed-rows report says what to fetch again.

Cookies never come from code, settings values, logs or rows: ``cookiefile`` names a Netscape
cookies.txt (checked to be one before use, never echoed), or the environment variable
``cookies_env`` (default ``SESSDATA``, Bilibili's login cookie) is written to a temporary 0600
cookies file that is deleted after the batch (or at the next start, after a kill). yt-dlp's
messages go to ``logging`` with secrets masked. Credentials inside a URL (``user:pass@``,
``?token=``) are used for the download and masked everywhere else.

A video already downloaded (its file and the ``<video_id>.download.json`` note written after
a complete download) is not fetched again, so reruns and resumed runs cost no network.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from datasets import Features

from lomo_datasets.core import features as F
from lomo_datasets.core.cookies import check_cookie_file, temporary_cookie_file
from lomo_datasets.core.redact import mask_url_credentials, redact
from lomo_datasets.core.stage import SettingError, Stage
from lomo_datasets.processors.ingest import make_video_id, needs_download

logger = logging.getLogger(__name__)

RESOLUTIONS = (360, 480, 720, 1080, 1440, 2160)
NOTE = ".download.json"


class DownloadFailed(RuntimeError):
    """yt-dlp could not fetch a video (after the allowed attempts)."""


class _YtdlpLogger:
    """yt-dlp's logger interface, routed to ``logging`` with secrets masked."""

    def debug(self, message: str) -> None:
        logger.debug("yt-dlp: %s", redact(message))

    def info(self, message: str) -> None:
        logger.debug("yt-dlp: %s", redact(message))

    def warning(self, message: str) -> None:
        logger.info("yt-dlp: %s", redact(message))  # per video: only with -v

    def error(self, message: str) -> None:
        # The failure also becomes the row's error (and the contract logs that once).
        logger.info("yt-dlp: %s", redact(message))


def default_output_dir() -> str:
    from lomo_datasets.models.zoo import cache_dir

    return str(cache_dir() / "downloads")


@contextlib.contextmanager
def cookie_file(cookiefile: str | None, env_name: str | None, domain: str) -> Iterator[str | None]:
    """The cookies file yt-dlp gets: ``cookiefile`` once checked to be a Netscape cookies file,
    else a temporary private file holding the cookie named ``env_name`` from the environment
    (``lomo_datasets.core.cookies``: removed on exit, or at the next start after a kill), else ``None``."""
    if cookiefile:
        check_cookie_file(cookiefile)
        yield cookiefile
        return
    value = os.environ.get(env_name or "") if env_name else None
    if not value:
        yield None
        return
    with temporary_cookie_file(env_name, value, domain) as path:
        yield path


def _permanent(exc: BaseException) -> bool:
    """True for failures a retry cannot fix (HTTP 4xx other than 408/429, unavailable video)."""
    cause = getattr(exc, "exc_info", None)
    cause = cause[1] if cause and len(cause) > 1 else None
    status = getattr(cause, "status", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
        return True
    return bool(getattr(cause, "expected", False))


@dataclass
class Download(Stage):
    """Download URL rows with yt-dlp; local rows pass through.

    Settings: ``output_dir`` (default ``$LOMO_DATASETS_CACHE/downloads``), ``resolution`` (the
    height cap: 720 or 1080 as LoMo offered, or another of 360..2160), ``format`` (a full
    yt-dlp format string, overrides the cap), ``cookiefile`` (a Netscape cookies.txt),
    ``cookies_env``/``cookie_domain`` (the environment variable whose value is sent as the
    cookie of that name, Bilibili's SESSDATA by default), ``attempts`` and ``backoff``
    (seconds, doubled per attempt) for whole-download retries, ``retries`` for yt-dlp's own
    retries within one attempt, ``socket_timeout`` in seconds.
    """

    name = "download"
    version = "1"
    reads = ("video_id", "video", "title", "category", "language")
    requires = {"yt_dlp": "download"}
    rows_per_batch = 4
    #: A failed row keeps its URL and the metadata it came with.
    kept_on_error = ("video", "title", "category", "language")

    output_dir: str | None = None
    resolution: int = 720
    format: str | None = None
    cookiefile: str | None = None
    cookies_env: str | None = "SESSDATA"
    cookie_domain: str = ".bilibili.com"
    attempts: int = 3
    backoff: float = 2.0
    retries: int = 3
    socket_timeout: float = 30.0

    def validate(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise SettingError(f"download.resolution={self.resolution!r}: use one of {list(RESOLUTIONS)} (LoMo used 720 or 1080)")
        if self.cookiefile is not None:
            check_cookie_file(self.cookiefile)
        if not isinstance(self.attempts, int) or not 1 <= self.attempts <= 10:
            raise SettingError(f"download.attempts={self.attempts!r}: use a whole number from 1 to 10")
        if not isinstance(self.retries, int) or not 0 <= self.retries <= 20:
            raise SettingError(f"download.retries={self.retries!r}: use a whole number from 0 to 20")
        if not isinstance(self.backoff, (int, float)) or not 0 <= self.backoff <= 300:
            raise SettingError(f"download.backoff={self.backoff!r}: use seconds from 0 to 300")
        if not isinstance(self.socket_timeout, (int, float)) or self.socket_timeout <= 0:
            raise SettingError(f"download.socket_timeout={self.socket_timeout!r}: use a positive number of seconds")

    def features(self) -> Features:
        return F.DOWNLOAD

    # -- yt-dlp ----------------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        return Path(self.output_dir or default_output_dir())

    def format_spec(self) -> str:
        if self.format:
            return self.format
        cap = f"[height<=?{self.resolution}]"
        # Merging separate video and audio streams needs ffmpeg; without it take the best
        # single file under the cap.
        from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

        if FFmpegPostProcessor().available:
            return f"bv*{cap}+ba/b{cap}/wv*+ba/w"
        return f"b{cap}/w"

    def ytdlp_options(self, video_id: str, cookies: str | None) -> dict[str, Any]:
        options: dict[str, Any] = {
            "format": self.format_spec(),
            "outtmpl": str(self.folder / f"{video_id}.%(ext)s"),
            "quiet": True,
            "no_warnings": False,
            "noprogress": True,
            "noplaylist": True,
            "logger": _YtdlpLogger(),
            "retries": self.retries,
            "fragment_retries": self.retries,
            "extractor_retries": self.retries,
            "file_access_retries": 1,
            "socket_timeout": self.socket_timeout,
            "overwrites": False,
            "continuedl": True,
            "merge_output_format": "mp4",
            "color": {"stderr": "no_color", "stdout": "no_color"},
        }
        if cookies:
            options["cookiefile"] = cookies
        return options

    def _fetch(self, url: str, video_id: str, cookies: str | None) -> dict[str, Any]:
        import yt_dlp

        with yt_dlp.YoutubeDL(self.ytdlp_options(video_id, cookies)) as ydl:
            info = ydl.extract_info(url, download=True)
            if info is None:
                raise DownloadFailed(f"yt-dlp returned no video for {url}")
            if info.get("_type") == "playlist":
                raise DownloadFailed(f"{url} is a playlist; list its videos one per line instead")
            downloads = info.get("requested_downloads") or []
            path = downloads[0].get("filepath") if downloads else None
            path = path or ydl.prepare_filename(info)
        if not path or not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise DownloadFailed(f"yt-dlp reported success but wrote no file for {url}")
        categories = info.get("categories") or []
        return {
            "video": os.path.abspath(path),
            "title": info.get("title"),
            "category": categories[0] if categories else info.get("genre"),
            "uploader": info.get("uploader") or info.get("channel"),
            "duration": float(info["duration"]) if info.get("duration") else None,
            # the platform's language tag ("zh", "en-US"): ASR decodes in it instead of detecting
            "language": (info.get("language") or "").lower().split("-")[0] or None,
        }

    def download(self, url: str, video_id: str, cookies: str | None = None) -> dict[str, Any]:
        """Fetch ``url`` to ``output_dir/<video_id>.<ext>`` (or reuse an earlier download):
        the local path and the platform's metadata."""
        from yt_dlp.utils import DownloadError

        video_id = make_video_id(video_id)
        note = self.folder / f"{video_id}{NOTE}"
        if note.is_file():
            known = json.loads(note.read_text(encoding="utf-8"))
            if known.get("url") in (url, mask_url_credentials(url)) and os.path.isfile(known.get("video", "")):
                logger.debug("download: %s already downloaded", video_id)
                return {k: known.get(k) for k in F.DOWNLOAD}
        self.folder.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, self.attempts + 1):
            try:
                result = self._fetch(url, video_id, cookies)
                break
            except DownloadError as exc:
                if attempt == self.attempts or _permanent(exc):
                    message = redact(str(exc)).removeprefix("ERROR: ").strip()
                    raise DownloadFailed(f"{message} (attempt {attempt} of {self.attempts})") from None
                wait = self.backoff * 2 ** (attempt - 1)
                logger.info("download: %s failed (attempt %d of %d), retrying in %.1fs", video_id, attempt, self.attempts, wait)
                time.sleep(wait)
        tmp = note.with_name(note.name + ".partial")
        tmp.write_text(json.dumps({"url": mask_url_credentials(url), **result}, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, note)
        return result

    # -- the stage -------------------------------------------------------------------------

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        keep = {k: row.get(k) for k in F.DOWNLOAD}
        if not needs_download(row["video"]):
            return keep
        with cookie_file(self.cookiefile, self.cookies_env, self.cookie_domain) as cookies:
            got = self.download(row["video"], row["video_id"], cookies)
        # Metadata the input gave (a manifest's title) wins over the platform's.
        return {k: keep[k] if keep.get(k) is not None and k != "video" else got.get(k) for k in F.DOWNLOAD}
