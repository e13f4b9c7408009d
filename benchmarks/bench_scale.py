"""Scaling on one node: rows/s of the ASR step and of one LLM step, by CPU threads per model
call and by processes, and the local runner vs the Ray executor.

The output does not depend on the schedule (docs/DESIGN.md, "Sameness"): CPU threads per model
call are a setting (``cpu_threads``, default 1) and batches are cut per group of input rows
(``--group-size``), so ``--num-proc`` is the way to use more cores. This measures what that
costs and gains:

- ``asr-1p-1t`` .. ``asr-2p-1t``: probe + ASR (embedded Whisper tiny.en, greedy) on ``--rows``
  short English speech videos (espeak-ng, a different sentence each), with 1 or 2 processes
  (``--num-proc``) and 1 or 2 CPU threads per model call (``asr.cpu_threads``);
- ``llm-1p-1t`` .. ``llm-2p-1t``: the ``compress`` step (the embedded Qwen2.5-Coder-1.5B on
  CTranslate2, the demo's short outputs) on ``--llm-rows`` of those transcripts, made once
  beforehand; groups of ``--llm-group`` rows, so 2 processes get work;
- ``ray-1`` / ``ray-2``: probe + ASR on the Ray executor with 1 / 2 Whisper actors on a local
  Ray instance started for the run; "wall" includes Ray's start, "run" is the run alone.

Each configuration runs in its own process (no model or cache shared between them), one after
the other; the table shows the step's seconds and rows/s, the ratio to the same step's
1-process 1-thread run, the CPU seconds of all its processes (local workers included; not
measured under Ray), and the 1-minute load average before and after (``os.getloadavg``): the
cores may be shared with other work, so a ratio only means what it says at the load beside it.
Usage::

    python benchmarks/bench_scale.py [--rows 32] [--llm-rows 8] [--configs asr-1p-1t,asr-2p-1t,...]

Driver memory (``--driver-memory``): does the driver's memory stay flat as the rows grow? A
cheap step, the ``probe`` recipe (PyAV reads each file's packets; no model), runs through the
real command line (``lomo-datasets -q run probe --videos LIST --out OUT [--executor ray]``)
over ``--rows`` rows (a comma list, default ``1000,10000``), each row its own copy of one tiny
video (0.4 s, 32x32; ingest keeps one row per inode, so hard links would be one row):

- ``cheap-local``: the local runner, ``--num-proc 1`` (the step runs in the driver process);
- ``cheap-local-2p``: the local runner, ``--num-proc 2`` (the driver only coordinates);
- ``cheap-ray``: ``--executor ray --ray-address local`` (a Ray instance of its own, started by
  the run, never one that ``ray start`` left running), ``--num-proc 1``.

``--group-size N`` passes the run's ``--group-size`` (default 16; under Ray a block is one
group, so it sets the number of blocks). Each (config, rows) runs in a process of its own.
"peak RSS MB" is that process's ``ru_maxrss`` (``RUSAGE_SELF``: the driver alone, not its
workers, not Ray's raylet, GCS or workers); "anon MB" is the peak of its anonymous memory
(``RssAnon``, sampled every 20 ms: the heap, without the mapped files and shared object-store
pages that ``ru_maxrss`` also counts); "start MB" is the RSS after importing the command line,
before the run; "anon peak in" is the phase where the anonymous memory peaked: ``ingest``,
``build steps``, ``run`` (the runner's run; under Ray split into ``inputs`` (the input blocks written to the
work dir, where Ray's tasks read them), ``ray start``, ``stream``: ``_stream``, with
``stream: execute`` (Ray Data running the steps, iterated), and ``assemble``: the part files
read back one at a time; code before the streaming driver had ``stream: from_arrow``, the
input blocks handed to Ray from the driver, and ``take_all``), ``publish`` (masking, accounting, writing the folder), ``summary`` and
``other`` (the rest). The stderr line of each run gives every phase's peak. "run s" is the
runner's ``run`` ("(Ray up)": the part of it Ray took to start), "rows/s" the rows over it,
"wall s" the whole command; the load average (1 minute) is taken before and after each run. A
last line per config gives the growth of peak RSS per 1000 rows between the smallest and the
largest count. ``--rows`` of 1000 or more (or a comma list) with the default configs selects
this mode too. Usage::

    python benchmarks/bench_scale.py --driver-memory [--rows 1000,10000,100000] [--configs cheap-local,cheap-ray]
    python benchmarks/bench_scale.py --rows 10000      # the same mode, 10000 rows, cheap-local and cheap-ray
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
from typing import Any

WORDS = (
    "red", "green", "blue", "small", "large", "quiet", "bright", "early", "late", "warm",
    "cold", "happy", "busy", "calm", "fast", "slow",
)
NOUNS = ("river", "garden", "kitchen", "station", "market", "forest", "library", "harbor", "bridge", "school")

CONFIGS = {
    "asr-1p-1t": {"executor": "local", "num_proc": 1, "cpu_threads": 1},
    "asr-1p-2t": {"executor": "local", "num_proc": 1, "cpu_threads": 2},
    "asr-2p-1t": {"executor": "local", "num_proc": 2, "cpu_threads": 1},
    "asr-2p-2t": {"executor": "local", "num_proc": 2, "cpu_threads": 2},
    "llm-1p-1t": {"executor": "local", "num_proc": 1, "cpu_threads": 1, "llm": True},
    "llm-1p-2t": {"executor": "local", "num_proc": 1, "cpu_threads": 2, "llm": True},
    "llm-2p-1t": {"executor": "local", "num_proc": 2, "cpu_threads": 1, "llm": True},
    "ray-1": {"executor": "ray", "num_proc": 1, "cpu_threads": 1},
    "ray-2": {"executor": "ray", "num_proc": 2, "cpu_threads": 1},
}
DEFAULT_CONFIGS = "asr-1p-1t,asr-1p-2t,asr-2p-1t,llm-1p-1t,llm-1p-2t,llm-2p-1t"
#: ``--driver-memory``: the probe recipe through the command line, by executor.
CHEAP_CONFIGS = {
    "cheap-local": {"executor": "local", "num_proc": 1},
    "cheap-local-2p": {"executor": "local", "num_proc": 2},
    "cheap-ray": {"executor": "ray", "num_proc": 1},
}
DEFAULT_CHEAP_CONFIGS = "cheap-local,cheap-ray"
DEFAULT_CHEAP_ROWS = "1000,10000"
#: The ASR configs' groups: small enough that 2 processes share the rows evenly.
ASR_GROUP = 4


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


def _asr_steps(threads: int) -> list:
    from lomo_datasets.processors.asr import Transcribe
    from lomo_datasets.processors.ingest import Probe

    return [Probe(), Transcribe(model="embedded:whisper-tiny.en", temperature=0.0, cpu_threads=threads)]


def prepare_llm_rows(listing: Path, rows: int, folder: Path) -> Path:
    """The first ``rows`` videos through probe + ASR once (saved), the LLM configs' input."""
    from lomo_datasets.execution.pipeline import Runner
    from lomo_datasets.processors.ingest import ingest

    target = folder / f"llm-input-{rows}"
    if not target.exists():
        result = Runner(folder / "llm-input-work", group_size=ASR_GROUP).run(ingest(listing).select(range(rows)), _asr_steps(1))
        result.dataset.save_to_disk(str(target))
    return target


