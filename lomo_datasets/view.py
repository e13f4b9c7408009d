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

import html
import http.server
import json
import logging
import os
import re
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from lomo_datasets import audit as A
from lomo_datasets.stage import SettingError

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
    """``lomo`` or ``livecc`` from the columns of the folder's data."""
    import pyarrow.parquet as pq

    files = sorted((Path(folder) / "data").glob("*.parquet"))
    if not files:
        raise SettingError(f"{folder}: no data/*.parquet here; give a folder written by `lomo-datasets run`")
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

_CSS = """
:root { --fg:#1d232b; --muted:#667085; --line:#d8dde4; --ok:#157f3b; --bad:#b42318; --warn:#a15c07; --accent:#2357c6; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); margin: 0; background: #f4f6f8; }
header { background: #fff; padding: 12px 20px 4px; }
header h1 { font-size: 18px; margin: 0 0 4px; }
header .summary { color: var(--muted); }
nav.controls { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; background: #fff; padding: 8px 20px;
  border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 2; }
.controls button { padding: 3px 10px; border: 1px solid var(--line); background: #fff; border-radius: 4px; cursor: pointer; }
.controls button:disabled { opacity: .4; cursor: default; }
.controls input[type=search] { padding: 3px 8px; border: 1px solid var(--line); border-radius: 4px; width: 220px; }
main { padding: 16px 20px; display: grid; gap: 16px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px; display: grid; grid-template-columns: minmax(280px, 420px) 1fr; gap: 16px; }
.card > div:first-child { position: sticky; top: 52px; align-self: start; }
.card h2 { font-size: 15px; margin: 0 0 6px; word-break: break-all; }
.card .meta { color: var(--muted); font-size: 12px; margin-bottom: 6px; }
video { width: 100%; background: #000; border-radius: 4px; aspect-ratio: 16 / 9; }
.nomedia { padding: 30px; text-align: center; color: var(--muted); border: 1px dashed var(--line); border-radius: 4px; }
.q { border-top: 1px solid var(--line); padding: 8px 0; }
.q:first-child { border-top: 0; padding-top: 0; }
.task { display: inline-block; font-size: 11px; font-weight: 600; background: #e8eefc; color: var(--accent); border-radius: 3px; padding: 1px 6px; margin-right: 6px; }
.qtext { font-weight: 500; }
ol.options { list-style: none; margin: 4px 0; padding: 0; }
ol.options li { padding: 1px 6px; border-radius: 3px; }
ol.options li.correct { background: #e6f4ea; color: var(--ok); font-weight: 600; }
ol.options li.correct::after { content: "  \\2714 correct"; font-size: 11px; }
ol.options li.blind::before { content: "blind pick \\2192\\00A0"; font-size: 11px; color: var(--warn); }
.window { border: 1px solid var(--accent); color: var(--accent); background: #fff; border-radius: 12px; padding: 0 8px; cursor: pointer; font-size: 12px; }
.window:hover { background: #e8eefc; }
.flag { display: inline-block; font-size: 11px; background: #fdecea; color: var(--bad); border-radius: 3px; padding: 1px 6px; margin: 2px 4px 0 0; }
.desc { color: var(--muted); font-size: 12px; }
.query { font-weight: 600; margin-bottom: 6px; }
.previous { color: var(--muted); font-size: 12px; margin-bottom: 6px; max-height: 4.5em; overflow: hidden; }
.stream { line-height: 1.9; }
.w { padding: 1px 2px; border-radius: 3px; cursor: pointer; }
.w.past { color: var(--fg); }
.w.future { color: #98a2b3; }
.w.now { background: #ffe58a; color: #000; }
#errors { color: var(--bad); white-space: pre-wrap; }
.audit { font-size: 12px; border-collapse: collapse; margin-top: 8px; }
.audit td, .audit th { border: 1px solid var(--line); padding: 2px 6px; text-align: left; }
@media (max-width: 760px) { .card { grid-template-columns: 1fr; } }
"""

