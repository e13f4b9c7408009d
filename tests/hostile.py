"""Hostile-but-realistic cases for the real ``lomo-datasets`` command (issue 22).

Each case is a function ``case(tmp, media) -> Result``: it sets up a temporary folder that also
holds a *canary* tree (files no command may touch), runs the CLI in a subprocess and reports the
exit status, what the command said (its ``lomo-datasets:`` line, else its last line) and whether a
canary file changed. ``tests/test_hostile.py`` asserts on them; ``benchmarks/bench_hostile.py``
prints them as a table.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    status: int | None  #: exit status (None: still running at the case's timeout)
    said: str  #: the ``lomo-datasets:`` line (else the last line of stderr/stdout)
    outside_changed: bool | None  #: a canary file changed, appeared or went away
    stderr: str = ""
    stdout: str = ""
    facts: dict[str, Any] = field(default_factory=dict)  #: what the case measured


def media():
    from tests import media as M

    root = Path(os.environ.get("LOMO_TEST_MEDIA") or Path(tempfile.gettempdir()) / "lomo-test-media")
    return M.make_all(root)


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    e.setdefault("LOMO_DATASETS_CACHE", str(Path(tempfile.gettempdir()) / "lomo-datasets-cache"))
    e.update(no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost", HF_HUB_OFFLINE="1")
    e.update(extra)
    return e


def cli(*args, timeout: float = 300, cwd=None, preexec: Callable | None = None, **extra_env: str) -> subprocess.CompletedProcess:
    args = [str(a) for a in args]
    if "-q" in args:  # a global option: before the command
        args = ["-q"] + [a for a in args if a != "-q"]
    try:
        return subprocess.run(
            [sys.executable, "-m", "lomo_datasets.cli", *args], capture_output=True, text=True,
            timeout=timeout, env=env(**extra_env), cwd=cwd, preexec_fn=preexec,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return subprocess.CompletedProcess(exc.cmd, None, out, err + f"\n(still running after {timeout:.0f} s: killed)")


def said(res: subprocess.CompletedProcess) -> str:
    err = res.stderr or ""
    lines = [line for line in err.splitlines() if line.startswith("lomo-datasets: ")]
    text = lines[-1] if lines else next((l for l in reversed(err.splitlines()) if l.strip()), "") or next(
        (l for l in reversed((res.stdout or "").splitlines()) if l.strip()), "")
    return ("TRACEBACK; " if "Traceback" in err else "") + text


# --------------------------------------------------------------------------------------------
# The canary tree: files beside the output that no command may touch
# --------------------------------------------------------------------------------------------


def canary(tmp: Path) -> Path:
    folder = tmp / "canary"
    (folder / "sub").mkdir(parents=True)
    (folder / "victim.txt").write_text("the user's file\n")
    (folder / "other.txt").write_text("another file of the user\n")
    (folder / "sub" / "deep.bin").write_bytes(os.urandom(1000))
    return folder


def tree_hash(folder: Path) -> dict[str, str]:
    result = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            result[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            result[rel] = "dir"
    return result


class Watch:
    """``with Watch(tmp) as w: ...``; ``w.changed`` afterwards."""

    def __init__(self, tmp: Path):
        self.folder = canary(tmp) if not (tmp / "canary").exists() else tmp / "canary"
        self.before = tree_hash(self.folder)
        self.changed: bool | None = None

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.changed = tree_hash(self.folder) != self.before


def result(res: subprocess.CompletedProcess, watch: Watch, **facts) -> Result:
    return Result(res.returncode, said(res), watch.changed, res.stderr, res.stdout, facts)


def videos(tmp: Path, media, *names: str) -> Path:
    folder = tmp / "videos"
    folder.mkdir(exist_ok=True)
    for name in names or ("english",):
        shutil.copy(getattr(media, name), folder / f"{name}.mp4")
    return folder


def probe_run(tmp: Path, media, *extra: str) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp / "out"
    return out, cli("run", "probe", "--videos", videos(tmp, media, "english", "english2"), "--out", out, "-q", *extra)


def read_marker(out: Path) -> dict:
    return json.loads((out / ".lomo-datasets.json").read_text())


def rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    found = []
    for path in sorted((out / "data").glob("*.parquet")):
        found.extend(pq.read_table(path).to_pylist())
    return found


def jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# Security: the folder marker
# --------------------------------------------------------------------------------------------


def marker_escape(tmp: Path, media) -> Result:
    """A marker whose ``files`` names ``../canary/victim.txt`` and an absolute path."""
    out, first = probe_run(tmp, media)
    assert first.returncode == 0, first.stderr
    with Watch(tmp) as watch:
        marker = read_marker(out)
        marker["files"] = marker["files"] + ["../canary/victim.txt", str(watch.folder / "other.txt")]
        (out / ".lomo-datasets.json").write_text(json.dumps(marker))
        res = cli("run", "probe", "--videos", tmp / "videos", "--out", out, "-q", "--set", "probe.verify=false")
    return result(res, watch, data_kept=(out / "README.md").is_file())


def marker_symlink(tmp: Path, media) -> Result:
    """A published file (README.md) and the lock file replaced by links into the canary tree."""
    out, first = probe_run(tmp, media)
    assert first.returncode == 0, first.stderr
    with Watch(tmp) as watch:
        (out / "README.md").unlink()
        (out / "README.md").symlink_to(watch.folder / "victim.txt")
        (out / ".lomo-lock").symlink_to(watch.folder / "other.txt")
        res = cli("run", "probe", "--videos", tmp / "videos", "--out", out, "-q", "--set", "probe.verify=false")
    return result(res, watch, readme_is_link=(out / "README.md").is_symlink())


def marker_changed_file(tmp: Path, media) -> Result:
    """A published file the user edited afterwards (its size and hash differ from the record)."""
    out, first = probe_run(tmp, media)
    assert first.returncode == 0, first.stderr
    with Watch(tmp) as watch:
        (out / "README.md").write_text("my own notes, not the card\n")
        res = cli("run", "probe", "--videos", tmp / "videos", "--out", out, "-q", "--set", "probe.verify=false")
    return result(res, watch, readme=(out / "README.md").read_text()[:40])


# --------------------------------------------------------------------------------------------
# Security: view --serve and the page
# --------------------------------------------------------------------------------------------


def _livecc_folder(tmp: Path, media, video_rows: list[tuple[str, str]]) -> Path:
    from datasets import Dataset, Features, Value

    from lomo_datasets.core import features as F

    folder = tmp / "ds"
    (folder / "data").mkdir(parents=True)
    features = Features({"video_id": Value("string"), "clip_id": Value("string"), "video": Value("string"),
                         "title": Value("string"), "video_start": Value("float64"), "video_end": Value("float64"),
                         "content": F.CONTENT})
    data = [{"video_id": f"v{i}", "clip_id": f"v{i}_0000", "video": video, "title": title, "video_start": 0.0,
             "video_end": 2.0, "content": [{"start": 0.0, "end": 0.5, "word": "hello"}]}
            for i, (video, title) in enumerate(video_rows)]
    Dataset.from_list(data, features=features).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(folder: Path, *extra: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lomo_datasets.cli", "view", str(folder), "--serve", "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    return proc, f"http://127.0.0.1:{port}/"


def _get(url: str, headers: dict | None = None) -> tuple[int | str, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except Exception as exc:  # the server dropped the connection (a traceback on its side)
        return type(exc).__name__, b""


def _stop(proc) -> tuple[str, str]:
    import signal

    proc.send_signal(signal.SIGINT)  # Ctrl-C: the server stops cleanly (exit 0)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err


def serve_foreign_file(tmp: Path, media) -> Result:
    """A dataset row whose ``video`` names a file outside the dataset (a canary file, /etc/passwd)."""
    with Watch(tmp) as watch:
        secret = watch.folder / "victim.txt"
        folder = _livecc_folder(tmp, media, [(str(secret), "a"), ("/etc/passwd", "b"), (str(media.english), "c")])
        proc, url = _serve(folder)
        try:
            served = {}
            for n in range(3):
                status, body = _get(url + f"media/{n}")
                served[n] = status
                if status == 200 and (body == secret.read_bytes() or body.startswith(b"root:")):
                    served[n] = "LEAKED"
        finally:
            out, err = _stop(proc)
    leaked = [n for n, s in served.items() if s == "LEAKED"]
    text = f"/media/0..2 -> {served}" + (f"; LEAKED {leaked}" if leaked else "; nothing outside served")
    first = out.splitlines()[1:2]
    return Result(proc.returncode, text + (f"; it said: {first[0]}" if first else ""), watch.changed, err, out, {"served": served, "leaked": leaked})


def serve_video_root(tmp: Path, media) -> Result:
    """``--video-root`` serves videos under it (and only regular video files there)."""
    root = tmp / "videos"
    root.mkdir()
    shutil.copy(media.english, root / "english.mp4")
    (root / "link.mp4").symlink_to("/etc/passwd")
    (root / "notes.txt").write_text("not a video")
    with Watch(tmp) as watch:
        folder = _livecc_folder(tmp, media, [(str(root / "english.mp4"), "a"), (str(root / "link.mp4"), "b"),
                                             (str(root / "notes.txt"), "c")])
        proc, url = _serve(folder, "--video-root", str(root))
        try:
            served = {n: _get(url + f"media/{n}")[0] for n in range(3)}
        finally:
            out, err = _stop(proc)
    return Result(proc.returncode, f"/media/0..2 -> {served}", watch.changed, err, out, {"served": served})


def serve_host_and_range(tmp: Path, media) -> Result:
    """A request with a foreign Host (DNS rebinding) and Range headers of every shape."""
    with Watch(tmp) as watch:
        (tmp / "ds-videos").mkdir()
        shutil.copy(media.english, tmp / "ds-videos" / "english.mp4")
        folder = _livecc_folder(tmp, media, [("../ds-videos/english.mp4", "a")])
        shutil.move(str(tmp / "ds-videos"), str(folder / "videos"))
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(folder / "data" / "train-00000-of-00001.parquet")
        table = table.set_column(table.schema.get_field_index("video"), "video", pa.array(["videos/english.mp4"]))
        pq.write_table(table, folder / "data" / "train-00000-of-00001.parquet")
        proc, url = _serve(folder)
        try:
            statuses = {
                "Host evil.example": _get(url, {"Host": "evil.example"})[0],
                "Host localhost": _get(url, {"Host": f"localhost:{url.rsplit(':', 1)[1].strip('/')}"})[0],
                "Range 0-99": _get(url + "media/0", {"Range": "bytes=0-99"})[0],
                "Range 5000 digits": _get(url + "media/0", {"Range": "bytes=" + "9" * 5000 + "-"})[0],
                "Range 9-3": _get(url + "media/0", {"Range": "bytes=9-3"})[0],
                "Range two": _get(url + "media/0", {"Range": "bytes=0-1,5-9"})[0],
                "Range junk": _get(url + "media/0", {"Range": "pages=1-2"})[0],
            }
        finally:
            out, err = _stop(proc)
    text = ", ".join(f"{k}: {v}" for k, v in statuses.items())
    return Result(proc.returncode, ("TRACEBACK; " if "Traceback" in err else "") + text, watch.changed, err, out, {"statuses": statuses})


def page_script_break(tmp: Path, media) -> Result:
    """A title that would end or comment out the page's data script."""
    with Watch(tmp) as watch:
        folder = _livecc_folder(tmp, media, [(str(media.english), "<!--<script>"), (str(media.english), "</script><b>x\u2028y")])
        res = cli("view", folder)
        page = (folder / "review.html").read_text() if (folder / "review.html").is_file() else ""
    data = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    payload = data.group(1) if data else ""
    bad = [s for s in ("<!--", "<script", "</", "\u2028") if s in payload]
    decoded = json.loads(payload)["records"][0]["title"] if payload and not bad else None
    text = f"exit {res.returncode}; raw in the data script: {bad or 'none'}; title decodes to {decoded!r}"
    return Result(res.returncode, text, watch.changed, res.stderr, res.stdout, {"bad": bad, "title": decoded})


