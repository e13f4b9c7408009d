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
