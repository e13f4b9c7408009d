"""The review page: look at what was built, video beside its questions or words.

``write_page(folder)`` writes ``FOLDER/review.html``, one self-contained HTML file (its CSS,
script and data inline; no CDN, works offline from ``file://``):

- a LoMo folder (rows with ``questions``): each video in an HTML5 player with its questions, the
  correct option marked, the blind answerer's pick and the audit flags shown (from
  ``audit.json`` when ``lomo-datasets audit`` wrote one, else the checks that need no LLM);
  a click on a window plays the video from the window's start and pauses at its end;
- a LiveCC folder (clip rows with ``video_start``/``video_end`` and timed ``content``): each clip
  plays from ``video_start`` to ``video_end`` with its query, and the word stream is highlighted
  as the video plays (a click on a word seeks there).

Pages of ``per_page`` videos (the players of other pages are not in the document, so hundreds of
videos load fast); the page number is in the URL (``#page=3``). Videos are linked by their path
relative to the page. ``serve(folder)`` serves the same page on 127.0.0.1 with the videos (and
only those files) under ``/media/<n>``, with HTTP range requests so the player can seek.
"""

from __future__ import annotations

import functools
import html
import http.server
import json
import logging
import os
import re
import stat
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from lomo_datasets.audit import checks as A
from lomo_datasets.core.stage import SettingError

logger = logging.getLogger(__name__)

PAGE_NAME = "review.html"
GENERATOR = "lomo-datasets view"
_LOMO_COLUMNS = ("video_id", "video", "title", "duration", "questions", "segments", "segments_en")
_LIVECC_COLUMNS = (
    "video_id", "clip_id", "video", "title", "video_start", "video_end", "content", "query", "previous", "preasr",
)


# --------------------------------------------------------------------------------------------
# Records for the page
# --------------------------------------------------------------------------------------------


def folder_kind(folder: str | os.PathLike) -> str:
    """``lomo`` or ``livecc``: what the folder's recipe declared (its provenance), else (older
    folders) from the columns of its data."""
    import pyarrow.parquet as pq

    from lomo_datasets.publish.layout import read_provenance

    files = sorted((Path(folder) / "data").glob("*.parquet"))
    if not files:
        raise SettingError(f"{folder}: no data/*.parquet here; give a folder written by `lomo-datasets run`")
    provenance = read_provenance(folder)
    declared = provenance.output if provenance is not None else ""
    if declared in ("lomo", "livecc"):
        return declared
    if declared == "generic":
        raise SettingError(f"{folder}: written by recipe '{provenance.recipe}', which makes neither LoMo questions nor LiveCC clips")
    with A.parquet_errors(files[0]):
        names = set(pq.read_schema(files[0]).names)
    if "questions" in names:
        return "lomo"
    if {"video_start", "video_end", "content"} <= names:
        return "livecc"
    raise SettingError(f"{folder}: neither LoMo rows (questions) nor LiveCC clips (video_start, video_end, content)")


def _media_path(video: str | None, folder: Path) -> Path | None:
    if not video or "://" in video:
        return None
    path = Path(video)
    for candidate in (path, folder / path) if not path.is_absolute() else (path,):
        if candidate.exists():
            return candidate.resolve()
    return None


def _src(video: str | None, folder: Path, page_dir: Path) -> str:
    """The player's ``src``: a URL as it is, a local file relative to the page."""
    if video and "://" in video:
        return video
    path = _media_path(video, folder)
    if path is None:
        return ""
    try:
        rel = os.path.relpath(path, page_dir)
    except ValueError:  # another drive
        return path.as_uri()
    return urllib.parse.quote(Path(rel).as_posix())


def _flags_from_report(report: dict[str, Any] | None) -> tuple[dict[str, list[dict]], dict]:
    if not report:
        return {}, {}
    flags: dict[str, list[dict]] = {}
    for flag in report.get("flags") or []:
        flags.setdefault(str(flag.get("question_id")), []).append({"reason": flag.get("reason"), "detail": flag.get("detail", "")})
    blind = {str(k): v for k, v in (report.get("blind_answers") or {}).items() if v}
    return flags, blind


