"""Scaling on one node: the local runner with 1 and 2 processes vs the Ray executor.

The same rows (``--rows`` short English speech videos made with espeak-ng, each a different
sentence, a few seconds long) through the same steps (probe + ASR with the embedded Whisper
tiny.en, greedy) for every configuration:

- ``local-1`` / ``local-2``: ``Runner`` with ``--num-proc`` 1 / 2 (CPU threads split between
  the workers, the runner's default; one process runs CTranslate2's default 4 threads);
- ``local-1-1thread``: one process with one thread (``asr.cpu_threads=1``), the baseline for
  how the step scales with processes alone;
- ``local-2-4threads``: 2 processes that each run CTranslate2's default 4 threads (what the
  runner did before it split the threads: 8 threads on the cores that 1 process already fills);
- ``ray-1`` / ``ray-2``: the Ray executor with 1 / 2 Whisper actors on a local Ray instance
  started for the run; "wall" includes Ray's start, "run" is the run alone.

Each configuration runs in its own process (no model or cache shared between them), one after
the other; the table shows wall time, the ratio to ``local-1``, the seconds of the ASR step
(local runs), the CPU seconds of all its processes (local workers included; not measured under Ray),
the model loads per worker and the load average before and after, because the cores may be
shared with other work: wall times only compare at a similar load, CPU seconds always. Usage::

    python benchmarks/bench_scale.py [--rows 40] [--configs local-1,local-2,ray-1,ray-2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "red", "green", "blue", "small", "large", "quiet", "bright", "early", "late", "warm",
    "cold", "happy", "busy", "calm", "fast", "slow",
)
NOUNS = ("river", "garden", "kitchen", "station", "market", "forest", "library", "harbor", "bridge", "school")

CONFIGS = {
    "local-1": {"executor": "local", "num_proc": 1},
    "local-1-1thread": {"executor": "local", "num_proc": 1, "cpu_threads": 1},
    "local-2": {"executor": "local", "num_proc": 2},
    "local-2-4threads": {"executor": "local", "num_proc": 2, "cpu_threads": 4},
    "ray-1": {"executor": "ray", "num_proc": 1},
    "ray-2": {"executor": "ray", "num_proc": 2},
}


def make_rows(folder: Path, rows: int) -> Path:
    """``rows`` videos, each saying a different sentence; a text file listing them."""
    from lomo_datasets.media.samples import make_speech_video

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(rows):
        path = folder / f"speech_{i:03d}.mp4"
        if not path.exists():
            a, b, n = WORDS[i % len(WORDS)], WORDS[(i * 7 + 3) % len(WORDS)], NOUNS[(i * 3) % len(NOUNS)]
            text = f"Video number {i + 1}. We walk to the {a} {n} and look at the {b} sky for a while."
            tmp = path.with_suffix(".partial.mp4")
            make_speech_video(tmp, text)
            os.replace(tmp, path)
        paths.append(path)
    listing = folder / "videos.txt"
    listing.write_text("\n".join(str(p) for p in paths) + "\n")
    return listing


def run_one(name: str, listing: Path, work: Path) -> dict:
    """One configuration in this process; returns its measurements."""
    from lomo_datasets.execution.recipes import make_runner
    from lomo_datasets.processors.asr import Transcribe
    from lomo_datasets.processors.ingest import Probe, ingest

    config = CONFIGS[name]
    started = time.perf_counter()
    ds = ingest(listing)
    steps = [Probe(), Transcribe(model="embedded:whisper-tiny.en", temperature=0.0, cpu_threads=config.get("cpu_threads", 0))]
    runner = make_runner(config["executor"], work, num_proc=config["num_proc"])
    ray_start = 0.0
    if config["executor"] == "ray":
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
        ray_start = time.perf_counter() - started
    run_started = time.perf_counter()
    result = runner.run(ds, steps)
    run = time.perf_counter() - run_started
    wall = time.perf_counter() - started
    texts = sum(1 for segments in result.dataset["segments"] if segments)
    return {
        "config": name, "rows": len(result.dataset), "transcribed": texts, "wall": wall, "run": run,
        "ray_start": ray_start, "asr": result.timings.get("asr"), "loads": result.model_loads.get("asr", []),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--configs", default="local-1,local-1-1thread,local-2,local-2-4threads,ray-1,ray-2")
    parser.add_argument("--media", default=str(Path(tempfile.gettempdir()) / "lomo-bench-scale"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    listing = make_rows(Path(args.media) / f"rows-{args.rows}", args.rows)
    if args.one:
        print(json.dumps(run_one(args.one, listing, Path(args.work))))
        return
    results = []
    for name in args.configs.split(","):
        before = os.getloadavg()[0]
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as work:
            done = subprocess.run(
                [sys.executable, __file__, "--rows", str(args.rows), "--media", args.media, "--one", name, "--work", work],
                capture_output=True, text=True,
            )
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["load"] = f"{before:.1f}->{os.getloadavg()[0]:.1f}"
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the run's processes, workers included
        cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
        # Ray's workers are not this process's children: their CPU time is not seen
        result["cpu"] = None if CONFIGS[name]["executor"] == "ray" else cpu
        results.append(result)
        print(f"{name}: {result['wall']:.1f}s", file=sys.stderr)
    base = next((r for r in results if r["config"] == "local-1"), None)
    print(f"\n{args.rows} rows, probe + ASR (embedded Whisper tiny.en, greedy), {os.cpu_count()} cores\n")
    header = f"{'config':<18}{'rows':>5}{'wall s':>8}{'run s':>8}{'ray start s':>12}{'asr s':>7}{'cpu s':>7}{'x local-1 (wall/run)':>22}  {'model loads/worker':<20}{'load avg':>12}"
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = f"{r['wall'] / base['wall']:.2f} / {r['run'] / base['run']:.2f}" if base else "-"
        asr = f"{r['asr']:.1f}" if r["asr"] is not None else "-"
        start = f"{r['ray_start']:.1f}" if r["ray_start"] else "-"
        cpu = f"{r['cpu']:.1f}" if r["cpu"] is not None else "-"
        print(
            f"{r['config']:<18}{r['rows']:>5}{r['wall']:>8.1f}{r['run']:>8.1f}{start:>12}{asr:>7}{cpu:>7}{ratio:>22}  "
            f"{','.join(map(str, r['loads'])) or '-':<20}{r['load']:>12}"
        )


if __name__ == "__main__":
    main()
