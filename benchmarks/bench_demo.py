"""`lomo-datasets demo` end to end: yield and time per step, SmolLM2-135M vs Qwen2.5-Coder-1.5B.

Each row of the table is one run of the README's demo command in a fresh output folder:

- ``qwen2.5-coder-1.5b (first run)``: the default ``--embedded`` LLM, with an empty model cache,
  so the time includes joining the 22 parts and converting the model to CTranslate2 int8 once
  (what a new user's first ``make demo`` does after the packages are installed);
- ``qwen2.5-coder-1.5b``: the same again with the cache filled (a rerun in a new folder);
- ``smollm2-135m``: every LLM step (translate, compress, qa) on SmolLM2-135M under its
  JSON-schema grammar (``--set STEP.model=embedded:smollm2-135m``).

Yield is "videos with all items / videos in", read from the demo's printed summary; the
per-step times are the summary's. The wall time is the whole command (sample making, model
preparation, the recipe, the export). ``--skip-first`` reuses the current cache instead of an
empty one; ``--only NAME`` runs one configuration.

    python benchmarks/bench_demo.py [--skip-first] [--only smollm2-135m]

The numbers depend on the machine's load: on a shared 2-core machine other jobs slow every step.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMOLLM2 = "embedded:smollm2-135m"
LLM_STEPS = ("translate", "compress", "qa")


def run_demo(out: Path, extra: list[str], cache: str | None) -> tuple[float, str]:
    env = dict(os.environ)
    if cache:
        env["LOMO_DATASETS_CACHE"] = cache
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "lomo_datasets.cli", "demo", "--out", str(out), *extra],
        capture_output=True, text=True, env=env,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def parse(stdout: str) -> dict:
    found = re.search(r"yield: (\d+) of (\d+) videos", stdout)
    steps = re.search(r"time per step: (.*)", stdout)
    times = dict(re.findall(r"(\w+) ([\d.]+)s", steps.group(1))) if steps else {}
    return {
        "complete": int(found.group(1)) if found else None,
        "videos": int(found.group(2)) if found else None,
        "times": {k: float(v) for k, v in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-first", action="store_true", help="do not measure a first run with an empty model cache")
    parser.add_argument("--only", choices=["first", "qwen2.5-coder-1.5b", "smollm2-135m"], help="run one configuration")
    parser.add_argument("--keep", help="write the demo folders here (default: a temp dir)")
    args = parser.parse_args()

    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-demo-"))
    configs = {  # key: (table name, extra demo arguments, model cache dir or None for the default)
        "first": ("qwen2.5-coder-1.5b (first run)", [], tempfile.mkdtemp(prefix="bench-demo-cache-")),
        "qwen2.5-coder-1.5b": ("qwen2.5-coder-1.5b", [], None),
        "smollm2-135m": ("smollm2-135m", [f for s in LLM_STEPS for f in ("--set", f"{s}.model={SMOLLM2}")], None),
    }
    if args.skip_first:
        configs.pop("first")
    chosen = [configs[args.only]] if args.only else list(configs.values())

    rows = []
    for name, extra, cache in chosen:
        out = root / re.sub(r"\W+", "-", name).strip("-")
        try:
            wall, stdout = run_demo(out, extra, cache)
        finally:
            if cache:  # the first run's private model cache (gigabytes)
                shutil.rmtree(cache, ignore_errors=True)
        print(f"--- {name}: {wall:.0f} s\n{stdout}", flush=True)
        rows.append((name, wall, parse(stdout)))

    steps = []
    for _, _, parsed in rows:
        steps += [k for k in parsed["times"] if k not in steps]
    header = ["LLM", "yield", "wall"] + steps
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, wall, parsed in rows:
        y = parsed["complete"], parsed["videos"]
        yield_text = f"{y[0]}/{y[1]} ({100 * y[0] / y[1]:.0f}%)" if y[1] else "?"
        cells = [name, yield_text, f"{wall / 60:.1f} min"] + [f"{parsed['times'].get(k, 0):.1f}s" for k in steps]
        print("| " + " | ".join(cells) + " |")
    print(f"\n(cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at the end; folders in {root})")


if __name__ == "__main__":
    main()
