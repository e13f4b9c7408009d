"""A work dir in object storage (``--work-dir s3://...`` with ``--executor ray``): a real S3 API
server on loopback (moto's ``moto_server``), the real command, a local Ray instance.

The Ray workers write their part files into the bucket (so on a cluster without a shared file
system every node can write and the driver reads them); the rows equal the local runner's; a
rerun reuses what is there; a damaged part object is found and its rows recomputed; a prefix
holding objects lomo-datasets did not write is refused and left alone; the secret key is written
nowhere.
"""

from __future__ import annotations

import json

import pytest

from tests.test_remote import BUCKET, SECRET, _cli, _fs, _no_secret, _rows, bucket, s3_env  # noqa: F401 (fixtures)

pytest.importorskip("ray")


def test_ray_parts_live_in_the_bucket_and_give_the_local_rows(s3_env, bucket, tmp_path):
    work = f"s3://{BUCKET}/work/probe"
    argv = ["run", "probe", "--videos", bucket, "--executor", "ray", "--work-dir", work]
    first = _cli(s3_env, *argv, "--out", tmp_path / "ray")
    assert first.returncode == 0, first.stderr[-3000:]
    local = _cli(s3_env, "run", "probe", "--videos", bucket, "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr[-3000:]
    drop = ("video",)
    got = [{k: v for k, v in r.items() if k not in drop} for r in _rows(tmp_path / "ray")]
    assert got == [{k: v for k, v in r.items() if k not in drop} for r in _rows(tmp_path / "local")]
    assert [r["video_id"] for r in got] == ["english", "english2", "silent"]

    fs = _fs(s3_env)
    parts = fs.glob(f"{BUCKET}/work/probe/ray-*/part-*.parquet")
    assert parts and json.loads(fs.cat_file(f"{BUCKET}/work/probe/.lomo-datasets.json"))["tool"] == "lomo-datasets"
    assert not (tmp_path / "ray" / ".lomo-work").exists() and not list(tmp_path.glob("s3:*"))  # nothing local

    # a rerun reuses every part; a damaged part object is found, removed and its rows rerun
    written = {p: fs.info(p)["LastModified"] for p in parts}
    again = _cli(s3_env, *argv, "--out", tmp_path / "again")
    assert again.returncode == 0, again.stderr[-3000:]
    fs.invalidate_cache()
    assert {p: fs.info(p)["LastModified"] for p in fs.glob(f"{BUCKET}/work/probe/ray-*/part-*.parquet")} == written
    assert _rows(tmp_path / "again") == _rows(tmp_path / "ray")
    data = bytearray(fs.cat_file(parts[0]))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(parts[0], bytes(data))
    fixed = _cli(s3_env, *argv, "--out", tmp_path / "fixed")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert "was changed after it was written (checksum differs); recomputing its rows" in fixed.stderr
    assert _rows(tmp_path / "fixed") == _rows(tmp_path / "ray")
    for folder, res in (("ray", first), ("again", again), ("fixed", fixed)):
        _no_secret(tmp_path / folder, res.stdout, res.stderr)
    for path in fs.find(f"{BUCKET}/work"):
        assert SECRET.encode() not in fs.cat_file(path), path


def test_a_prefix_holding_other_objects_is_refused_and_left_alone(s3_env, bucket, tmp_path):
    fs = _fs(s3_env)
    fs.pipe_file(f"{BUCKET}/theirs/part-notes.parquet", b"someone else's")
    res = _cli(s3_env, "run", "probe", "--videos", bucket, "--executor", "ray", "--work-dir",
               f"s3://{BUCKET}/theirs", "--out", tmp_path / "out")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"lomo-datasets: error: --work-dir s3://{BUCKET}/theirs: holds 1 objects that lomo-datasets did not write")
    assert fs.cat_file(f"{BUCKET}/theirs/part-notes.parquet") == b"someone else's"
    # the local runner cannot use one: it says what can
    res = _cli(s3_env, "run", "probe", "--videos", bucket, "--work-dir", f"s3://{BUCKET}/mine", "--out", tmp_path / "out2")
    assert res.returncode == 2 and "needs --executor ray" in res.stderr and len(res.stderr.strip().splitlines()) == 1
