"""The review page in a real headless Chromium (Debian's, installed by ``.ci/install``).

Folders are written the way ``run`` publishes them (``data/*.parquet``), with test media made by
``tests/media.py`` and hand-made questions; the page is written by the CLI and opened from
``file://`` (offline) or from ``lomo-datasets view --serve`` on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from datasets import Dataset, Value

from lomo_datasets.core import features as F
from tests import browser as B
from tests.test_audit import lexical_reader
from tests.test_llm import ChatServer

#: Screenshots are kept here for a person to look at (default: the pytest tmp dir).
SHOTS = os.environ.get("LOMO_TEST_SCREENSHOTS")


def questions(vid: str, duration: float) -> list[dict]:
    """Six items per video, like the lomo recipe's, with a window in the video."""
    start, end = round(duration * 0.25, 2), round(duration * 0.6, 2)
    s, e = f"{start:g}", f"{end:g}"
    spec = [
        ("GVQA", "What does the speaker test, a speech recognition clip?", ["a car engine", "speech recognition", "a new recipe", "the weather"], "B", []),
        ("GVS", "What is the main topic of this video?", ["a test of speech recognition on a short clip", "cooking", "sport", "travel"], "A", []),
        ("SVS", f"What happens between {s} and {e} seconds in the video?", ["he sings", "he waves", "the fox jumps over the dog", "it rains"], "C", [start, end]),
        ("SVQA", f"From {s} seconds to {e} seconds in the video, what jumps?", ["a cat", "a frog", "a horse", "the fox"], "D", [start, end]),
        ("VVQA", "What jumps over the lazy dog?", ["a frog", "the fox", "a horse", "a cat"], "B", [start, end]),
        ("VTG", "When does the following happen in the video: the fox jumps",
         [f"from {s} to {e} seconds", "from 0 to 1 seconds", "from 9 to 9.5 seconds", "from 7 to 8 seconds"], "A", [start, end]),
    ]
    return [
        {"question_id": f"{vid}_{k + 1:02d}", "task": task, "question": q,
         "options": [f"{letter}: {text}" for letter, text in zip("ABCD", opts)],
         "answer": answer, "window": window, "descriptions": "the fox jumps" if task == "VTG" else ""}
        for k, (task, q, opts, answer, window) in enumerate(spec)
    ]


def write_data(folder: Path, rows: list[dict], features: dict) -> Path:
    (folder / "data").mkdir(parents=True)
    Dataset.from_list(rows, features=F.merge(features)).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


LOMO_FEATURES = {"video_id": Value("string"), "video": Value("string"), "title": Value("string"),
                 "duration": Value("float64"), "questions": F.QUESTIONS}


def lomo_folder(folder: Path, media, n: int) -> Path:
    files = [(media.english, 8.689), (media.english2, 6.209), (media.no_audio, 3.0)]
    rows = []
    for i in range(n):
        path, duration = files[i % len(files)]
        vid = f"video{i:03d}"
        rows.append({"video_id": vid, "video": str(path), "title": f"Test video {i}", "duration": duration,
                     "questions": questions(vid, duration)})
    return write_data(folder, rows, LOMO_FEATURES)


def cli(*args, check=True):
    res = subprocess.run([sys.executable, "-m", "lomo_datasets.cli", *args], capture_output=True, text=True, timeout=600)
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def keep_shot(path: Path) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SHOTS) / path.name)


# --------------------------------------------------------------------------------------------
# LoMo folder
# --------------------------------------------------------------------------------------------


def test_lomo_page_shows_videos_questions_answers_and_flags(tmp_path, test_media):
    folder = lomo_folder(tmp_path / "bench", test_media, 3)
    with ChatServer(lexical_reader) as server:
        cli("audit", str(folder), "--llm", "backend=openai", "--llm", f"base_url={server.url}", "--llm", "model=reader")
    out = cli("view", str(folder)).stdout
    page = folder / "review.html"
    assert str(page) in out
    text = page.read_text()
    # self-contained: no external script, style, font or image
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(?!data:)", text) and "://" not in text.split('<script id="data"')[0]

    dom, log = B.dump_dom(page.as_uri())
    assert 'data-ready="1"' in dom and "data-errors" not in dom
    assert B.console_errors(log) == []
    assert dom.count('<section class="card"') == 3 and dom.count("<video") == 3
    assert len(re.findall(r'class="q" data-qid="video\d{3}_0[1-6]"', dom)) == 18
    assert 'data-shown-videos="3"' in dom and 'data-shown-questions="18"' in dom
    assert "3 videos · 18 questions" in dom

    shot = B.screenshot(page.as_uri(), tmp_path / "lomo-review.png")
    keep_shot(shot)
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1600)
    assert len(set(image.resize((64, 80)).getdata())) > 50  # not a blank page

    with B.Browser() as browser:
        tab = browser.open(page.as_uri())
        tab.wait_for("document.body.dataset.ready === '1'")
        marks = tab.eval("""[...document.querySelectorAll('.q')].map(q => [q.dataset.qid,
            [...q.querySelectorAll('li.correct')].map(li => li.dataset.letter).join(''),
            [...q.querySelectorAll('li.blind')].map(li => li.dataset.letter).join(''),
            [...q.querySelectorAll('.flag')].map(f => f.textContent).join(',')])""")
        assert tab.errors() == []
    audit = json.loads((folder / "audit.json").read_text())
    flags: dict[str, list[str]] = {}
    for flag in audit["flags"]:
        flags.setdefault(flag["question_id"], []).append(flag["reason"])
    answers = {q["question_id"]: q["answer"] for q in questions("video000", 1)}
    for qid, correct, blind, shown in marks:
        assert correct == answers["video000" + qid[8:]]  # one correct option, the right letter
        assert blind == audit["blind_answers"][qid]  # the blind answerer's pick
        assert (shown.split(",") if shown else []) == flags.get(qid, [])
    # the leaky GVQA item (its answer is in the question) was answered blind and is flagged
    assert "blind_answerable" in flags["video000_01"] and "video000_01" in [m[0] for m in marks if "blind_answerable" in m[3]]


