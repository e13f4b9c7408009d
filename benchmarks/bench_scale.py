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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--llm-rows", type=int, default=8)
    parser.add_argument("--llm-group", type=int, default=4)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--media", default=str(Path(tempfile.gettempdir()) / "lomo-bench-scale"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
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
