"""``--executor ray`` on a real two-node Ray cluster, through the CLI.

Two ``ray start --block`` nodes run on this machine: a head and a worker node, one logical CPU
each, each the leader of its own session with its own ``--temp-dir`` and its own ports, so the
test can kill a whole node (SIGKILL to every process of its session, Ray's workers included)
and stops only its own processes (never ``ray stop``: other Ray instances may run here).

- ``run livecc-sft --embedded --executor ray --ray-address 127.0.0.1:PORT --work-dir s3://...``
  (an S3 API server on loopback, moto's ``moto_server``: the nodes share no work folder) publishes
  the same Parquet rows and exports as the local runner on the same two short videos, while both nodes
  stay alive, and the model actors ran on both nodes (the executor records each model step's
  worker pid per row in its part files; each pid is a worker of one node: it wrote its
  ``python-core-worker-*_<pid>.log`` into that node's logs folder);
- the worker node killed mid-run (every process of its session, SIGKILL, while it runs model
  actors): the run must finish on the head (with the local run's rows) or stop with the
  product's one-line error, without stalling (before the fix that sizes each operator's CPU share
  from the smallest node, 6 of 8 kills stalled; after it, 10 of 10 kills finished on the head
  with the same rows: ``benchmarks/bench_node_loss.py``); the same command run again then
  publishes the local run's rows, none lost and none doubled;
- fake ``AWS_SECRET_ACCESS_KEY`` / ``HF_TOKEN`` values in the driver's and the nodes'
  environment (the Ray workers hold them too) appear in no file under ``--out`` or its work dir.

Groups of one video (``--group-size 1``), as in tests/test_sameness.py: the two videos are two
Ray blocks, so both nodes have work at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.s3_server import free_port as _free_port, moto_server
from tests.test_sameness import published_files

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SECRET_AWS = "fake-aws-secret-7c1e0f3b9a2d4e58"
SECRET_HF = "hf_fakeToken9d8c7b6a5f4e3d2c1b0a"
ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE0000",
    "AWS_SECRET_ACCESS_KEY": SECRET_AWS,
    "HF_TOKEN": SECRET_HF,
}
#: livecc-sft on the ~7 s test videos, as tests/test_sameness.py runs it; two videos, two blocks.
RECIPE = ["--embedded", "--group-size", "1", "--set", "clip.min_clip_sec=2", "--set", "clip.max_clip_sec=6"]
BLOCKS = 2
RUN_TIMEOUT = 300  #: seconds for one CLI run before it counts as hung
#: After the lost node is marked dead: a run in which tasks or actors wait for resources (the
#: GCS's pending demands, as `ray status` shows them) for STALL_WINDOW seconds on end while no
#: block is written is stalled: nothing will free those resources.
STALL_WINDOW = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

BUCKET = "lomo-cluster"
#: Every folder a run of this module wrote (--out, its work dir inside), for the secrets check.
WRITTEN: list[Path] = []
#: What the runs saw, for the secrets check: whether a Ray worker held the fake secrets.
SEEN: dict[str, bool] = {}


def _env() -> dict[str, str]:
    return {**os.environ, **ENV}


def _stat(pid: int) -> tuple[str, int, int, float] | None:
    """(state, process group, session, CPU seconds) of a process, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = stat[stat.rindex(")") + 2 :].split()  # fields 3.. of proc(5): state ppid pgrp session ...
    return f[0], int(f[2]), int(f[3]), (int(f[11]) + int(f[12])) / CLK_TCK


def _session_pids(sid: int) -> list[int]:
    """Every live process of session ``sid``: only processes this test started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st and st[2] == sid and st[0] != "Z":
                pids.append(int(entry.name))
    return pids


def _kill_session(sid: int, sig: int = signal.SIGKILL) -> list[int]:
    pids = _session_pids(sid)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


@dataclass
class Node:
    """One ``ray start --block`` node, the leader of its own session."""

    name: str
    proc: subprocess.Popen
    temp_dir: Path

    def processes(self) -> list[int]:
        return _session_pids(self.proc.pid)

    def kill(self, sig: int = signal.SIGKILL) -> list[int]:
        return _kill_session(self.proc.pid, sig)

    def workers(self) -> list[int]:
        """Ray's worker processes (each in its own process group; the node's daemons are in
        the session leader's group)."""
        return [p for p in self.processes() if (st := _stat(p)) and st[1] != self.proc.pid]

    def worker_pids_logged(self) -> set[int]:
        """The pid of every Ray worker this node ever started (each writes
        ``python-core-worker-<id>_<pid>.log`` into its node's logs folder)."""
        found = set()
        for path in self.temp_dir.glob("session_*/logs/python-core-worker-*_*.log"):
            if m := re.search(r"_(\d+)\.log$", path.name):
                found.add(int(m.group(1)))
        return found