# --------------------------------------------------------------------------------------------
# Integrity
# --------------------------------------------------------------------------------------------


def _lomo_folder(tmp: Path) -> Path:
    """A LoMo folder written the way ``run`` publishes (marker, card, shards)."""
    from datasets import Dataset, Value

    from lomo_datasets.core import features as F
    from lomo_datasets.publish.layout import write_folder

    item = {"question_id": "v1_01", "task": "GVQA", "question": "What is it?",
            "options": ["A: a cat", "B: a dog", "C: a fox", "D: a cow"], "answer": "C", "window": [], "descriptions": ""}
    features = F.merge({"video_id": Value("string"), "video": Value("string"), "duration": Value("float64")},
                       {"questions": F.QUESTIONS})
    ds = Dataset.from_list([{"video_id": "v1", "video": "v1.mp4", "duration": 10.0, "questions": [item]}], features=features)
    return write_folder(ds, tmp / "bench", plot=False)


class _HeldLock:
    """Another process holding the folder's lock (as a run in progress does)."""

    def __init__(self, folder: Path):
        code = ("import fcntl,os,sys,time,json; fd=os.open(sys.argv[1],os.O_RDWR|os.O_CREAT,0o644); "
                "fcntl.flock(fd,fcntl.LOCK_EX); os.pwrite(fd,json.dumps({'pid':os.getpid(),'host':'x','started':0}).encode(),0); "
                "print('held',flush=True); time.sleep(600)")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(folder / ".lomo-lock")], stdout=subprocess.PIPE, text=True)
        self.proc.stdout.readline()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def audit_locked(tmp: Path, media) -> Result:
    folder = _lomo_folder(tmp)
    before = hashlib.sha256((folder / "audit.md").read_bytes()).hexdigest() if (folder / "audit.md").exists() else None
    with Watch(tmp) as watch, _HeldLock(folder):
        res = cli("audit", folder, "--no-blind")
    after = hashlib.sha256((folder / "audit.md").read_bytes()).hexdigest() if (folder / "audit.md").exists() else None
    return result(res, watch, audit_rewritten=before != after)