def lomo_records(rows: list[dict[str, Any]], folder: Path, page_dir: Path, report: dict[str, Any] | None = None) -> list[dict]:
    """One record per video: its player source and questions with flags."""
    videos = [A.Video.from_row(r) for r in rows]
    if report is None:
        computed = A.audit(videos)
        report = computed.to_dict()
    flags, blind = _flags_from_report(report)
    records = []
    for row, video in zip(rows, videos):
        questions = []
        for q in video.questions:
            qid = str(q.get("question_id"))
            questions.append(
                {
                    "id": qid,
                    "task": q.get("task") or "",
                    "question": q.get("question") or "",
                    "options": [[k, v] for k, v in A.parse_options(q).items()],
                    "answer": A.answer_letter(q),
                    "window": list(q.get("window") or []),
                    "descriptions": q.get("descriptions") or "",
                    "flags": flags.get(qid, []),
                    "blind": blind.get(qid),
                }
            )
        records.append(
            {
                "id": video.video_id,
                "title": row.get("title") or "",
                "src": _src(row.get("video"), folder, page_dir),
                "duration": video.duration,
                "questions": questions,
            }
        )
    return records


def livecc_records(rows: list[dict[str, Any]], folder: Path, page_dir: Path) -> list[dict]:
    """One record per clip: source, window, query, the transcript before it and its words."""
    records = []
    for i, row in enumerate(rows):
        words = [[round(float(w["start"]), 3), round(float(w["end"]), 3), w["word"]] for w in row.get("content") or []]
        start = row.get("video_start")
        end = row.get("video_end")
        records.append(
            {
                "id": row.get("clip_id") or f"{row.get('video_id') or 'clip'}#{i}",
                "title": row.get("title") or "",
                "src": _src(row.get("video"), folder, page_dir),
                "start": float(start) if start is not None else (words[0][0] if words else 0.0),
                "end": float(end) if end is not None else (words[-1][1] if words else None),
                "query": row.get("query") or "",
                "previous": row.get("previous") or row.get("preasr") or "",
                "words": words,
            }
        )
    return records


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------

_STATIC = Path(__file__).with_name("static")


@functools.lru_cache(maxsize=None)
def _static(name: str) -> str:
    """A file of the page's script or style (package data: ``review/static/``)."""
    return "\n" + (_STATIC / name).read_text(encoding="utf-8")


def _summary(kind: str, records: list[dict], report: dict[str, Any] | None) -> str:
    if kind == "livecc":
        words = sum(len(r["words"]) for r in records)
        return f"{len(records)} clips · {words} words"
    questions = sum(len(r["questions"]) for r in records)
    flagged = sum(1 for r in records for q in r["questions"] if q["flags"])
    text = f"{len(records)} videos · {questions} questions · {flagged} flagged"
    if report:
        overall = (report.get("tasks") or {}).get("all") or {}
        blind = overall.get("blind")
        if blind and blind.get("answered"):
            text += (
                f" · blind accuracy {100 * blind['accuracy']:.0f}% [{100 * blind['ci_low']:.0f}%, {100 * blind['ci_high']:.0f}%]"
                f" of {blind['answered']} ({report.get('blind_model') or 'LLM'}; chance {100 * blind['chance']:.0f}%)"
            )
    return text


def _audit_table_html(report: dict[str, Any] | None) -> str:
    if not report or not report.get("tasks"):
        return ""
    head = "<tr><th>task</th><th>items</th><th>blind acc.</th><th>answer longest</th><th>letters</th><th>flagged</th></tr>"
    rows = []
    for task, fig in report["tasks"].items():
        blind = fig.get("blind")
        acc = f"{100 * blind['accuracy']:.0f}%" if blind and blind.get("accuracy") is not None else "–"
        longest = f"{100 * fig['longest_rate']:.0f}%" if fig.get("longest_rate") is not None else "–"
        letters = " ".join(f"{k}{v}" for k, v in (fig.get("letters") or {}).items())
        cells = [task, fig.get("items"), acc, longest, letters, fig.get("flagged_items")]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return f'<table class="audit" id="audit">{head}{"".join(rows)}</table>'


