"""The CLI as a hostile-but-realistic user meets it: every expected failure is one line that says
what to do, with exit 2 for a bad setting or input, 130 for Ctrl-C and 1 for the rest; nothing
waits forever; no secret reaches any output.

Every case runs the real ``lomo-datasets`` command in a subprocess, against files and loopback
servers (127.0.0.1) made here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.media_server import MediaServer

PREFIX = "lomo-datasets: error: "


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost", HF_HUB_DISABLE_XET="1")
    env.update(extra)
    return env


def _cli(*args, env=None, timeout=300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lomo_datasets.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env or _env(), cwd=cwd,
    )


def _start(*args, env=None) -> subprocess.Popen:
    """The CLI in its own session, as a terminal runs it (Ctrl-C reaches the whole group)."""
    return subprocess.Popen(
        [sys.executable, "-m", "lomo_datasets.cli", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or _env(), start_new_session=True,
    )


def _one_error_line(result: subprocess.CompletedProcess, status: int, *fragments: str, verbose: bool = False) -> str:
    """The single error line of ``result`` (exit ``status``), which holds every fragment;
    no traceback unless the run was ``verbose`` (-v)."""
    assert result.returncode == status, (result.returncode, result.stderr)
    assert verbose or "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("lomo-datasets: ")]
    assert len(lines) == 1, result.stderr
    assert result.stderr.rstrip().endswith(lines[0]), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _wait_for(condition, timeout: float = 120.0, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(step)


def _gone(proc: subprocess.Popen, timeout: float = 30.0) -> bool:
    """True once no process of ``proc``'s session group is left (no worker hangs on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    return False