def publish_pending(tmp: Path, media) -> Result:
    folder = _lomo_folder(tmp)
    (folder / ".lomo-staging").mkdir()
    (folder / ".lomo-staging" / "commit.json").write_text(json.dumps({"files": ["README.md"], "old": []}))
    with Watch(tmp) as watch:
        res = cli("publish", folder, "--repo", "me/bench", "--attempts", "1", "--timeout", "3",
                  HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_x")
    return result(res, watch)


def publish_locked(tmp: Path, media) -> Result:
    folder = _lomo_folder(tmp)
    with Watch(tmp) as watch, _HeldLock(folder):
        res = cli("publish", folder, "--repo", "me/bench", "--attempts", "1", "--timeout", "3",
                  HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_x")
    return result(res, watch)


def replaced_video(tmp: Path, media) -> Result:
    """The same path, new bytes: the rerun must probe the new file."""
    folder = tmp / "videos"
    folder.mkdir()
    shutil.copy(media.english, folder / "clip.mp4")
    out = tmp / "out"
    first = cli("run", "probe", "--videos", folder, "--out", out, "-q")
    assert first.returncode == 0, first.stderr
    before = rows(out)[0]["duration"]
    with Watch(tmp) as watch:
        shutil.copy(media.english2, folder / "clip.tmp")
        os.replace(folder / "clip.tmp", folder / "clip.mp4")
        res = cli("run", "probe", "--videos", folder, "--out", out, "-q")
    from lomo_datasets.media.decode import probe

    after, truth = rows(out)[0]["duration"], probe(str(folder / "clip.mp4")).duration
    return Result(res.returncode, f"duration {before:.2f} s -> {after:.2f} s (the new file: {truth:.2f} s)", watch.changed,
                  res.stderr, res.stdout, {"after": after, "truth": truth})


def all_failed(tmp: Path, media) -> Result:
    manifest = tmp / "missing.txt"
    manifest.write_text("".join(f"/nonexistent/video{i}.mp4\n" for i in range(20)))
    with Watch(tmp) as watch:
        res = cli("run", "probe", "--videos", manifest, "--out", tmp / "out")
    summary = next((l for l in res.stdout.splitlines() if "SURVIVED" in l or l.startswith("yield")), "")
    return Result(res.returncode, said(res) + (f" / {summary}" if summary else ""), watch.changed, res.stderr, res.stdout)


def accounting(tmp: Path, media) -> Result:
    """livecc-pretrain over speech, a silent video (no speech) and a video with no audio
    (fails at asr): every input in exactly one of kept / failed / dropped; dropped rows carry
    the judged value and the band."""
    folder = videos(tmp, media, "english", "english2", "silent", "no_audio")
    out = tmp / "out"
    with Watch(tmp) as watch:
        res = cli("run", "livecc-pretrain", "--videos", folder, "--out", out, "--embedded", "-q",
                  "--set", "clip.min_clip_sec=3", "--set", "clip.max_clip_sec=20", "--set", "keep_lm_loss.high=2.0",
                  timeout=900, HF_HUB_OFFLINE="")  # the recipe's talking_head model is checked, not run (no clip reaches it)
    kept = [r for r in rows(out) if not r.get("errors")] if (out / "data").is_dir() else []
    failed = jsonl(out / "failed.jsonl")
    dropped = jsonl(out / "dropped.jsonl")
    ids = {"english", "english2", "silent", "no_audio"}
    where: dict[str, list[str]] = {i: [] for i in ids}
    for name, part in (("kept", kept), ("failed", failed), ("dropped", dropped)):
        for r in part:
            if r.get("video_id") in where and name not in where[r["video_id"]]:
                where[r["video_id"]].append(name)
    missing = sorted(i for i, w in where.items() if not w)
    failed_dropped = sorted(r["video_id"] for r in dropped if r.get("errors"))
    no_value = [r.get("drop_reason") for r in dropped if r.get("drop_value") is None and not r.get("errors")]
    text = (f"exit {res.returncode}; in none of kept/failed/dropped: {missing or 'none'}; failed rows listed as dropped: "
            f"{failed_dropped or 'none'}; dropped rows without the judged value: {len(no_value)} of {len(dropped)}")
    return Result(res.returncode, text, watch.changed, res.stderr, res.stdout,
                  {"where": where, "missing": missing, "failed_dropped": failed_dropped, "no_value": no_value,
                   "dropped": dropped, "card": (out / "README.md").read_text() if (out / "README.md").exists() else ""})


# --------------------------------------------------------------------------------------------
# Bounds and messages
# --------------------------------------------------------------------------------------------


def ray_unreachable(tmp: Path, media) -> Result:
    with Watch(tmp) as watch:
        started = time.perf_counter()
        res = cli("run", "probe", "--videos", videos(tmp, media), "--out", tmp / "out", "--executor", "ray",
                  "--ray-address", "127.0.0.1:1", timeout=120)
        took = time.perf_counter() - started
    r = result(res, watch, seconds=took)
    r.said = f"({took:.0f} s) " + r.said
    return r


def num_proc_huge(tmp: Path, media) -> Result:
    with Watch(tmp) as watch:
        res = cli("run", "probe", "--videos", videos(tmp, media, "english", "english2"), "--out", tmp / "out",
                  "--num-proc", "1000", timeout=300)
    line = next((l for l in res.stderr.splitlines() if "--num-proc" in l), "")
    return Result(res.returncode, line or said(res), watch.changed, res.stderr, res.stdout)


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def videos_dev_zero(tmp: Path, media) -> Result:
    with Watch(tmp) as watch:
        res = cli("run", "probe", "--videos", "/dev/zero", "--out", tmp / "out", timeout=60, preexec=_limit_memory)
    return result(res, watch)


def manifest_long_line(tmp: Path, media) -> Result:
    manifest = tmp / "list.txt"
    manifest.write_text("a" * 5_000_000 + ".mp4\n")
    with Watch(tmp) as watch:
        res = cli("run", "probe", "--videos", manifest, "--out", tmp / "out", timeout=120, preexec=_limit_memory)
    return result(res, watch)


def deep_yaml(tmp: Path, media) -> Result:
    config = tmp / "deep.yaml"
    config.write_text("[" * 100_000 + "]" * 100_000)
    with Watch(tmp) as watch:
        res = cli("run", "probe", "--videos", videos(tmp, media), "--out", tmp / "out", "--config", config)
    return result(res, watch)


def bad_port(tmp: Path, media) -> Result:
    folder = _livecc_folder(tmp, media, [(str(media.english), "a")])
    with Watch(tmp) as watch:
        res = cli("view", folder, "--serve", "--port", "99999", timeout=60)
    return result(res, watch)


def corrupt_parquet(tmp: Path, media) -> Result:
    folder = _lomo_folder(tmp)
    shard = next((folder / "data").glob("*.parquet"))
    shard.write_bytes(b"PAR1" + os.urandom(3000))
    with Watch(tmp) as watch:
        audit = cli("audit", folder, "--no-blind")
        view = cli("view", folder)
    r = result(audit, watch)
    r.facts["view"] = view
    r.said = f"audit: {said(audit)} (exit {audit.returncode}) / view: {said(view)} (exit {view.returncode})"
    r.status = max(audit.returncode or 0, view.returncode or 0)
    return r


def damaged_commit(tmp: Path, media) -> Result:
    out, first = probe_run(tmp, media)
    assert first.returncode == 0, first.stderr
    (out / ".lomo-staging").mkdir()
    (out / ".lomo-staging" / "commit.json").write_text('{"files": ["READ')
    with Watch(tmp) as watch:
        res = cli("run", "probe", "--videos", tmp / "videos", "--out", out, "-q")
        again = cli("run", "probe", "--videos", tmp / "videos", "--out", out, "-q")
    r = result(res, watch, again=again.returncode, staging_left=(out / ".lomo-staging").exists())
    warn = next((l for l in res.stderr.splitlines() if "commit" in l or "staging" in l), "")
    r.said = f"exit {res.returncode}, rerun exit {again.returncode}: " + (warn or said(res))
    return r


def step_folder_is_file(tmp: Path, media) -> Result:
    out, first = probe_run(tmp, media)
    assert first.returncode == 0, first.stderr
    step = next(p for p in (out / ".lomo-work").iterdir() if p.name.startswith("00-probe"))
    shutil.rmtree(step)
    step.write_text("not a folder")
    with Watch(tmp) as watch:
        res = cli("run", "probe", "--videos", tmp / "videos", "--out", out, "-q")
    return result(res, watch, step_still_file=step.is_file())


CASES: dict[str, Callable[[Path, Any], Result]] = {
    "marker ../ and absolute paths": marker_escape,
    "marker: published file and lock are links": marker_symlink,
    "marker: published file edited by the user": marker_changed_file,
    "serve: row names a file outside": serve_foreign_file,
    "serve: --video-root, link, non-video": serve_video_root,
    "serve: Host and Range": serve_host_and_range,
    "page: title <!--<script>": page_script_break,
    "audit while another run holds the folder": audit_locked,
    "publish with a pending commit": publish_pending,
    "publish while another run holds the folder": publish_locked,
    "video replaced in place": replaced_video,
    "every row failed (20 missing files)": all_failed,
    "livecc: no speech, no audio, dropped values": accounting,
    "--ray-address 127.0.0.1:1": ray_unreachable,
    "--num-proc 1000 for 2 rows": num_proc_huge,
    "--videos /dev/zero": videos_dev_zero,
    "manifest line of 5 MB": manifest_long_line,
    "100k-deep YAML": deep_yaml,
    "--port 99999": bad_port,
    "corrupt Parquet in audit/view": corrupt_parquet,
    "damaged staging commit.json": damaged_commit,
    "step folder replaced by a file": step_folder_is_file,
}
MODEL_CASES = {"livecc: no speech, no audio, dropped values"}