def run_one(name: str, listing: Path, work: Path, llm_input: Path | None, llm_group: int) -> dict:
    """One configuration in this process; returns its measurements."""
    from datasets import load_from_disk

    from lomo_datasets.execution.recipes import make_runner
    from lomo_datasets.processors.compress import Compress
    from lomo_datasets.processors.ingest import ingest

    config = CONFIGS[name]
    started = time.perf_counter()
    if config.get("llm"):
        ds = load_from_disk(str(llm_input))
        # what `run lomo --embedded` gives the step: the embedded model and its settings
        embedded = {**Compress.embedded_settings, Compress.embedded_setting: Compress.embedded_model}
        steps = [Compress(**embedded, cpu_threads=config["cpu_threads"])]
        step, group = "compress", llm_group
    else:
        ds = ingest(listing)
        steps = _asr_steps(config["cpu_threads"])
        step, group = "asr", ASR_GROUP
    runner = make_runner(config["executor"], work, num_proc=config["num_proc"], group_size=group)
    ray_start = 0.0
    if config["executor"] == "ray":
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
        ray_start = time.perf_counter() - started
    run_started = time.perf_counter()
    result = runner.run(ds, steps)
    run = time.perf_counter() - run_started
    wall = time.perf_counter() - started
    column = "summary" if config.get("llm") else "segments"
    done = sum(1 for value in result.dataset[column] if value)
    return {
        "config": name, "rows": len(result.dataset), "done": done, "wall": wall, "run": run,
        "ray_start": ray_start, "step": step,
        # Ray streams the blocks through all steps at once: the run's time, not the step's worker seconds
        "step_s": result.timings.get(step, run) if result.timings_kind == "wall" else run,
        "loads": result.model_loads.get(step, []),
    }


