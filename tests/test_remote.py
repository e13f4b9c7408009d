"""Videos in object storage: a real S3 API server on loopback (moto's ``moto_server``), the real
``lomo-datasets`` command, credentials from the standard AWS variables.

- ``run probe --videos s3://bucket/prefix/`` gives the rows the same files give locally;
- a manifest in the bucket whose entries are relative names or ``s3://`` URIs;
- a missing object is that row's error, the other rows go on;
- the secret key is written nowhere (rows, card, logs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.s3_server import moto_server

pytest.importorskip("s3fs")
if shutil.which("moto_server") is None:
    pytest.skip("moto_server (pip install 'moto[server]') is needed for the S3 tests", allow_module_level=True)

SECRET = "s3cr3t-never-written-0f9a"
BUCKET = "lomo-videos"


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="lomo-test-key",
            AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
            no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost",
        )
        yield env


def _fs(env):
    import s3fs

    return s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                             client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]})


@pytest.fixture(scope="module")
def bucket(s3_env, test_media, tmp_path_factory):
    """Three good test videos in ``s3://BUCKET/videos/`` (one in a sub-folder) and the same three
    files in a local folder."""
    fs = _fs(s3_env)
    fs.mkdir(BUCKET)
    local = tmp_path_factory.mktemp("local-videos")
    names = {"english.mp4": test_media.english, "nested/english2.mp4": test_media.english2, "silent.mp4": test_media.silent}
    for name, path in names.items():
        fs.put_file(str(path), f"{BUCKET}/videos/{name}")
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, local / name)
    fs.pipe_file(f"{BUCKET}/videos/.hidden/skip.mp4", b"not listed")
    return local


def _cli(env, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "lomo_datasets.cli", "-q", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def _rows(folder: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = [r for f in sorted((folder / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: r["video_id"])


def _no_secret(folder: Path, *texts: str) -> None:
    for text in texts:
        assert SECRET not in text
    for path in folder.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_probe_of_a_bucket_prefix_gives_the_local_rows(s3_env, bucket, tmp_path):
    remote = _cli(s3_env, "run", "probe", "--videos", f"s3://{BUCKET}/videos/", "--out", tmp_path / "remote")
    assert remote.returncode == 0, remote.stderr
    local = _cli(s3_env, "run", "probe", "--videos", bucket, "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    got, want = _rows(tmp_path / "remote"), _rows(tmp_path / "local")
    assert [r["video_id"] for r in got] == ["english", "english2", "silent"]  # .hidden/ is not listed
    assert [r["video"] for r in got] == [f"s3://{BUCKET}/videos/english.mp4", f"s3://{BUCKET}/videos/nested/english2.mp4",
                                         f"s3://{BUCKET}/videos/silent.mp4"]
    assert {r["source"] for r in got} == {"s3"}
    same = [{k: v for k, v in r.items() if k not in ("video", "source")} for r in got]
    assert same == [{k: v for k, v in r.items() if k not in ("video", "source")} for r in want]
    assert all(r["duration"] > 1 and not r["errors"] for r in got)
    _no_secret(tmp_path / "remote", remote.stdout, remote.stderr)


def test_a_manifest_in_the_bucket_with_a_missing_object(s3_env, bucket, tmp_path):
    fs = _fs(s3_env)
    lines = [{"video": "english.mp4", "title": "relative to the manifest"},
             {"video": f"s3://{BUCKET}/videos/nested/english2.mp4"},
             {"video": "gone.mp4"}]
    fs.pipe_file(f"{BUCKET}/videos/list.jsonl", "\n".join(json.dumps(x) for x in lines).encode())
    result = _cli(s3_env, "run", "probe", "--videos", f"s3://{BUCKET}/videos/list.jsonl", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    rows = {r["video_id"]: r for r in _rows(tmp_path / "out")}
    assert rows["english"]["title"] == "relative to the manifest" and rows["english"]["duration"] > 1
    assert rows["english2"]["duration"] > 1
    assert [e["error"] for e in rows["gone"]["errors"]] == [f"MediaNotFoundError: no such object: s3://{BUCKET}/videos/gone.mp4"]
    failed = [json.loads(line) for line in (tmp_path / "out" / "failed.jsonl").read_text().splitlines()]
    assert [f["video_id"] for f in failed] == ["gone"]
    _no_secret(tmp_path / "out", result.stdout, result.stderr)


def test_a_missing_prefix_or_bucket_is_one_line(s3_env, bucket, tmp_path):
    result = _cli(s3_env, "run", "probe", "--videos", "s3://no-such-bucket/videos/", "--out", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lomo-datasets: error: --videos s3://no-such-bucket/videos/: "), lines
    assert "found no videos" in lines[0] or "no such folder" in lines[0]
    assert SECRET not in result.stderr


def test_an_object_replaced_under_the_same_key_is_new_input(s3_env, bucket, tmp_path, test_media):
    """The input fingerprint holds each object's size and ETag: a rerun after a video was
    replaced in the bucket (same key, other bytes) probes again instead of reusing the rows."""
    fs = _fs(s3_env)
    key = f"{BUCKET}/replaced/clip.mp4"
    fs.put_file(str(test_media.english), key)
    argv = ["run", "probe", "--videos", f"s3://{BUCKET}/replaced/", "--out", tmp_path / "out"]
    first = _cli(s3_env, *argv)
    assert first.returncode == 0, first.stderr
    assert _cli(s3_env, *argv).stdout.count("reused") >= 1  # unchanged: the probe step is reused
    fs.put_file(str(test_media.english2), key)  # the same key, another video
    again = _cli(s3_env, *argv)
    assert again.returncode == 0, again.stderr
    assert "reused" not in again.stdout, again.stdout
    assert _rows(tmp_path / "out")[0]["duration"] == pytest.approx(_rows_of(test_media.english2, s3_env, tmp_path))


def _rows_of(path, env, tmp_path):
    out = tmp_path / "local-one"
    (tmp_path / "one").mkdir(exist_ok=True)
    shutil.copyfile(path, tmp_path / "one" / "clip.mp4")
    assert _cli(env, "run", "probe", "--videos", tmp_path / "one", "--out", out).returncode == 0
    return _rows(out)[0]["duration"]