def test_click_on_a_window_plays_it(tmp_path, test_media):
    folder = lomo_folder(tmp_path / "bench", test_media, 1)
    cli("view", str(folder))
    with B.Browser() as browser:
        tab = browser.open((folder / "review.html").as_uri())
        tab.wait_for("document.querySelector('video').readyState >= 1")
        start, end = tab.eval("(() => { const b = document.querySelector('[data-qid=video000_03] .window'); return [+b.dataset.start, +b.dataset.end]; })()")
        tab.click("[data-qid=video000_03] .window")
        tab.wait_for("(() => { const v = document.querySelector('video'); return !v.seeking && !v.paused; })()")
        assert abs(tab.eval("document.querySelector('video').currentTime") - start) < 0.5
        # it stops at the window's end
        tab.wait_for("document.querySelector('video').paused", timeout=20)
        assert end - 0.05 <= tab.eval("document.querySelector('video').currentTime") <= end + 0.6
        assert tab.errors() == []


def test_hundreds_of_videos_are_paged(tmp_path, test_media):
    folder = lomo_folder(tmp_path / "bench", test_media, 205)
    cli("view", str(folder), "--per-page", "50")
    page = (folder / "review.html").as_uri()
    dom, log = B.dump_dom(page)
    assert 'data-videos="205"' in dom and dom.count('<section class="card"') == 50 and dom.count("<video") == 50
    assert "page 1 of 5 (205 videos)" in dom and B.console_errors(log) == []
    dom, _ = B.dump_dom(page + "#page=5")
    assert dom.count('<section class="card"') == 5 and 'data-video="video204"' in dom
    with B.Browser() as browser:
        tab = browser.open(page)
        tab.wait_for("document.body.dataset.ready === '1'")
        tab.click("nav .next")
        tab.wait_for("document.body.dataset.page === '2'")
        assert tab.eval("location.hash") == "#page=2"
        assert tab.eval("document.querySelector('section.card').dataset.video") == "video050"
        tab.eval("(() => { const s = document.getElementById('search'); s.value = 'video117'; s.dispatchEvent(new Event('input')); })()")
        assert tab.eval("[...document.querySelectorAll('section.card')].map(c => c.dataset.video)") == ["video117"]
        assert tab.errors() == []


def test_page_without_audit_json_shows_the_checks_that_need_no_llm(tmp_path, test_media):
    rows = [{"video_id": "v1", "video": str(test_media.english), "title": "t", "duration": 8.689,
             "questions": [{"question_id": "v1_01", "task": "SVS", "question": "What happens between 2 and 30 seconds?",
                            "options": ["A: x", "B: y", "C: z", "D: w"], "answer": "A", "window": [2.0, 30.0], "descriptions": ""}]}]
    folder = write_data(tmp_path / "bench", rows, LOMO_FEATURES)
    cli("view", str(folder))
    dom, _ = B.dump_dom((folder / "review.html").as_uri())
    assert '<span class="flag" title="[2, 30] vs duration 8.689 s">window_outside_video</span>' in dom


def test_view_never_overwrites_a_file_it_did_not_write(tmp_path, test_media):
    folder = lomo_folder(tmp_path / "bench", test_media, 1)
    (folder / "review.html").write_text("<p>my page</p>")
    res = cli("view", str(folder), check=False)
    assert res.returncode == 2 and "review.html exists and was not written by lomo-datasets" in res.stderr
    assert (folder / "review.html").read_text() == "<p>my page</p>"
    cli("view", str(folder), "--html", str(tmp_path / "pages" / "bench.html"))
    assert 'name="generator" content="lomo-datasets view"' in (tmp_path / "pages" / "bench.html").read_text()
    cli("view", str(folder), "--html", str(tmp_path / "pages" / "bench.html"))  # its own page: rewritten
    res = cli("view", str(tmp_path / "nothing"), check=False)
    assert res.returncode == 2 and "no data/*.parquet" in res.stderr and "Traceback" not in res.stderr