@pytest.fixture()
def two_videos(test_media, tmp_path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(test_media.english, folder / "english.mp4")
    shutil.copy(test_media.silent, folder / "silent.mp4")
    return folder


@pytest.fixture()
def server(test_media):
    srv = MediaServer({"english.mp4": test_media.english, "silent.mp4": test_media.silent}).start()
    yield srv
    srv.stop()


# --------------------------------------------------------------------------------------------
# Bad config files, --set values and manifests: exit 2, one line
# --------------------------------------------------------------------------------------------


def test_config_files_that_cannot_be_used(two_videos, tmp_path):
    out = tmp_path / "out"
    bad = tmp_path / "bad.yaml"
    bad.write_text("probe: [1, 2\n")
    result = _cli("run", "probe", "--videos", two_videos, "--out", out, "--config", bad)
    _one_error_line(result, 2, f"--config {bad}: not valid YAML at line 2")
    result = _cli("run", "probe", "--videos", two_videos, "--out", out, "--config", tmp_path / "missing.yaml")
    _one_error_line(result, 2, "missing.yaml: no such file", "YAML file that maps step names to settings")
    result = _cli("run", "probe", "--videos", two_videos, "--out", out, "--config", tmp_path)
    _one_error_line(result, 2, "is a directory")
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- probe\n")
    result = _cli("run", "probe", "--videos", two_videos, "--out", out, "--config", not_a_mapping)
    _one_error_line(result, 2, "must map step names to settings")
    # A tag that would run code: refused, and nothing ran.
    marker = tmp_path / "pwned"
    tagged = tmp_path / "tag.yaml"
    tagged.write_text(f'probe: !!python/object/apply:os.system ["touch {marker}"]\n')
    result = _cli("run", "probe", "--videos", two_videos, "--out", out, "--config", tagged)
    _one_error_line(result, 2, "a tag (!...) at line 1", "plain YAML")
    assert not marker.exists() and not out.exists()


def test_yaml_alias_bomb_and_huge_values_are_refused_fast(two_videos, tmp_path):
    # The "billion laughs": nine levels of nine aliases. Refused before anything expands.
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = "{" + ", ".join(levels) + "}"
    started = time.monotonic()
    result = _cli("run", "probe", "--videos", two_videos, "--out", tmp_path / "out", "--set", f"probe.verify={bomb}", timeout=60)
    _one_error_line(result, 2, "--set 'probe.verify': an anchor (&name)")
    assert time.monotonic() - started < 30
    bomb_config = tmp_path / "bomb.yaml"
    bomb_config.write_text("\n".join(levels) + "\nprobe: {verify: *a8}\n")
    result = _cli("run", "probe", "--videos", two_videos, "--out", tmp_path / "out", "--config", bomb_config, timeout=60)
    _one_error_line(result, 2, "an anchor (&name) at line 1")
    # A huge value is never rendered whole.
    result = _cli("run", "probe", "--videos", two_videos, "--out", tmp_path / "out", "--set", "probe.verify=" + "x" * 100_000)
    line = _one_error_line(result, 2, "probe.verify")
    assert len(line) <= 700 and len(result.stderr) < 1000


@pytest.mark.parametrize(
    "setting, message",
    [
        ("asr.modle=tiny", "step 'asr': unknown setting 'modle' (did you mean 'model'?); valid settings: ['device', 'model'"),
        ("keep_qc.hgih=1", "step 'keep_qc': unknown setting 'hgih' (did you mean 'high'?); valid settings: ['column', 'low', 'high', 'enabled']"),
        ("qa.max_tries=100000", "qa.max_tries=100000: use a whole number of tries from 1 to 50"),
        ("qa.max_tries=2.5", "qa.max_tries must be a whole number, got 2.5"),
        ("compress.temperature=nan", "compress.temperature=nan: use a finite number (a temperature from 0 to 2)"),
        ("compress.temperature=-5", "compress.temperature=-5: use a temperature from 0 to 2"),
        ("compress.timeout=0", "compress.timeout=0: use seconds above 0 and at most 3600"),
        ("compress.http_retries=1000", "compress.http_retries=1000: use a whole number of retries from 0 to 20"),
        ("asr.batch_size=100000", "asr.batch_size=100000: use rows per batch from 1 to 4096"),
        ("asr.vad_filter=maybe", "asr.vad_filter must be true or false, got 'maybe'"),
        ("keep_qc.low=.inf", "keep_qc.low=inf: use a finite number"),
        ("asr.model=/no/such/dir", "asr.model='/no/such/dir': no such file or folder; give --set asr.model=PATH"),
    ],
)
def test_hostile_settings_fail_at_once_with_the_fix(two_videos, tmp_path, setting, message):
    out = tmp_path / "out"
    result = _cli("run", "lomo", "--embedded", "--videos", two_videos, "--out", out, "--set", setting)
    _one_error_line(result, 2, message)
    assert "probe:" not in result.stderr  # nothing ran: no step started
    assert not (out / "data").exists()


def test_a_model_that_cannot_be_had_is_reported_with_the_fix(two_videos, tmp_path):
    # Offline and not in the (empty) local Hub cache: refused before any row.
    env = _env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    result = _cli("run", "lomo", "--videos", two_videos, "--out", tmp_path / "out", "--set", "asr.model=large-v2", env=env)
    _one_error_line(
        result, 2, "asr.model='large-v2': not a local path and not in the local Hub cache (Systran/faster-whisper-large-v2)",
        "--set asr.model=PATH", "--embedded", "HF_HUB_OFFLINE",
    )
    assert "probe:" not in result.stderr
    # A folder that is not a model: the step cannot tell in advance; its load fails as one setting error.
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    result = _cli("run", "lomo", "--embedded", "--videos", two_videos, "--out", tmp_path / "out2", "--set", f"asr.model={empty}", "--num-proc", 2)
    _one_error_line(result, 2, f"asr.model='{empty}': the model cannot be loaded (", "--set asr.model=PATH", "--embedded")


def test_manifest_line_that_is_not_an_object(two_videos, tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"video": str(two_videos / "english.mp4")}) + "\n[1, 2]\n")
    result = _cli("run", "probe", "--videos", manifest, "--out", tmp_path / "out")
    _one_error_line(result, 2, f"{manifest}:2: a JSON array, not an object", '{"video": "clip.mp4"}')