# --------------------------------------------------------------------------------------------
# --driver-memory: the driver's memory as the rows grow
# --------------------------------------------------------------------------------------------


def make_cheap_rows(folder: Path, rows: int) -> Path:
    """A text file listing ``rows`` copies of one tiny video, each a file of its own (ingest
    keeps one row per device and inode: hard links of one file would be one row)."""
    import shutil

    from lomo_datasets.media.samples import write_video

    folder.mkdir(parents=True, exist_ok=True)
    seed = folder / "seed.mp4"
    if not seed.exists():
        write_video(folder / "seed.partial.mp4", duration=0.4, size=(32, 32), fps=5)
        os.replace(folder / "seed.partial.mp4", seed)
    files = folder / "files"
    files.mkdir(exist_ok=True)
    paths = []
    for i in range(rows):
        path = files / f"v{i:07d}.mp4"
        if not path.exists():
            shutil.copyfile(seed, path)
        paths.append(str(path))
    listing = folder / f"videos-{rows}.txt"
    listing.write_text("\n".join(paths) + "\n")
    return listing


def _memory() -> tuple[int, int]:
    """(RSS, anonymous RSS) of this process in bytes, from /proc/self/status."""
    rss = anon = 0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
    return rss, anon


class _Phases:
    """Which phase of the run this process is in (by wrapping the functions that make them),
    and the peak anonymous memory and the seconds of each, sampled by a thread."""

    def __init__(self, interval: float = 0.02):
        import threading

        self.stack = ["other"]  # outside the wrapped phases: argument parsing, building steps, printing
        self.peak: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.note()
            self._stop.wait(self.interval)

    def note(self) -> None:
        phase = self.stack[-1]
        self.peak[phase] = max(self.peak.get(phase, 0), _memory()[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.note()

    def wrap(self, owner: Any, attr: str, phase: str) -> None:
        """Count the calls of ``owner.attr`` as ``phase`` (a name the code no longer has is
        skipped: the phase is then part of the one around it)."""
        original = getattr(owner, attr, None)
        if original is None:
            print(f"bench_scale: {getattr(owner, '__name__', owner)}.{attr} not found; phase {phase!r} not measured",
                  file=sys.stderr)
            return
        phases = self

        def wrapped(*args, **kwargs):
            phases.note()
            phases.stack.append(phase)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                phases.seconds[phase] = phases.seconds.get(phase, 0.0) + time.perf_counter() - started
                phases.note()
                phases.stack.pop()

        setattr(owner, attr, wrapped)


def run_cheap(name: str, listing: Path, work: Path, group_size: int | None = None) -> dict:
    """One ``--driver-memory`` configuration, in this process: the probe recipe through the
    command line; returns the driver's memory and times."""
    import contextlib
    import importlib

    phases = _Phases()
    from lomo_datasets import cli
    from lomo_datasets.execution import pipeline, recipes

    start_rss = _memory()[0]  # before the wrappers import Ray (the run imports it anyway)
    ingest_module = importlib.import_module("lomo_datasets.processors.ingest")
    phases.wrap(ingest_module, "ingest", "ingest")
    phases.wrap(recipes, "build_steps", "build steps")
    phases.wrap(pipeline.Runner, "run", "run")
    for attr, phase in (("mask_credentials", "publish"), ("_summarize", "summary")):
        phases.wrap(recipes, attr, phase)
    phases.wrap(recipes.accounting, "check", "publish")
    phases.wrap(recipes.outputs, "publish", "publish")
    config = CHEAP_CONFIGS[name]
    if config["executor"] == "ray":
        from lomo_datasets.execution import ray_executor

        phases.wrap(ray_executor.RayExecutor, "run", "run")
        phases.wrap(ray_executor.RayExecutor, "_connect", "ray start")
        phases.wrap(ray_executor.RayExecutor, "_stream", "stream")
        phases.wrap(ray_executor, "_assemble", "assemble")
        import ray.data

        if hasattr(ray_executor.RayExecutor, "_write_inputs"):  # the input blocks written to the work dir
            phases.wrap(ray_executor.RayExecutor, "_write_inputs", "inputs")
            phases.wrap(ray.data.Dataset, "iter_batches", "stream: execute")  # Ray Data runs the steps
        else:  # before: the input blocks handed to Ray from the driver, the written list collected
            phases.wrap(ray.data, "from_arrow", "stream: from_arrow")
            phases.wrap(ray.data.Dataset, "take_all", "stream: execute")
    phases.start()
    started = time.perf_counter()
    argv = ["-q", "run", "probe", "--videos", str(listing), "--out", str(work / "out"),
            "--executor", config["executor"], "--num-proc", str(config["num_proc"])]
    if config["executor"] == "ray":
        argv += ["--ray-address", "local"]  # a Ray instance of its own, never one `ray start` left running
    if group_size:
        argv += ["--group-size", str(group_size)]
    with contextlib.redirect_stdout(sys.stderr):  # the summary; this process's stdout is the JSON line
        status = cli.main(argv)
    wall = time.perf_counter() - started
    phases.stop()
    if status != 0:
        raise SystemExit(f"{name}: lomo-datasets {' '.join(argv)} exited with {status}")
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(str(p)).metadata.num_rows for p in (work / "out" / "data").glob("*.parquet"))
    top = max(phases.peak, key=phases.peak.get)
    return {
        "config": name, "rows": rows, "wall": wall, "run": phases.seconds.get("run", wall),
        "seconds": phases.seconds, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "start_rss": start_rss, "peak_anon": max(phases.peak.values()), "top_phase": top, "phase_peaks": phases.peak,
    }


def driver_memory(args: argparse.Namespace) -> None:
    """``--driver-memory``: every config at every row count, each in its own process; a table."""
    names = args.configs.split(",") if args.configs != DEFAULT_CONFIGS else DEFAULT_CHEAP_CONFIGS.split(",")
    unknown = [n for n in names if n not in CHEAP_CONFIGS]
    if unknown:
        raise SystemExit(f"--driver-memory: unknown config(s) {unknown}; use {', '.join(CHEAP_CONFIGS)}")
    counts = [int(n) for n in str(args.rows if args.rows is not None else DEFAULT_CHEAP_ROWS).split(",")]
    media = Path(args.media) / "cheap"
    if args.one:  # made by the parent
        print(json.dumps(run_cheap(args.one, media / f"videos-{counts[0]}.txt", Path(args.work), args.group_size)))
        return
    made = time.perf_counter()
    for count in counts:
        make_cheap_rows(media, count)
    print(f"rows made in {time.perf_counter() - made:.1f}s under {media}", file=sys.stderr, flush=True)
    results = []
    for count in counts:
        for name in names:
            before = os.getloadavg()[0]
            with tempfile.TemporaryDirectory(prefix="bench-scale-cheap-") as work:
                done = subprocess.run(
                    [sys.executable, __file__, "--driver-memory", "--rows", str(count), "--media", args.media,
                     "--one", name, "--work", work, *(["--group-size", str(args.group_size)] if args.group_size else [])],
                    capture_output=True, text=True,
                )
            if done.returncode != 0:
                print(f"{name} {count}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["load"] = f"{before:.1f}->{os.getloadavg()[0]:.1f}"
            results.append(result)
            print(f"{name} {count}: run {result['run']:.1f}s, wall {result['wall']:.1f}s, peak RSS "
                  f"{result['peak_rss'] / 2**20:.0f} MB, phases {json.dumps({k: round(v / 2**20) for k, v in result['phase_peaks'].items()})}, "
                  f"load {result['load']}", file=sys.stderr, flush=True)
    mb = 2**20
    print(f"\nDriver memory: the probe recipe through `lomo-datasets -q run probe` (PyAV reads every packet; no model) "
          f"over N copies of one 0.4 s 32x32 video; --group-size {args.group_size or 16}; {os.cpu_count()} cores; "
          f"MB = 2^20 bytes\n")
    header = (f"{'config':<15}{'rows':>7}{'run s':>8}{'(Ray up)':>9}{'rows/s':>8}{'wall s':>8}{'start MB':>9}{'peak RSS MB':>12}"
              f"{'anon MB':>9}  {'anon peak in':<13}{'load avg (1 min)':>17}")
    print(header)
    print("-" * len(header))
    for r in results:
        up = f"{r['seconds']['ray start']:.1f}" if "ray start" in r["seconds"] else "-"
        print(f"{r['config']:<15}{r['rows']:>7}{r['run']:>8.1f}{up:>9}{r['rows'] / r['run']:>8.0f}{r['wall']:>8.1f}"
              f"{r['start_rss'] / mb:>9.0f}{r['peak_rss'] / mb:>12.0f}{r['peak_anon'] / mb:>9.0f}  {r['top_phase']:<13}{r['load']:>17}")
    by_config: dict[str, list] = {}
    for r in results:
        by_config.setdefault(r["config"], []).append(r)
    print()
    for name, rs in by_config.items():
        if len(rs) > 1:
            a, b = rs[0], rs[-1]
            slope = (b["peak_rss"] - a["peak_rss"]) / mb / ((b["rows"] - a["rows"]) / 1000) if b["rows"] != a["rows"] else 0.0
            print(f"{name}: peak RSS {a['peak_rss'] / mb:.0f} MB at {a['rows']} rows -> {b['peak_rss'] / mb:.0f} MB at "
                  f"{b['rows']} rows ({slope:+.2f} MB per 1000 rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver-memory", action="store_true",
                        help="the driver's peak memory and rows/s of a cheap step by rows (see the docstring)")
    parser.add_argument("--rows", default=None, help="rows (default 32); with --driver-memory a comma list (default 1000,10000)")
    parser.add_argument("--group-size", type=int, default=None,
                        help="with --driver-memory: the run's --group-size (default 16; a Ray block is one group)")
    parser.add_argument("--llm-rows", type=int, default=8)
    parser.add_argument("--llm-group", type=int, default=4)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--media", default=str(Path(tempfile.gettempdir()) / "lomo-bench-scale"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    many = args.rows is not None and ("," in args.rows or int(args.rows) >= 1000)
    names = set(args.configs.split(","))
    if not args.driver_memory and names <= set(CHEAP_CONFIGS):  # only this mode's configs: this mode
        args.driver_memory = True
    if many and not args.driver_memory and not names - set(DEFAULT_CONFIGS.split(",")):
        # thousands of espeak-ng videos through ASR would take hours: that many rows is this mode's
        print("--rows of 1000 or more: the --driver-memory mode (see the docstring)", file=sys.stderr)
        args.driver_memory = True
    if args.driver_memory:
        driver_memory(args)
        return
    args.rows = int(args.rows) if args.rows is not None else 32
    listing = make_rows(Path(args.media) / f"rows-{args.rows}", args.rows)
    names = args.configs.split(",")
    llm_input = None
    if any(CONFIGS[n].get("llm") for n in names):
        llm_input = prepare_llm_rows(listing, min(args.llm_rows, args.rows), Path(args.media))
    if args.one:
        print(json.dumps(run_one(args.one, listing, Path(args.work), llm_input, args.llm_group)))
        return
    results = []
    for name in names:
        before = os.getloadavg()[0]
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as work:
            done = subprocess.run(
                [sys.executable, __file__, "--rows", str(args.rows), "--llm-rows", str(args.llm_rows), "--llm-group",
                 str(args.llm_group), "--media", args.media, "--configs", name, "--one", name, "--work", work],
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
        print(f"{name}: {result['step']} {result['step_s']:.1f}s, load {result['load']}", file=sys.stderr, flush=True)
    print(f"\nASR: {args.rows} rows, probe + ASR (embedded Whisper tiny.en, greedy), groups of {ASR_GROUP}; "
          f"LLM: compress on {args.llm_rows} rows (embedded Qwen2.5-Coder-1.5B, CTranslate2 int8), groups of "
          f"{args.llm_group}; {os.cpu_count()} cores\n")
    header = (f"{'config':<11}{'step':>9}{'rows':>5}{'ok':>4}{'step s':>8}{'rows/s':>8}{'x 1p-1t':>8}{'wall s':>8}"
              f"{'cpu s':>8}  {'loads/worker':<13}{'load avg (1 min)':>17}")
    print(header)
    print("-" * len(header))
    base = {}
    for r in results:
        if r["config"].endswith("-1p-1t"):
            base[r["step"]] = r["rows"] / r["step_s"]
    for r in results:
        rate = r["rows"] / r["step_s"] if r["step_s"] else 0.0
        ratio = f"{rate / base[r['step']]:.2f}" if r["step"] in base else "-"
        cpu = f"{r['cpu']:.1f}" if r["cpu"] is not None else "-"
        print(
            f"{r['config']:<11}{r['step']:>9}{r['rows']:>5}{r['done']:>4}{r['step_s']:>8.1f}{rate:>8.2f}{ratio:>8}{r['wall']:>8.1f}"
            f"{cpu:>8}  {','.join(map(str, r['loads'])) or '-':<13}{r['load']:>17}"
        )


if __name__ == "__main__":
    main()