@dataclass
class Cluster:
    address: str
    head: Node
    worker: Node

    def alive_nodes(self) -> list:
        """Alive nodes as the GCS sees them (what ``ray.nodes()`` reports), without a driver."""
        from ray._raylet import GcsClient

        infos = GcsClient(address=self.address).get_all_node_info(timeout=10)
        return [n for n in infos.values() if n.state == 0]  # GcsNodeState.ALIVE

    def wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while len(self.alive_nodes()) < count:
            assert time.time() < deadline, f"the cluster never had {count} alive nodes"
            time.sleep(0.5)

    def restart_worker(self, name: str) -> Node:
        """A new worker node (after the old one was killed) in a temp folder beside the head's;
        the old one's is kept (its logs name the pids of its Ray workers)."""
        self.worker = _start_node(name, ["--address", self.address], self.head.temp_dir.parent / name)
        return self.worker

    def node_of(self, pid: int) -> str | None:
        for node in (self.head, self.worker):
            if pid in node.worker_pids_logged():
                return node.name
        return None

    def pending_demand(self) -> list[str]:
        """Tasks and actors waiting for resources the cluster has not got free."""
        from ray.autoscaler.v2.sdk import get_cluster_status

        try:
            demands = get_cluster_status(self.address, timeout=10).resource_demands.ray_task_actor_demand
        except Exception:  # the GCS busy: no evidence either way
            return []
        return [str(b) for d in demands for b in d.bundles_by_count]

    def map_actors(self) -> str:
        """Ray Data's map actors that are not dead, oldest first (a recipe's actor pools start in
        step order): ``node:pid:state`` each, for the report."""
        import asyncio

        from ray._raylet import GcsClient

        async def actor_table(client: GcsClient) -> dict:
            return await client.async_get_all_actor_info(timeout=10)  # a future of the running loop

        try:
            client = GcsClient(address=self.address)
            names = {n.node_id: ("head" if n.is_head_node else "worker") for n in client.get_all_node_info(timeout=10).values()}
            infos = asyncio.run(actor_table(client)).values()
        except Exception as exc:  # diagnostics only
            return f"(actor table: {type(exc).__name__}: {exc})"
        states = {0: "unready", 1: "pending", 2: "alive", 3: "restarting", 4: "dead"}
        rows = sorted((a.start_time, names.get(a.node_id, "?"), a.pid, states.get(a.state, a.state))
                      for a in infos if "MapWorker" in a.class_name + a.repr_name and a.state != 4)
        return ", ".join(f"{node}:{pid}:{state}" for _, node, pid, state in rows)

    def status(self) -> str:
        """``ray status`` (resources, pending demands), for failure messages."""
        try:
            done = subprocess.run([*_ray_cli(), "status", "--address", self.address], capture_output=True,
                                  text=True, timeout=60, env=_env())
            return done.stdout[done.stdout.find("Resources"):] or done.stderr[-1000:]
        except Exception as exc:  # diagnostics only
            return f"(ray status failed: {exc})"


def _ray_cli() -> list[str]:
    ray = Path(sys.executable).with_name("ray")
    return [str(ray)] if ray.exists() else [sys.executable, "-m", "ray.scripts.scripts"]