_JS = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const PER_PAGE = DATA.per_page;
const errors = [];
window.addEventListener("error", (e) => {
  errors.push(String(e.message || e));
  document.body.dataset.errors = String(errors.length);
  document.getElementById("errors").textContent = errors.join("\n");
});
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
function secs(x) { return (Math.round(x * 100) / 100).toString(); }
function player(rec, start) {
  if (!rec.src) return el("div", {class: "nomedia"}, "video file not found");
  // A media fragment opens the player at the clip's start and makes it paint that frame.
  const src = rec.src.includes("#") ? rec.src : rec.src + "#t=" + (start || 0.001);
  return el("video", {controls: "", preload: "metadata", src: src});
}
function playWindow(video, start, end) {
  if (!video || video.tagName !== "VIDEO") return;
  video.dataset.stopAt = end === null || end === undefined ? "" : String(end);
  video.currentTime = start;
  const p = video.play();
  if (p && p.catch) p.catch(() => {});
}
function stopAtEnd(video) {
  video.addEventListener("timeupdate", () => {
    const stop = parseFloat(video.dataset.stopAt);
    if (!isNaN(stop) && video.currentTime >= stop) { video.pause(); video.dataset.stopAt = ""; }
  });
}
function lomoCard(rec) {
  const video = player(rec);
  if (video.tagName === "VIDEO") stopAtEnd(video);
  const qs = el("div", {class: "questions"});
  for (const q of rec.questions) {
    const head = el("div", {}, el("span", {class: "task"}, q.task), el("span", {class: "qtext"}, q.question));
    const box = el("div", {class: "q", "data-qid": q.id}, head);
    if (q.window && q.window.length === 2) {
      box.append(" ", el("button", {class: "window", title: "play this window", "data-start": q.window[0], "data-end": q.window[1],
        onclick: () => playWindow(video, q.window[0], q.window[1])}, "\u25B6 " + secs(q.window[0]) + "\u2013" + secs(q.window[1]) + " s"));
    }
    if (q.options.length) {
      const list = el("ol", {class: "options"});
      for (const [letter, text] of q.options) {
        const cls = [letter === q.answer ? "correct" : "", letter === q.blind ? "blind" : ""].join(" ").trim();
        list.append(el("li", {class: cls, "data-letter": letter}, letter + ": " + text));
      }
      box.append(list);
    } else if (q.answer) {
      box.append(el("div", {class: "desc"}, "answer: " + q.answer));
    }
    if (q.descriptions) box.append(el("div", {class: "desc"}, "description: " + q.descriptions));
    for (const f of q.flags) box.append(el("span", {class: "flag", title: f.detail || ""}, f.reason));
    qs.append(box);
  }
  const meta = [rec.duration ? secs(rec.duration) + " s" : null, rec.questions.length + " questions",
    rec.questions.filter((q) => q.flags.length).length + " flagged"].filter(Boolean).join(" \u00B7 ");
  return el("section", {class: "card", "data-video": rec.id},
    el("div", {}, video), el("div", {}, el("h2", {}, rec.title || rec.id), el("div", {class: "meta"}, rec.id + " \u00B7 " + meta), qs));
}
function liveccCard(rec) {
  const video = player(rec, rec.start);
  const stream = el("div", {class: "stream"});
  const spans = rec.words.map(([s, e, w]) => {
    const span = el("span", {class: "w future", "data-start": s, "data-end": e, title: secs(s) + " s",
      onclick: () => playWindow(video, s, rec.end)}, w);
    stream.append(span, " ");
    return span;
  });
  if (video.tagName === "VIDEO") {
    stopAtEnd(video);
    video.addEventListener("loadedmetadata", () => { if (video.currentTime < rec.start) video.currentTime = rec.start; video.dataset.stopAt = rec.end ?? ""; }, {once: true});
    video.addEventListener("timeupdate", () => {
      const t = video.currentTime;
      for (const span of spans) {
        const s = parseFloat(span.dataset.start), e = parseFloat(span.dataset.end);
        span.className = "w " + (t >= s && t < e ? "now" : t >= e ? "past" : "future");
      }
    });
  }
  const win = el("button", {class: "window", onclick: () => playWindow(video, rec.start, rec.end)},
    "\u25B6 " + secs(rec.start) + "\u2013" + (rec.end === null ? "end" : secs(rec.end)) + " s");
  return el("section", {class: "card", "data-video": rec.id},
    el("div", {}, video),
    el("div", {}, el("h2", {}, rec.title || rec.id), el("div", {class: "meta"}, rec.id + " \u00B7 ", win, " \u00B7 " + rec.words.length + " words"),
      el("div", {class: "query"}, rec.query ? "Query: " + rec.query : "(no query)"),
      rec.previous ? el("div", {class: "previous", title: rec.previous}, "Before: " + rec.previous) : null, stream));
}
function matches(rec, text, flaggedOnly) {
  if (flaggedOnly && !(rec.questions || []).some((q) => q.flags.length)) return false;
  if (!text) return true;
  const hay = (rec.id + " " + rec.title + " " + (rec.query || "") + " " + (rec.questions || []).map((q) => q.question).join(" ")).toLowerCase();
  return hay.includes(text.toLowerCase());
}
const state = {page: 1, text: "", flagged: false};
function readHash() {
  const m = /page=(\d+)/.exec(location.hash);
  state.page = m ? Math.max(1, parseInt(m[1], 10)) : 1;
}
function render() {
  const shown = DATA.records.filter((r) => matches(r, state.text, state.flagged));
  const pages = Math.max(1, Math.ceil(shown.length / PER_PAGE));
  state.page = Math.min(state.page, pages);
  const slice = shown.slice((state.page - 1) * PER_PAGE, state.page * PER_PAGE);
  const main = document.getElementById("cards");
  for (const v of main.querySelectorAll("video")) { v.pause(); v.removeAttribute("src"); v.load(); }
  main.replaceChildren(...slice.map(DATA.kind === "lomo" ? lomoCard : liveccCard));
  document.getElementById("pageinfo").textContent = "page " + state.page + " of " + pages + " (" + shown.length + " " + DATA.unit + ")";
  for (const b of document.querySelectorAll(".prev")) b.disabled = state.page <= 1;
  for (const b of document.querySelectorAll(".next")) b.disabled = state.page >= pages;
  document.body.dataset.page = String(state.page);
  document.body.dataset.shownVideos = String(slice.length);
  document.body.dataset.shownQuestions = String(slice.reduce((n, r) => n + (r.questions ? r.questions.length : 0), 0));
  document.body.dataset.ready = "1";
}
function go(delta) { state.page += delta; location.hash = "page=" + state.page; }
document.querySelector(".prev").addEventListener("click", () => go(-1));
document.querySelector(".next").addEventListener("click", () => go(1));
document.getElementById("search").addEventListener("input", (e) => { state.text = e.target.value; state.page = 1; render(); });
const flagged = document.getElementById("flagged");
if (flagged) flagged.addEventListener("change", (e) => { state.flagged = e.target.checked; state.page = 1; render(); });
window.addEventListener("hashchange", () => { readHash(); render(); });
readHash();
render();
"""


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


def page_html(kind: str, records: list[dict], title: str, per_page: int = 20, report: dict[str, Any] | None = None) -> str:
    """The whole page as one string (data inline as JSON)."""
    if kind not in ("lomo", "livecc"):
        raise ValueError(f"kind {kind!r}: use lomo or livecc")
    data = {"kind": kind, "per_page": per_page, "unit": "videos" if kind == "lomo" else "clips", "records": records}
    # "</" inside the JSON would end the script element early
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    flagged = '<label><input type="checkbox" id="flagged"> only flagged</label>' if kind == "lomo" else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{GENERATOR}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
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
<script>{_JS}</script>
</body>
</html>
"""


