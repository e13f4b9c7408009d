"""A work dir in object storage (``--work-dir s3://...``, with ``--executor ray`` and with the local
runner): a real S3 API server on loopback (moto's ``moto_server``), the real command, a local Ray
instance.

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



def test_ray_parts_live_in_the_bucket_and_give_the_local_rows(s3_env, bucket, tmp_path):
    pytest.importorskip("ray")
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
    pytest.importorskip("ray")
    fs = _fs(s3_env)
    fs.pipe_file(f"{BUCKET}/theirs/part-notes.parquet", b"someone else's")
    res = _cli(s3_env, "run", "probe", "--videos", bucket, "--executor", "ray", "--work-dir",
               f"s3://{BUCKET}/theirs", "--out", tmp_path / "out")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"lomo-datasets: error: --work-dir s3://{BUCKET}/theirs: holds 1 objects that lomo-datasets did not write")
    assert fs.cat_file(f"{BUCKET}/theirs/part-notes.parquet") == b"someone else's"
    # the local runner refuses it the same way
    res = _cli(s3_env, "run", "probe", "--videos", bucket, "--work-dir", f"s3://{BUCKET}/theirs", "--out", tmp_path / "out2")
    assert res.returncode == 2 and "holds 1 objects that lomo-datasets did not write" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and fs.cat_file(f"{BUCKET}/theirs/part-notes.parquet") == b"someone else's"


def test_the_local_runner_keeps_its_work_in_the_bucket_and_resumes_on_another_machine(s3_env, bucket, tmp_path):
    """``--work-dir s3://`` without Ray: the runner works in a copy under this machine's cache and
    uploads each finished chunk and step (marker last); a machine with an empty cache fetches
    the finished steps and reruns nothing; a damaged object is found by its checksum and
    recomputed."""
    work = f"s3://{BUCKET}/work/local"
    argv = ["run", "probe", "--videos", bucket, "--work-dir", work]
    machine = {name: {**s3_env, "LOMO_DATASETS_CACHE": str(tmp_path / f"cache-{name}")} for name in "abc"}
    first = _cli(machine["a"], *argv, "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr[-3000:]
    local = _cli(s3_env, "run", "probe", "--videos", bucket, "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr[-3000:]
    assert _rows(tmp_path / "a") == _rows(tmp_path / "local")
    assert not (tmp_path / "a" / ".lomo-work").exists() and not list(tmp_path.glob("s3:*"))

    fs = _fs(s3_env)
    held = sorted(p.split(f"{BUCKET}/work/local/", 1)[1] for p in fs.find(f"{BUCKET}/work/local"))
    steps = sorted({p.split("/", 1)[0] for p in held if "/" in p})
    assert [s.split("-")[1] for s in steps] == ["probe"], held
    assert f"{steps[0]}/_SUCCESS" in held and any(p.startswith(f"{steps[0]}/data/") for p in held)
    assert not [p for p in held if "/chunk-" in p or p.endswith(".partial")], held  # chunks go once the step is whole
    written = {p: fs.info(p)["LastModified"] for p in fs.find(f"{BUCKET}/work/local")}

    # Another machine (an empty cache): the finished step comes from the bucket, nothing reruns or re-uploads.
    second = _cli(machine["b"], *argv, "--out", tmp_path / "b")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reused from the work dir" in second.stdout and "probe" in second.stdout, second.stdout
    assert _rows(tmp_path / "b") == _rows(tmp_path / "a")
    fs.invalidate_cache()
    assert {p: fs.info(p)["LastModified"] for p in fs.find(f"{BUCKET}/work/local") if not p.endswith(".lomo-lease.json")} == {
        p: t for p, t in written.items() if not p.endswith(".lomo-lease.json")}

    # A damaged object: a third machine finds it by its checksum and recomputes the step.
    data = sorted(p for p in fs.find(f"{BUCKET}/work/local/{steps[0]}/data") if p.endswith(".arrow"))[0]
    damaged = bytearray(fs.cat_file(data))
    damaged[len(damaged) // 2] ^= 0xFF
    fs.pipe_file(data, bytes(damaged))
    third = _cli(machine["c"], *argv, "--out", tmp_path / "c")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "was changed after it was written (checksum differs)" in third.stderr, third.stderr[-2000:]
    assert _rows(tmp_path / "c") == _rows(tmp_path / "a")
    fs.invalidate_cache()
    assert fs.cat_file(data) != bytes(damaged)  # the recomputed step went up again
    for name, res in (("a", first), ("b", second), ("c", third)):
        _no_secret(tmp_path / name, res.stdout, res.stderr)
        _no_secret(tmp_path / f"cache-{name}")
    for path in fs.find(f"{BUCKET}/work"):
        assert SECRET.encode() not in fs.cat_file(path), path