def _start_node(name: str, args: list[str], temp: Path) -> Node:
    """``ray start --block``, its own session; returns once the node runs. Every port is this
    node's own (two nodes on one host: node manager, object manager, agents, metrics)."""
    log = temp.parent / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*_ray_cli(), "start", "--block", *args, "--temp-dir", str(temp), "--num-cpus", "1", "--num-gpus", "0",
             "--disable-usage-stats", "--object-store-memory", str(200 * 2**20),
             "--node-manager-port", str(_free_port()), "--object-manager-port", str(_free_port()),
             "--dashboard-agent-listen-port", str(_free_port()), "--dashboard-agent-grpc-port", str(_free_port()),
             "--metrics-export-port", str(_free_port()), "--runtime-env-agent-port", str(_free_port())],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=_env(), cwd=ROOT,
        )
    node = Node(name, proc, temp)
    deadline = time.time() + 120
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.time() > deadline:
            node.kill()
            raise RuntimeError(f"ray start ({name}) failed:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)
    return node


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A loopback S3 API server (moto's ``moto_server``) for the two-node run's work dir; the
    nodes and the driver get its address as ``AWS_ENDPOINT_URL`` (with the fake keys of ENV)."""
    if shutil.which("moto_server") is None:
        pytest.skip("moto_server (pip install 'moto[server]') is needed for the work dir in object storage")
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        ENV.update(AWS_ENDPOINT_URL=endpoint, AWS_DEFAULT_REGION="us-east-1")
        import s3fs

        fs = s3fs.S3FileSystem(key=ENV["AWS_ACCESS_KEY_ID"], secret=SECRET_AWS, client_kwargs={"endpoint_url": endpoint})
        fs.mkdir(BUCKET)
        yield fs


@contextlib.contextmanager
def two_node_cluster() -> Iterator[Cluster]:
    """A head and a worker node (``ray start --block``, one logical CPU each) on this machine,
    stopped by PID on exit (SIGTERM, then SIGKILL to what is left of each node's session)."""
    root = Path(tempfile.mkdtemp(prefix="lrc-", dir="/tmp"))  # short: Unix socket paths < 108 bytes
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes: list[Node] = []
    made = None
    try:
        # the head's minimal dashboard process takes --dashboard-port with no retries: a free one
        nodes.append(_start_node("head", ["--head", "--port", str(port), "--include-dashboard=false",
                                          "--dashboard-port", str(_free_port())], root / "head"))
        nodes.append(_start_node("worker", ["--address", address], root / "worker"))
        made = Cluster(address, *nodes)
        made.wait_for_nodes(2)
        yield made
    finally:
        if made is not None and made.worker not in nodes:  # started since (a restart after a loss)
            nodes.append(made.worker)
        for node in reversed(nodes):  # `ray start --block` stops its node on SIGTERM; then SIGKILL what is left
            stop_node(node)
        for secret in (SECRET_AWS, SECRET_HF):  # Ray's own logs: reported, not the product's files
            logs = [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
            print(f"ray session files holding {secret[:8]}...: {len(logs)} {[p.name for p in logs][:5]}")
        shutil.rmtree(root, ignore_errors=True)


def stop_node(node: Node) -> None:
    if node.proc.poll() is None:
        node.proc.send_signal(signal.SIGTERM)
    deadline = time.time() + 10
    while node.processes() and time.time() < deadline:
        time.sleep(0.3)
    node.kill(signal.SIGKILL)
    node.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(s3):
    pytest.importorskip("ray.data")
    with two_node_cluster() as made:
        yield made


@pytest.fixture(scope="module")
def manifest(test_media, tmp_path_factory):
    from tests.test_sameness import two_video_manifest

    return two_video_manifest(test_media, tmp_path_factory.mktemp("cluster-videos"))


def _run_cli(out: Path, manifest: Path, *extra: str) -> subprocess.Popen:
    """The CLI in its own session; its output goes to files beside ``out`` (a pipe left
    unread would fill and block the driver, which looks like a stall)."""
    WRITTEN.append(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    logs = [out.parent / f"{out.name}-{len(WRITTEN)}.{kind}" for kind in ("stdout", "stderr")]
    with open(logs[0], "w") as stdout, open(logs[1], "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lomo_datasets.cli", "run", "livecc-sft", "--videos", str(manifest), "--out", str(out), *RECIPE, *extra],
            stdout=stdout, stderr=stderr, text=True, cwd=ROOT, env=_env(), start_new_session=True,
        )
    proc.logs = logs
    return proc


def _finish(proc: subprocess.Popen, timeout: float = RUN_TIMEOUT) -> tuple[int | None, str, str]:
    """(returncode, stdout, stderr); returncode None when the run hung (it is then killed)."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc.pid)
        proc.wait()
        code = None
    return code, proc.logs[0].read_text(errors="replace"), proc.logs[1].read_text(errors="replace")


def _parts(out: Path) -> list[Path]:
    return list(out.glob(".lomo-work/ray-*/part-*.parquet"))


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory) -> dict[str, bytes]:
    """The local runner's published files (one process)."""
    out = tmp_path_factory.mktemp("cluster-local") / "out"
    started = time.time()
    code, _, stderr = _finish(_run_cli(out, manifest))
    assert code == 0, stderr[-3000:]
    print(f"local run: {time.time() - started:.1f}s")
    files = published_files(out)
    assert any(name.startswith("data/") and name.endswith(".parquet") for name in files)
    assert len(files["livecc_clips.jsonl"].decode().splitlines()) >= 2  # kept rows to compare
    return files


def _parts_pids(parts: list) -> dict[str, set[int]]:
    """Per model step (hidden column ``_lomo_pid_<step>``): the worker pids that made its rows
    (``parts``: local part files, or open files of the parts in the bucket)."""
    import pyarrow.parquet as pq

    pids: dict[str, set[int]] = {}
    for part in parts:
        table = pq.read_table(part)
        for name in table.column_names:
            if name.startswith("_lomo_pid_"):
                pids.setdefault(name, set()).update(p for p in table[name].to_pylist() if p is not None)
    return pids


class Watch(threading.Thread):
    """While a run goes on: the number of alive nodes every half second, and whether a Ray
    worker of either node holds the fake secrets in its environment."""

    def __init__(self, cluster: Cluster):
        super().__init__(daemon=True)
        self.cluster, self.stop, self.alive = cluster, threading.Event(), []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.alive.append(len(self.cluster.alive_nodes()))
            except Exception:  # the GCS busy: skip a sample
                pass
            for node in (self.cluster.head, self.cluster.worker):
                for pid in node.workers():
                    try:
                        if SECRET_AWS.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                            SEEN[f"secret in a {node.name} worker's environment"] = True
                    except OSError:
                        pass
            self.stop.wait(0.5)


def test_a_two_node_run_publishes_what_the_local_runner_publishes(cluster, s3, manifest, reference, tmp_path):
    """With the work dir in the bucket (``--work-dir s3://...``): the nodes share no work folder;
    each worker puts its part files into the bucket and the driver reads them back."""
    assert len(cluster.alive_nodes()) == 2, "runs before the worker node is killed"
    out = tmp_path / "ray"
    watch = Watch(cluster)
    watch.start()
    started = time.time()
    work = f"s3://{BUCKET}/work/two-node"
    code, _, stderr = _finish(_run_cli(out, manifest, "--executor", "ray", "--ray-address", cluster.address, "--work-dir", work))
    watch.stop.set()
    watch.join()
    elapsed = time.time() - started
    assert code is not None, f"the run hung for {RUN_TIMEOUT}s:\n{stderr[-3000:]}\n{cluster.status()}"
    assert code == 0, stderr[-3000:]
    assert watch.alive and set(watch.alive) == {2}, watch.alive  # both nodes alive throughout
    assert published_files(out) == reference
    # where the model steps ran: each recorded pid is a Ray worker of one of the two nodes
    parts = s3.glob(f"{BUCKET}/work/two-node/ray-*/part-*.parquet")
    assert parts and not (out / ".lomo-work").exists()
    for part in s3.find(f"{BUCKET}/work"):
        assert SECRET_AWS.encode() not in s3.cat_file(part) and SECRET_HF.encode() not in s3.cat_file(part), part
    per_step = {step: sorted({cluster.node_of(pid) or "?" for pid in pids})
                for step, pids in _parts_pids([s3.open(p, "rb") for p in parts]).items()}
    print(f"two-node run: {elapsed:.1f}s; alive-node samples {sorted(set(watch.alive))}; model steps by node {per_step}")
    assert per_step and all("?" not in nodes for nodes in per_step.values()), per_step
    assert {n for nodes in per_step.values() for n in nodes} == {"head", "worker"}, per_step


class LostNodeNotHandled(AssertionError):
    """After the node loss the run neither finished nor stopped with the product's own
    one-line error: it stalled (waits for capacity the cluster no longer has) or it stopped
    with Ray's error as an "unexpected" one."""


@dataclass
class NodeLoss:
    out: Path
    outcome: str  # "finished", "error", "stalled", "hung"
    code: int | None
    stderr: str
    report: str
    status: str = ""


@pytest.fixture(scope="module")
def node_loss(cluster, manifest, reference, tmp_path_factory) -> NodeLoss:
    return lose_the_worker_node(cluster, manifest, tmp_path_factory.mktemp("cluster-loss") / "ray")


def lose_the_worker_node(cluster: Cluster, manifest: Path, out: Path) -> NodeLoss:
    """Run on both nodes; SIGKILL every process of the worker node's session once it runs
    workers for this run and they have had 8 s to take a block (or when the first block is
    written); then watch the run to its end or until it stalls.
    ``benchmarks/bench_node_loss.py`` repeats this."""
    started = time.time()
    proc = _run_cli(out, manifest, "--executor", "ray", "--ray-address", cluster.address)
    before = cluster.worker.worker_pids_logged()
    seen = None
    while proc.poll() is None and time.time() - started < RUN_TIMEOUT:
        if seen is None and cluster.worker.worker_pids_logged() - before:
            seen = time.time()
        if _parts(out) or (seen and time.time() - seen > 8):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before the worker node could be killed"
    parts_at_kill, busy, actors = len(_parts(out)), len(cluster.worker.workers()), cluster.map_actors()
    killed = cluster.worker.kill()
    killed_at = time.time()
    report = (f"killed the worker node ({len(killed)} processes, {busy} of them Ray workers) {killed_at - started:.1f}s into "
              f"the run, {parts_at_kill} of {BLOCKS} blocks written; map actors then (oldest first): {actors}")
    dead_at, waiting_since, parts_seen, used, outcome, status = None, None, parts_at_kill, {}, None, ""
    while proc.poll() is None:
        now = time.time()
        if dead_at is None and len(cluster.alive_nodes()) == 1:
            dead_at = now
        if dead_at is not None:
            for pid in cluster.head.workers():  # reported: what the head's workers do meanwhile
                if st := _stat(pid):
                    used[pid] = max(used.get(pid, 0.0), st[3])
            demand, parts_now = cluster.pending_demand(), len(_parts(out))
            if demand and parts_now == parts_seen:
                if waiting_since is None:
                    waiting_since, cpu_then = now, sum(used.values())
                elif now - waiting_since >= STALL_WINDOW:
                    outcome, status = "stalled", f"map actors: {cluster.map_actors()}\n{cluster.status()}"
                    report += (f"; the node was marked dead {dead_at - killed_at:.0f}s after the kill; then for "
                               f"{now - waiting_since:.0f}s tasks/actors waited for resources ({', '.join(demand)}) "
                               f"and no block was written (the head's workers used {sum(used.values()) - cpu_then:.1f} CPU s)")
                    break
            else:
                waiting_since, parts_seen = None, parts_now
        if now - started > RUN_TIMEOUT:
            outcome, status = "hung", cluster.status()
            break
        time.sleep(1.0)
    code, _, stderr = _finish(proc, timeout=0.1 if outcome else RUN_TIMEOUT)
    outcome = outcome or {0: "finished", None: "hung"}.get(code, "error")
    report += f"; run: {outcome} (exit {code}) after {time.time() - started:.1f}s"
    if outcome == "error":
        report += f": {stderr.strip().splitlines()[-1][:300] if stderr.strip() else '(no stderr)'}"
    print(report)
    return NodeLoss(out, outcome, code, stderr, report, status)


def test_a_lost_worker_node_does_not_stall_the_run(node_loss, reference):
    """The run finishes on the head, or stops with the product's one-line error."""
    if node_loss.outcome in ("stalled", "hung"):
        raise LostNodeNotHandled(f"{node_loss.report}\n{node_loss.stderr[-2000:]}\n{node_loss.status}")
    print(f"lost node: {node_loss.outcome}: {node_loss.report}")
    if node_loss.outcome == "error":
        last = node_loss.stderr.strip().splitlines()[-1]
        if not last.startswith("lomo-datasets: error:") or "unexpected" in last:
            raise LostNodeNotHandled(f"{node_loss.report}\nnot the product's own error: {last}")
    else:
        assert published_files(node_loss.out) == reference  # no row lost, none doubled


def test_after_a_lost_worker_node_the_same_command_publishes_every_row_once(node_loss, cluster, manifest, reference):
    """Whatever the first run did, the same command on the surviving head publishes the local
    run's rows (blocks written before the loss are reused, none is doubled)."""
    started = time.time()
    code, _, stderr = _finish(_run_cli(node_loss.out, manifest, "--executor", "ray", "--ray-address", cluster.address))
    print(f"{node_loss.report}; rerun: exit {code} after {time.time() - started:.1f}s")
    assert code == 0, stderr[-3000:]
    assert len(cluster.alive_nodes()) == 1
    assert published_files(node_loss.out) == reference  # no row lost, none doubled


def test_no_credential_is_written_to_out_or_the_work_dir(reference):
    """Fake AWS_SECRET_ACCESS_KEY and HF_TOKEN were in every run's environment and in the
    Ray nodes' (so in their workers'): no file of any run's --out (work dir inside) holds them."""
    assert WRITTEN, "no run wrote anything"
    scanned = 0
    for folder in WRITTEN:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                scanned += 1
                for secret in (SECRET_AWS, SECRET_HF):
                    assert secret.encode() not in data, f"{secret[:12]}... written to {path}"
    print(f"secrets: {scanned} files in {len(WRITTEN)} run folders hold neither; seen: {SEEN}")
    assert scanned > 20
