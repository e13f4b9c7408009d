"""A worker node lost mid-run, again and again: how often does the run still finish with the
local runner's rows?

The scenario of tests/test_ray_cluster.py (``lose_the_worker_node``), repeated ``--kills``
times on one two-node cluster (``ray start --block`` head and worker on this machine, one
logical CPU each, stopped by PID; never ``ray stop``): ``run livecc-sft --embedded --executor
ray --ray-address HEAD`` on the two English test videos (two blocks), SIGKILL to every process
of the worker node's session once it runs workers for the run, then the run is watched to its
end. Outcomes: ``finished`` (exit 0; its published files are compared with the local run's),
``error`` (the product's one-line error; the same command is then run again on the head and its
files compared), ``stalled`` / ``hung`` (the test's definitions). A new worker node joins
before the next kill. One line per kill, then a table. Usage::

    python benchmarks/bench_node_loss.py [--kills 10] [--media DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import media as M  # noqa: E402
from tests.test_ray_cluster import (  # noqa: E402
    _finish, _run_cli, lose_the_worker_node, stop_node, two_node_cluster,
)
from tests.test_sameness import published_files, two_video_manifest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--media", default=str(Path(tempfile.gettempdir()) / "lomo-bench-node-loss"))
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    media = Path(args.media)
    media.mkdir(parents=True, exist_ok=True)
    manifest = two_video_manifest(M.make_all(media / "videos"), media)
    work = Path(tempfile.mkdtemp(prefix="bench-node-loss-"))
    started = time.time()
    code, _, stderr = _finish(_run_cli(work / "local", manifest))
    if code != 0:
        raise SystemExit(f"the local run failed:\n{stderr[-3000:]}")
    reference = published_files(work / "local")
    print(f"local run: {time.time() - started:.1f}s", file=sys.stderr, flush=True)
    rows = []
    with contextlib.redirect_stdout(sys.stderr), two_node_cluster() as cluster:
        for kill in range(1, args.kills + 1):
            if kill > 1:
                stop_node(cluster.worker)  # reaps the killed session's leader
                cluster.restart_worker(f"worker{kill}")
                cluster.wait_for_nodes(2)
            load = os.getloadavg()[0]
            loss = lose_the_worker_node(cluster, manifest, work / f"kill{kill}")  # its report goes to stderr
            same = rerun = None
            if loss.outcome == "finished":
                same = published_files(loss.out) == reference
            elif loss.outcome == "error":
                again = time.time()
                code, _, stderr = _finish(_run_cli(loss.out, manifest, "--executor", "ray", "--ray-address", cluster.address))
                rerun = f"exit {code} in {time.time() - again:.0f}s"
                same = code == 0 and published_files(loss.out) == reference
            seconds = float(loss.report.rsplit(" after ", 1)[1].split("s", 1)[0])
            last = loss.stderr.strip().splitlines()[-1][:200] if loss.outcome == "error" and loss.stderr.strip() else ""
            rows.append((kill, loss.outcome, seconds, same, rerun, f"{load:.1f}->{os.getloadavg()[0]:.1f}", last))
            print(f"kill {kill}: {loss.report}; same rows: {same}; rerun: {rerun or '-'}", file=sys.stderr, flush=True)
    print(f"\n{args.kills} kills of the worker node mid-run (livecc-sft --embedded, 2 blocks, 2 nodes of 1 CPU); "
          f"{os.cpu_count()} cores\n")
    header = f"{'kill':>4}  {'outcome':<9}{'run s':>7}  {'same rows':<10}{'rerun':<16}{'load (1 min)':>13}  error line"
    print(header)
    print("-" * len(header))
    for kill, outcome, seconds, same, rerun, load, last in rows:
        print(f"{kill:>4}  {outcome:<9}{seconds:>7.1f}  {str(same):<10}{rerun or '-':<16}{load:>13}  {last}")
    counts = {o: sum(1 for r in rows if r[1] == o) for o in ("finished", "error", "stalled", "hung")}
    print(f"\n{', '.join(f'{o}: {n}' for o, n in counts.items())}; same rows (finished, or after the rerun): "
          f"{sum(1 for r in rows if r[3])} of {len(rows)}")


if __name__ == "__main__":
    main()