# --------------------------------------------------------------------------------------------
# LiveCC folder
# --------------------------------------------------------------------------------------------


def livecc_folder(folder: Path, media) -> Path:
    words = "The quick brown fox jumps over the lazy dog".split()
    content = [{"start": 1.0 + 0.5 * k, "end": 1.4 + 0.5 * k, "word": w} for k, w in enumerate(words)]
    rows = [
        {"video_id": "english", "clip_id": "english_000", "video": str(media.english), "title": "Fox test",
         "video_start": 1.0, "video_end": content[-1]["end"], "content": content, "query": "What is happening?",
         "previous": ""},
        {"video_id": "english2", "clip_id": "english2_000", "video": str(media.english2), "title": "Pasta",
         "video_start": 2.0, "video_end": 5.0, "content": [{"start": 2.0, "end": 2.5, "word": "Please"}],
         "query": "Narrate the cooking.", "previous": "Before this clip."},
    ]
    feats = {"video_id": Value("string"), "clip_id": Value("string"), "video": Value("string"), "title": Value("string"),
             "video_start": Value("float64"), "video_end": Value("float64"), "content": F.CONTENT,
             "query": Value("string"), "previous": Value("string")}
    return write_data(folder, rows, feats)


def test_livecc_clip_plays_from_video_start_with_words_highlighted(tmp_path, test_media):
    folder = livecc_folder(tmp_path / "clips", test_media)
    cli("view", str(folder))
    page = (folder / "review.html").as_uri()
    dom, log = B.dump_dom(page)
    assert dom.count('<section class="card"') == 2 and "Query: What is happening?" in dom and B.console_errors(log) == []
    assert len(re.findall(r'<span class="w (?:future|now|past)" data-start="[\d.]+" data-end="[\d.]+"', dom)) == 10
    keep_shot(B.screenshot(page, tmp_path / "livecc-review.png", size="1280,900"))
    with B.Browser() as browser:
        tab = browser.open(page)
        tab.wait_for("document.querySelector('video').readyState >= 1")
        tab.wait_for("!document.querySelector('video').seeking")
        assert abs(tab.eval("document.querySelector('video').currentTime") - 1.0) < 0.05  # video_start
        # record, at every time update, which words are highlighted
        tab.eval("""(() => { const v = document.querySelector('video'); window.seen = [];
            v.addEventListener('timeupdate', () => window.seen.push([v.currentTime,
              [...document.querySelectorAll('section.card:first-child .w')].map(w => w.className.slice(2))])); })()""")
        tab.click("section.card .w:nth-of-type(5)")  # "jumps", 3.0-3.4 s: seek there and play
        tab.wait_for("document.querySelector('video').paused && window.seen.length > 3", timeout=20)
        assert abs(tab.eval("document.querySelector('video').currentTime") - 5.4) < 0.6  # stopped at video_end
        seen = tab.eval("window.seen")
        assert seen[0][0] == pytest.approx(3.0, abs=0.05) and seen[0][1][4] == "now"
        for t, classes in seen:
            for k, cls in enumerate(classes):
                start, end = 1.0 + 0.5 * k, 1.4 + 0.5 * k
                assert cls == ("now" if start <= t < end else "past" if t >= end else "future"), (t, k, cls)
        assert tab.errors() == []


# --------------------------------------------------------------------------------------------
# Served on 127.0.0.1
# --------------------------------------------------------------------------------------------


def test_serve_on_loopback_with_range_requests(tmp_path, test_media):
    folder = lomo_folder(tmp_path / "bench", test_media, 2)
    # the test videos live outside the folder: --video-root names their folder (issue 22)
    proc = subprocess.Popen([sys.executable, "-m", "lomo_datasets.cli", "view", str(folder), "--serve",
                             "--video-root", str(test_media.folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert 'content="lomo-datasets view"' in resp.read().decode()
        request = urllib.request.Request(url + "media/0", headers={"Range": "bytes=0-99"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            size = test_media.english.stat().st_size
            assert resp.status == 206 and resp.headers["Content-Range"] == f"bytes 0-99/{size}"
            assert resp.read() == test_media.english.read_bytes()[:100]
        for path in ("media/9", "etc/passwd", "../" + test_media.english.name):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(url + path, timeout=10)
            assert err.value.code == 404
        with B.Browser() as browser:
            tab = browser.open(url)
            tab.wait_for("document.querySelector('video').readyState >= 1")
            assert abs(tab.eval("document.querySelector('video').duration") - 8.69) < 0.1
            tab.click("[data-qid=video000_04] .window")
            tab.wait_for("(() => { const v = document.querySelector('video'); return !v.seeking && v.currentTime > 2; })()")
            assert tab.errors() == []
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0