def test_special_files_are_named_and_never_block(two_videos, tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    manifest = tmp_path / "manifest.jsonl"
    lines = [{"video": str(two_videos / "english.mp4")}, {"video": "/dev/zero"}, {"video": "/dev/urandom"}, {"video": str(fifo)}]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    result = _cli("run", "probe", "--videos", manifest, "--out", out, timeout=120)
    assert result.returncode == 0, result.stderr
    errors = {json.loads(line)["video_id"]: json.loads(line)["errors"][0]["error"] for line in (out / "failed.jsonl").open()}
    assert errors == {
        "zero": "NotAFileError: a character device, not a video file: /dev/zero",
        "urandom": "NotAFileError: a character device, not a video file: /dev/urandom",
        "pipe": f"NotAFileError: a named pipe (FIFO), not a video file: {fifo}",
    }
    assert "rows with errors: 3" in result.stdout and "probe: 3 x NotAFileError" in result.stdout


def test_more_workers_than_cores_is_warned_about(test_media, tmp_path):
    cores = len(os.sched_getaffinity(0))
    result = _cli("run", "probe", "--videos", test_media.english, "--out", tmp_path / "out", "--num-proc", cores * 8)
    assert result.returncode == 0, result.stderr
    assert f"--num-proc {cores * 8} is more than the {cores} CPU cores" in result.stderr
    assert f"use --num-proc {cores} or fewer" in result.stderr
    fine = _cli("run", "probe", "--videos", test_media.english, "--out", tmp_path / "out", "--num-proc", 1)
    assert fine.returncode == 0 and "CPU cores" not in fine.stderr


# --------------------------------------------------------------------------------------------
# Quiet progress and the failure summary
# --------------------------------------------------------------------------------------------


def test_progress_is_one_bar_per_step_and_failures_are_summarised(test_media, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("english", "silent", "corrupt", "zero_byte"):
        shutil.copy(getattr(test_media, name), folder / f"{name}.mp4")
    result = _cli("run", "probe", "--videos", folder, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    for internal in ("Saving the dataset", "Flattening", "Casting", "Creating parquet", "Map", "Filter"):
        assert internal not in result.stderr, result.stderr
    assert "probe: 100%" in result.stderr and "4/4" in result.stderr
    assert " row " not in result.stderr and "WARNING" not in result.stderr  # no per-row warnings
    assert "probe: 1 x CorruptMediaError" in result.stdout and "probe: 1 x EmptyMediaError" in result.stdout
    assert str(tmp_path / "out" / "failed.jsonl") in result.stdout
    verbose = _cli("-v", "run", "probe", "--videos", folder, "--out", tmp_path / "verbose")
    assert verbose.returncode == 0 and "probe: row corrupt failed: CorruptMediaError" in verbose.stderr
    assert "Saving the dataset" in verbose.stderr  # the library's own bars, with -v only
    quiet = _cli("-q", "run", "probe", "--videos", folder, "--out", tmp_path / "out")
    assert quiet.returncode == 0 and "probe:" not in quiet.stderr and "%|" not in quiet.stderr
    assert "rows with errors: 2" in quiet.stdout


# --------------------------------------------------------------------------------------------
# Ctrl-C and a full disk: the run says it resumes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_proc", [1, 2])
def test_ctrl_c_is_one_line_and_exit_130(server, tmp_path, num_proc):
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{server.url('english.mp4', 'slow')}?copy={i}\n" for i in range(4)))
    proc = _start("run", "probe", "--videos", urls, "--out", tmp_path / "out", "--num-proc", num_proc)
    try:
        _wait_for(lambda: server.hits("/slow/") >= num_proc and proc.poll() is None)  # downloads are running
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C: the whole group
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    line = _one_error_line(result, 130)
    assert line == "lomo-datasets: interrupted; rerun the same command to resume"
    assert "KeyboardInterrupt" not in err and "Process " not in err
    assert _gone(proc), "a worker process outlived the interrupted run"


def test_disk_full_says_the_run_resumes(two_videos, tmp_path):
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare and mount for a small private tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    cli = f"{sys.executable} -m lomo_datasets.cli run probe --videos {two_videos} --out {disk}/out"
    script = (
        f"mount -t tmpfs -o size=2m tmpfs {disk} || exit 77\n"
        f"cat /dev/zero > {disk}/filler 2>/dev/null\n"
        f"{cli} > {tmp_path}/first.out 2> {tmp_path}/first.err; echo $? > {tmp_path}/first.rc\n"
        f"rm {disk}/filler\n"
        f"{cli} > {tmp_path}/second.out 2> {tmp_path}/second.err; echo $? > {tmp_path}/second.rc\n"
    )
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=_env(), timeout=300, capture_output=True, text=True)
    if done.returncode == 77 or not (tmp_path / "first.rc").exists():
        pytest.skip(f"cannot mount a private tmpfs here: {done.stderr.strip()}")
    first = subprocess.CompletedProcess(
        cli, int((tmp_path / "first.rc").read_text()), (tmp_path / "first.out").read_text(), (tmp_path / "first.err").read_text()
    )
    _one_error_line(first, 1, "disk full while writing", "free some space", "rerun the same command", "resumes")
    assert int((tmp_path / "second.rc").read_text()) == 0, (tmp_path / "second.err").read_text()
    assert "2 rows written" in (tmp_path / "second.out").read_text()


# --------------------------------------------------------------------------------------------
# Nothing waits forever: a Hub endpoint that never answers
# --------------------------------------------------------------------------------------------


def test_publish_to_a_hub_that_never_answers_times_out(tmp_path):
    from datasets import Dataset

    from lomo_datasets.publish.layout import write_folder

    folder = write_folder(Dataset.from_dict({"video_id": ["a"], "duration": [1.0]}), tmp_path / "ds", plot=False)
    token = "hf_" + "q" * 34
    with socket.socket() as listener:  # accepts connections (the kernel does) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        endpoint = "http://127.0.0.1:%d" % listener.getsockname()[1]
        started = time.monotonic()
        result = _cli(
            "publish", folder, "--repo", "org/name", "--timeout", 2, "--attempts", 2,
            env=_env(HF_ENDPOINT=endpoint, HF_TOKEN=token), timeout=120,
        )
        elapsed = time.monotonic() - started
    _one_error_line(result, 1, "push to dataset repo org/name failed after 2 attempts", "Timeout", "is complete and unchanged")
    assert elapsed < 60, elapsed
    assert token not in result.stdout + result.stderr
    bad = _cli("publish", folder, "--repo", "org/name", "--timeout", "nan", env=_env(HF_ENDPOINT=endpoint))
    _one_error_line(bad, 2, "Hub read timeout nan", "--timeout 60")


# --------------------------------------------------------------------------------------------
# Secrets: cookie files, temporary cookies after kill -9, credentials in URLs
# --------------------------------------------------------------------------------------------


def _outputs(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def test_a_file_that_is_not_a_cookies_file_is_refused_unread(server, tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text(server.url("english.mp4") + "\n")
    shadow = tmp_path / "shadow"
    hashed = "$6$saltsalt$Qk8vW3secretHashValueThatMustNotLeak0123456789"
    shadow.write_text(f"root:{hashed}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    candidates = [shadow] + ([Path("/etc/shadow")] if os.access("/etc/shadow", os.R_OK) else [])
    for path in candidates:
        result = _cli("run", "probe", "--videos", urls, "--out", tmp_path / "out", "--set", f"download.cookiefile={path}")
        _one_error_line(result, 2, f"download.cookiefile='{path}': line 1 is not a Netscape cookie line", "cookies.txt")
        for line in path.read_text(errors="replace").splitlines():
            for field in line.split(":"):
                if len(field) >= 6:
                    assert field not in _outputs(result)
    assert server.hits("/media/") == 0  # refused before any download
    result = _cli("run", "probe", "--videos", urls, "--out", tmp_path / "out", "--set", "download.cookiefile=/dev/zero")
    _one_error_line(result, 2, "download.cookiefile='/dev/zero': is a character device, not a cookies file")


def test_a_malformed_cookie_line_is_never_echoed(server, tmp_path):
    secret = "5e55da7a-c00k1e-value-0123456789"
    jar = tmp_path / "cookies.txt"
    jar.write_text(
        "# Netscape HTTP Cookie File\n"
        "127.0.0.1\tFALSE\t/\tFALSE\t0\tgood\tfine-value\n"
        f".bilibili.com TRUE / FALSE 0 SESSDATA {secret}\n"  # spaces, not tabs
    )
    urls = tmp_path / "urls.txt"
    urls.write_text(server.url("english.mp4") + "\n")
    result = _cli(
        "-v", "run", "probe", "--videos", urls, "--out", tmp_path / "out", "--set", f"download.cookiefile={jar}",
        env=_env(SESSDATA=secret),
    )
    _one_error_line(result, 2, "line 3 is not a Netscape cookie line", verbose=True)
    assert "Traceback" in result.stderr  # -v shows it, with the secret masked all the same
    assert secret not in _outputs(result) and "bilibili" not in _outputs(result)


def test_temporary_cookie_file_left_by_kill_9_is_removed_at_the_next_start(server, tmp_path):
    secret = "kill-nine-sessdata-0123456789"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    urls = tmp_path / "urls.txt"
    urls.write_text(server.url("english.mp4", "slow") + "\n")
    env = _env(SESSDATA=secret, TMPDIR=str(tmp))
    proc = _start("run", "probe", "--videos", urls, "--out", tmp_path / "out", "--set", "download.cookie_domain=127.0.0.1", env=env)
    try:
        _wait_for(lambda: server.hits("/slow/") >= 1 and proc.poll() is None)
        left = list(tmp.glob("lomo-cookies-*.txt"))
        assert len(left) == 1 and secret in left[0].read_text()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert any(secret in cookie for _, _, cookie in server.requests)  # the cookie was sent
    assert left[0].exists()  # kill -9 leaves it behind ...
    alive = tmp / f"lomo-cookies-{os.getpid()}-live.txt"  # ... a running process's file is kept
    alive.write_text("# Netscape HTTP Cookie File\n")
    result = _cli("recipes", env=env)
    assert result.returncode == 0
    assert not left[0].exists() and alive.exists()  # ... and the next start removes the stale one
    assert secret not in _outputs(result)


def test_credentials_in_urls_are_used_and_masked_everywhere(server, tmp_path):
    token, password, other = "tok-secret-1234567", "pa55-secret-7654321", "tok-secret-abcdefg"
    good = server.url("english.mp4").replace("http://", f"http://user:{password}@") + f"?token={token}"
    bad = server.url("missing.mp4") + f"?access_token={other}"
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{good}\n{bad}\n")
    out = tmp_path / "out"
    result = _cli("-v", "run", "probe", "--videos", urls, "--out", out, "--set", "download.attempts=1")
    assert result.returncode == 0, result.stderr
    assert any(f"token={token}" in path for _, path, _ in server.requests)  # the download used it
    assert "rows with errors: 1" in result.stdout
    written = [p for p in out.rglob("*") if p.is_file() and ".lomo-work" not in p.parts]
    written += list((out / ".lomo-work" / "downloads").glob("*.download.json"))
    assert any(p.name == "failed.jsonl" for p in written) and any(p.suffix == ".parquet" for p in written)
    for secret in (token, password, other):
        assert secret not in _outputs(result), secret
        for path in written:
            assert secret.encode() not in path.read_bytes(), (secret, path)
    failed = [json.loads(line) for line in (out / "failed.jsonl").open()]
    assert failed[0]["video"].endswith("/media/missing.mp4?access_token=***")


def test_out_or_work_dir_urls_that_cannot_work_are_refused_in_one_line(tmp_path):
    """Path("s3://b/x") would quietly make a local folder named "s3:"; the run says what works.
    (--out s3://... itself works: tests/test_remote_out.py.)"""
    videos = tmp_path / "videos"
    videos.mkdir()
    remote = "s3://key:secret@bucket/prefix"
    cases = (
        ("--work-dir s3://", ["--out", str(tmp_path / "out"), "--work-dir", remote], "credentials in the URL are not used"),
        ("--out http://", ["--out", "http://example.com/x"], "only a local or shared-filesystem path is supported"),
        ("--out s3://", ["--out", remote], "credentials in the URL are not used"),
    )
    for start, argv, says in cases:
        res = subprocess.run([sys.executable, "-m", "lomo_datasets.cli", "run", "probe", "--videos", str(videos), *argv],
                             capture_output=True, text=True, cwd=tmp_path)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, res.stderr
        assert start in lines[0] and says in lines[0], lines[0]
        assert "secret" not in res.stderr
        assert not (tmp_path / "s3:").exists() and not (tmp_path / "http:").exists()
