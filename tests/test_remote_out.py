"""``--out s3://...``: the output built locally, uploaded as a version, then the pointer switched
(a real S3 API server on loopback, the real command).

The version holds the local run's files byte for byte; a rerun uploads nothing new; another
setting publishes a new version and switches the pointer, the one before stays for readers, an
older one goes; a prefix holding someone else's objects is refused and left alone; the secret key
is written nowhere.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.test_remote import BUCKET, SECRET, _cli, _fs, _no_secret, _rows, bucket, s3_env  # noqa: F401 (fixtures)

pytest.importorskip("s3fs")


def _built_in(stdout: str) -> Path:
    m = re.search(r"built in (\S+)\)", stdout)
    assert m, stdout
    return Path(m.group(1))


def test_out_in_a_bucket_is_a_version_and_a_pointer(s3_env, bucket, tmp_path):
    fs = _fs(s3_env)
    url = f"s3://{BUCKET}/datasets/probe"
    first = _cli(s3_env, "run", "probe", "--videos", bucket, "--out", url)
    build = _built_in(first.stdout) if first.returncode == 0 else None
    try:
        assert first.returncode == 0, first.stderr[-3000:]
        local = _cli(s3_env, "run", "probe", "--videos", bucket, "--out", tmp_path / "local")
        assert local.returncode == 0, local.stderr[-3000:]

        pointer = json.loads(fs.cat_file(f"{BUCKET}/datasets/probe/.lomo-datasets.json"))
        version = pointer["current"]
        assert re.fullmatch(r"v-[0-9a-f]{16}", version) and pointer["order"] == [version]
        assert f"published to {url}/{version}" in first.stdout
        assert f"data_files='{url}/{version}/data/train-*.parquet'" in first.stdout  # the load line
        # the version holds the local run's published files, byte for byte
        files = sorted(pointer["versions"][version]["files"])
        assert "README.md" in files and any(f.startswith("data/") for f in files)
        for rel in files:
            assert fs.cat_file(f"{BUCKET}/datasets/probe/{version}/{rel}") == (tmp_path / "local" / rel).read_bytes(), rel
        import datasets

        loaded = datasets.load_dataset("parquet", data_files=f"{url}/{version}/data/train-*.parquet", split="train",
                                       storage_options={"key": s3_env["AWS_ACCESS_KEY_ID"], "secret": SECRET,
                                                        "client_kwargs": {"endpoint_url": s3_env["AWS_ENDPOINT_URL"]}})
        assert sorted(loaded["video_id"]) == [r["video_id"] for r in _rows(tmp_path / "local")]

        # a rerun: the same version, nothing uploaded again
        stamps = {p: fs.info(p)["LastModified"] for p in fs.find(f"{BUCKET}/datasets/probe/{version}")}
        again = _cli(s3_env, "run", "probe", "--videos", bucket, "--out", url)
        assert again.returncode == 0, again.stderr[-3000:]
        fs.invalidate_cache()
        assert {p: fs.info(p)["LastModified"] for p in fs.find(f"{BUCKET}/datasets/probe/{version}")} == stamps
        assert json.loads(fs.cat_file(f"{BUCKET}/datasets/probe/.lomo-datasets.json"))["current"] == version

        # other settings: a new version, the pointer switched; the previous stays, an older one goes
        seen = [version]
        for other in (["--set", "probe.verify=false"], ["--shard", "1/2"]):
            res = _cli(s3_env, "run", "probe", "--videos", bucket, "--out", url, *other)
            assert res.returncode == 0, res.stderr[-3000:]
            fs.invalidate_cache()
            pointer = json.loads(fs.cat_file(f"{BUCKET}/datasets/probe/.lomo-datasets.json"))
            assert pointer["current"] not in seen and pointer["order"] == [seen[-1], pointer["current"]]
            seen.append(pointer["current"])
        held = {p.split("/")[3] for p in fs.find(f"{BUCKET}/datasets/probe") if "/v-" in p}
        assert held == set(seen[-2:]), held  # the first version is gone, only by the pointer's list
        for res in (first, again):
            assert SECRET not in res.stdout + res.stderr
        for path in fs.find(f"{BUCKET}/datasets"):
            assert SECRET.encode() not in fs.cat_file(path), path
        _no_secret(build, "")
    finally:
        if build is not None:
            shutil.rmtree(build, ignore_errors=True)


def test_an_out_prefix_holding_other_objects_is_refused_and_left_alone(s3_env, bucket, tmp_path):
    fs = _fs(s3_env)
    fs.pipe_file(f"{BUCKET}/theirs-out/notes.txt", b"someone else's")
    res = _cli(s3_env, "run", "probe", "--videos", bucket, "--out", f"s3://{BUCKET}/theirs-out")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"lomo-datasets: error: --out s3://{BUCKET}/theirs-out: holds 1 objects that lomo-datasets did not write")
    assert fs.find(f"{BUCKET}/theirs-out") == [f"{BUCKET}/theirs-out/notes.txt"]
    # a work dir's marker is not an output's pointer
    fs.pipe_file(f"{BUCKET}/work-like/.lomo-datasets.json", json.dumps({"tool": "lomo-datasets", "kind": "work dir"}).encode())
    res = _cli(s3_env, "run", "probe", "--videos", bucket, "--out", f"s3://{BUCKET}/work-like")
    assert res.returncode == 2 and "was not written by lomo-datasets for an output" in res.stderr
    # a bucket that is not there: said before any work, not after it
    res = _cli(s3_env, "run", "probe", "--videos", bucket, "--out", "s3://no-such-bucket/out")
    assert res.returncode == 2 and "the bucket does not exist" in res.stderr and len(res.stderr.strip().splitlines()) == 1