def script_json(data: Any) -> str:
    """``data`` as JSON safe inside a ``<script>`` element: ``<``, ``>``, ``&`` and U+2028/9
    are escaped, so no text (``</script>``, ``<!--<script>``) can end or comment out the script."""
    text = json.dumps(data, ensure_ascii=False)
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def page_html(kind: str, records: list[dict], title: str, per_page: int = 20, report: dict[str, Any] | None = None) -> str:
    """The whole page as one string (data inline as JSON)."""
    if kind not in ("lomo", "livecc"):
        raise ValueError(f"kind {kind!r}: use lomo or livecc")
    data = {"kind": kind, "per_page": per_page, "unit": "videos" if kind == "lomo" else "clips", "records": records}
    payload = script_json(data)
    flagged = '<label><input type="checkbox" id="flagged"> only flagged</label>' if kind == "lomo" else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{GENERATOR}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>{_static("review.css")}</style>
</head>
<body data-kind="{kind}" data-videos="{len(records)}" data-questions="{sum(len(r.get('questions') or []) for r in records)}">
<header>
<h1>{html.escape(title)}</h1>
<div class="summary" id="summary">{html.escape(_summary(kind, records, report))}</div>
{_audit_table_html(report) if kind == "lomo" else ""}
<div id="errors"></div>
</header>
<nav class="controls">
<button class="prev" type="button">&larr; previous</button><span id="pageinfo"></span><button class="next" type="button">next &rarr;</button>
<input type="search" id="search" placeholder="search id, title, question">{flagged}
</nav>
<main id="cards"></main>
<script id="data" type="application/json">{payload}</script>
<script>{_static("review.js")}</script>
</body>
</html>
"""


def servable(path: Path | None, roots: list[Path]) -> Path | None:
    """``path`` resolved (links followed) when it is a regular file with a video extension under
    one of ``roots`` (resolved too), else None: what ``--serve`` may send."""
    if path is None:
        return None
    try:
        real = Path(os.path.realpath(path))
        st = os.stat(real)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode) or real.suffix.lower() not in _VIDEO_SUFFIXES:
        return None
    for root in roots:
        root = Path(os.path.realpath(root))
        if root in real.parents:
            return real
    return None


def build_page(
    folder: str | os.PathLike, page_dir: str | os.PathLike | None = None, per_page: int = 20,
    media_prefix: str | None = None, video_roots: list[str | os.PathLike] | None = None,
) -> tuple[str, list[Path | None]]:
    """``(html, media files)`` for a dataset folder. With ``media_prefix`` the players' sources
    are ``<prefix><n>`` (the n-th media file; used by ``serve``): only regular video files
    under the dataset folder or one of ``video_roots`` (after resolving links) get one; the
    others have no source (``refused`` on the returned list counts them)."""
    if not isinstance(per_page, int) or per_page < 1:
        raise SettingError(f"--per-page {per_page!r}: use an integer >= 1")
    folder = Path(folder)
    page_dir = Path(page_dir or folder).resolve()
    kind = folder_kind(folder)
    report = A.read_report(folder) if kind == "lomo" else None
    rows = A.read_rows(folder, _LOMO_COLUMNS if kind == "lomo" else _LIVECC_COLUMNS)
    records = lomo_records(rows, folder, page_dir, report) if kind == "lomo" else livecc_records(rows, folder, page_dir)
    media: list[Path | None] = []
    refused = 0
    if media_prefix is not None:
        roots = [folder, *(Path(r) for r in video_roots or [])]
        index: dict[Path, int] = {}
        for rec, row in zip(records, rows):
            path = servable(_media_path(row.get("video"), folder), roots)
            if path is None:
                refused += bool(row.get("video")) and "://" not in str(row.get("video"))
                rec["src"] = "" if "://" not in str(row.get("video") or "") else rec["src"]
                continue
            if path not in index:
                index[path] = len(media)
                media.append(path)
            rec["src"] = f"{media_prefix}{index[path]}"
    title = f"{folder.resolve().name}: {'LoMo QA' if kind == 'lomo' else 'LiveCC clips'} review"
    media = _Media(media)
    media.refused = refused
    return page_html(kind, records, title, per_page, report), media


class _Media(list):
    """The served files, and how many local videos were refused (outside the roots)."""

    refused = 0


def write_page(folder: str | os.PathLike, out: str | os.PathLike | None = None, per_page: int = 20) -> Path:
    """Write the review page (default ``FOLDER/review.html``); a file of that name that this tool
    did not write is never overwritten."""
    path = Path(out) if out else Path(folder) / PAGE_NAME
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise SettingError(f"{path} is a link or not a regular file; lomo-datasets never writes through it: give another --html path")
    if path.exists() and GENERATOR not in path.read_text(encoding="utf-8", errors="replace")[:4000]:
        raise SettingError(f"{path} exists and was not written by lomo-datasets; give another --html path")
    text, _ = build_page(folder, path.parent, per_page)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Serving on 127.0.0.1
# --------------------------------------------------------------------------------------------

_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})", re.ASCII)
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_VIDEO_SUFFIXES = {".mp4", ".m4v", ".webm", ".mkv", ".mov", ".ogv", ".avi", ".flv", ".ts", ".mpg", ".mpeg", ".wmv", ".3gp"}
_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
          ".mov": "video/quicktime", ".ogv": "video/ogg"}


class ReviewServer:
    """The page at ``/`` and its videos at ``/media/<n>`` on 127.0.0.1 (nothing else)."""

    def __init__(self, folder: str | os.PathLike, port: int = 0, per_page: int = 20, host: str = "127.0.0.1",
                 video_roots: list[str | os.PathLike] | None = None):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SettingError(f"--host {host!r}: the review server listens on 127.0.0.1 only")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise SettingError(f"--port {port}: use a port from 1 to 65535 (or 0 for a free one)")
        for root in video_roots or []:
            if not Path(root).is_dir():
                raise SettingError(f"--video-root {root}: no such folder; give the folder that holds the dataset's videos")
        page, media = build_page(folder, per_page=per_page, media_prefix="media/", video_roots=video_roots)
        body = page.encode("utf-8")
        self.media = media
        self.refused = getattr(media, "refused", 0)
        roots = [Path(folder), *(Path(r) for r in video_roots or [])]

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):
                logger.info("review: " + fmt, *args)

            def do_GET(self):  # noqa: N802 (http.server's name)
                host = (self.headers.get("Host") or "").strip().lower()
                name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
                if name not in _LOOPBACK_HOSTS:  # another name pointing here (DNS rebinding)
                    self._send(403, "text/plain", b"forbidden: only http://127.0.0.1 or http://localhost")
                    return
                path = urllib.parse.urlparse(self.path).path
                if path in ("/", "/index.html", f"/{PAGE_NAME}"):
                    self._send(200, "text/html; charset=utf-8", body)
                    return
                match = re.fullmatch(r"/media/([0-9]+)", path)
                if match and len(match.group(1)) < 10 and int(match.group(1)) < len(media):
                    real = servable(media[int(match.group(1))], roots)  # checked again: a file may have changed
                    if real is not None:
                        self._file(real)
                        return
                self._send(404, "text/plain", b"not found")

            def _send(self, status, ctype, data, extra=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _file(self, path: Path):
                size = path.stat().st_size
                ctype = _TYPES.get(path.suffix.lower(), "application/octet-stream")
                start, end = 0, size - 1
                asked = self.headers.get("Range")
                match = _RANGE.fullmatch(asked.strip()) if asked is not None else None
                status = 200
                if asked is not None and (match is None or not (match.group(1) or match.group(2))):
                    # several ranges, another unit, a number of any length: one answer, 416
                    self._send(416, "text/plain", b"", {"Content-Range": f"bytes */{size}"})
                    return
                if match:
                    if match.group(1):
                        start = int(match.group(1))
                        end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
                    else:
                        start = max(0, size - int(match.group(2)))
                    if start > end or start >= size:
                        self._send(416, "text/plain", b"", {"Content-Range": f"bytes */{size}"})
                        return
                    status = 206
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if self.command == "HEAD":
                    return
                with open(path, "rb") as fh:
                    fh.seek(start)
                    left = end - start + 1
                    while left > 0:
                        chunk = fh.read(min(left, 1 << 20))
                        if not chunk:
                            break
                        try:
                            self.wfile.write(chunk)
                        except (BrokenPipeError, ConnectionResetError):  # the player moved on
                            return
                        left -= len(chunk)

            do_HEAD = do_GET

        self.httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}/"
        self._thread: threading.Thread | None = None

    def start(self) -> "ReviewServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
        self.httpd.server_close()

    def __enter__(self) -> "ReviewServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
