"""One run at a time on a prefix in object storage: the lease object (publish/lease.py), on a real
S3 API server on loopback (moto's ``moto_server``), in-process and through the command."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest

from tests.test_remote import BUCKET, SECRET, _fs, bucket, s3_env  # noqa: F401 (fixtures)

pytest.importorskip("s3fs")


@pytest.fixture
def store_env(s3_env, bucket, monkeypatch):
    """The S3 server's settings in this process's environment (as a user's shell has them)."""
    for key, value in s3_env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    return _fs(s3_env)


def test_a_held_lease_refuses_a_second_run_and_frees_on_release(store_env):
    from lomo_datasets.publish.lease import LEASE, Lease
    from lomo_datasets.publish.outputs import BusyError

    url = f"s3://{BUCKET}/lease/a"
    first = Lease(url, "--work-dir", ttl=30, settle=0.2)
    first.acquire()
    held = json.loads(store_env.cat_file(f"{BUCKET}/lease/a/{LEASE}"))
    assert held["owner"] == first.owner and held["expires"] > time.time() + 20
    assert SECRET not in json.dumps(held)
    with pytest.raises(BusyError, match=r"--work-dir s3://lomo-videos/lease/a is being written by another lomo-datasets run \(pid \d+ on "):
        Lease(url, "--work-dir", settle=0.2).acquire()
    first.release()
    store_env.invalidate_cache()
    assert not store_env.exists(f"{BUCKET}/lease/a/{LEASE}")
    with Lease(url, "--work-dir", settle=0.2):  # free again
        pass


def test_the_lease_is_renewed_while_the_run_lives(store_env):
    from lomo_datasets.publish.lease import LEASE, Lease

    url = f"s3://{BUCKET}/lease/renew"
    with Lease(url, ttl=1.5, settle=0.1):
        first = json.loads(store_env.cat_file(f"{BUCKET}/lease/renew/{LEASE}"))["expires"]
        time.sleep(2.5)  # past the first expiry: renewed every ttl / 3
        store_env.invalidate_cache()
        later = json.loads(store_env.cat_file(f"{BUCKET}/lease/renew/{LEASE}"))
        assert later["expires"] > first and later["expires"] > time.time()


def test_a_dead_runs_lease_is_taken_over_after_it_expires(store_env, caplog):
    from lomo_datasets.publish.lease import LEASE, Lease
    from lomo_datasets.publish.outputs import BusyError

    path = f"{BUCKET}/lease/dead/{LEASE}"
    left = {"tool": "lomo-datasets", "owner": "dead", "host": "node-7", "pid": 4242, "expires": time.time() + 60}
    store_env.pipe_file(path, json.dumps(left).encode())
    with pytest.raises(BusyError, match="pid 4242 on node-7"):
        Lease(f"s3://{BUCKET}/lease/dead", settle=0.1).acquire()
    store_env.pipe_file(path, json.dumps({**left, "expires": time.time() - 5}).encode())
    with caplog.at_level(logging.WARNING, logger="lomo_datasets.publish.lease"):
        with Lease(f"s3://{BUCKET}/lease/dead", settle=0.1) as lease:
            assert json.loads(store_env.cat_file(path))["owner"] == lease.owner
    assert "taking over the lease left by pid 4242 on node-7" in caplog.text


def test_two_runs_on_one_out_prefix_one_waits_its_turn(s3_env, bucket, tmp_path):
    """The command: while one run holds ``--out s3://...``, a second one stops at once in one line;
    the first publishes and leaves no lease behind."""
    fs = _fs(s3_env)
    url = f"s3://{BUCKET}/lease/out"
    argv = [sys.executable, "-m", "lomo_datasets.cli", "-q", "run", "probe", "--videos", str(bucket), "--out", url]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=s3_env)
    lease = f"{BUCKET}/lease/out/.lomo-lease.json"
    deadline = time.monotonic() + 120
    while not fs.exists(lease):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first run never took the lease"
        time.sleep(0.2)
        fs.invalidate_cache()
    second = subprocess.run(argv, capture_output=True, text=True, env=s3_env, timeout=300)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, second.stderr
    assert f"--out {url} is being written by another lomo-datasets run" in lines[0]
    fs.invalidate_cache()
    assert not fs.exists(lease) and fs.exists(f"{BUCKET}/lease/out/.lomo-datasets.json")
    build = [line for line in out.splitlines() if "built in " in line]
    assert build, out
    import re
    import shutil

    shutil.rmtree(re.search(r"built in (\S+)\)", build[0]).group(1), ignore_errors=True)