def build_page(
    folder: str | os.PathLike, page_dir: str | os.PathLike | None = None, per_page: int = 20,
    media_prefix: str | None = None,
) -> tuple[str, list[Path | None]]:
    """``(html, media files)`` for a dataset folder. With ``media_prefix`` the players' sources
    are ``<prefix><n>`` (the n-th media file; used by ``serve``)."""
    if not isinstance(per_page, int) or per_page < 1:
        raise SettingError(f"--per-page {per_page!r}: use an integer >= 1")
    folder = Path(folder)
    page_dir = Path(page_dir or folder).resolve()
    kind = folder_kind(folder)
    report = A.read_report(folder) if kind == "lomo" else None
    rows = A.read_rows(folder, _LOMO_COLUMNS if kind == "lomo" else _LIVECC_COLUMNS)
    records = lomo_records(rows, folder, page_dir, report) if kind == "lomo" else livecc_records(rows, folder, page_dir)
    media: list[Path | None] = []
    if media_prefix is not None:
        index: dict[Path, int] = {}
        for rec, row in zip(records, rows):
            path = _media_path(row.get("video"), folder)
            if path is None:
                continue
            if path not in index:
                index[path] = len(media)
                media.append(path)
            rec["src"] = f"{media_prefix}{index[path]}"
    title = f"{folder.resolve().name}: {'LoMo QA' if kind == 'lomo' else 'LiveCC clips'} review"
    return page_html(kind, records, title, per_page, report), media


def write_page(folder: str | os.PathLike, out: str | os.PathLike | None = None, per_page: int = 20) -> Path:
    """Write the review page (default ``FOLDER/review.html``); a file of that name that this tool
    did not write is never overwritten."""
    path = Path(out) if out else Path(folder) / PAGE_NAME
    if path.exists() and GENERATOR not in path.read_text(encoding="utf-8", errors="replace")[:4000]:
        raise SettingError(f"{path} exists and was not written by lomo-datasets; give another --html path")
    text, _ = build_page(folder, path.parent, per_page)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Serving on 127.0.0.1
# --------------------------------------------------------------------------------------------

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
          ".mov": "video/quicktime", ".ogv": "video/ogg"}


class ReviewServer:
    """The page at ``/`` and its videos at ``/media/<n>`` on 127.0.0.1 (nothing else)."""

    def __init__(self, folder: str | os.PathLike, port: int = 0, per_page: int = 20, host: str = "127.0.0.1"):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SettingError(f"--host {host!r}: the review server listens on 127.0.0.1 only")
        page, media = build_page(folder, per_page=per_page, media_prefix="media/")
        body = page.encode("utf-8")
        self.media = media

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):
                logger.info("review: " + fmt, *args)

            def do_GET(self):  # noqa: N802 (http.server's name)
                path = urllib.parse.urlparse(self.path).path
                if path in ("/", "/index.html", f"/{PAGE_NAME}"):
                    self._send(200, "text/html; charset=utf-8", body)
                    return
                match = re.fullmatch(r"/media/(\d+)", path)
                if match and int(match.group(1)) < len(media) and media[int(match.group(1))] is not None:
                    self._file(media[int(match.group(1))])
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
                match = _RANGE.match(self.headers.get("Range", "").strip())
                status = 200
                if match and (match.group(1) or match.group(2)):
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
