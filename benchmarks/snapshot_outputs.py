"""Fingerprints of what every recipe publishes, to show that a code change leaves outputs alone.

Runs each recipe through the CLI (``python -m lomo_datasets.cli run ...``, one process per run)
with the embedded models on the sample videos (``lomo-datasets sample``), and writes the SHA-256
of every published file (data shards, exports, reports, audit, review page) to a JSON file:

- ``probe``, ``livecc-pretrain``, ``livecc-sft``: the four samples (with the recipes' demo
  settings), with the local runner and with ``--executor ray`` (a local Ray instance);
- ``lomo``: the two cooking samples (English + Mandarin), groups of one video, blind answerer and
  key verifier on the fast embedded model (as ``tests/test_lomo_recipe.py``), local runner only
  (its Ray schedule is compared with the local one by that test).

The card (``README.md``, with the run's code fingerprint and timings) and ``stats.png`` are left
out, as in ``tests/test_sameness.py``. Compare two snapshots with ``--compare``::

    python benchmarks/snapshot_outputs.py --json before.json          # on the old commit
    python benchmarks/snapshot_outputs.py --json after.json           # on the new one
    python benchmarks/snapshot_outputs.py --compare before.json after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = {
    "probe/local": ("probe", []),
    "probe/ray": ("probe", ["--executor", "ray"]),
    "livecc-pretrain/local": ("livecc-pretrain", []),
    "livecc-pretrain/ray": ("livecc-pretrain", ["--executor", "ray"]),
    "livecc-sft/local": ("livecc-sft", []),
    "livecc-sft/ray": ("livecc-sft", ["--executor", "ray"]),
    "lomo/local": ("lomo", ["--set", "blind.model=embedded:smollm2-135m", "--set", "verify.model=embedded:smollm2-135m"]),
}
#: Files that hold timings or the code's fingerprint (they change with any code change, by design).
NOT_COMPARED = ("README.md", "stats.png")


def published(folder: Path, work: Path, root: str | None = None) -> dict[str, str]:
    """SHA-256 per published file. Rows hold the videos' paths, which sit under ``work`` (a
    folder per snapshot), so ``work`` is written as ``<WORK>`` first: Parquet files are compared
    by their schema and rows (as JSON), text files by their text; shard names (a digest of the
    bytes) by their place."""
    import pyarrow.parquet as pq

    out = {}
    root = root or str(work.resolve())
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".lomo") for part in rel.parts) or path.name in NOT_COMPARED:
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            data = json.dumps({"schema": str(table.schema), "rows": table.to_pylist()}, sort_keys=True, default=str)
            name = rel.parent.as_posix() + "/" + path.name.split("-of-")[0] + "-of-" + path.name.split("-of-")[1].split("-")[0]
        else:
            data, name = path.read_bytes().decode("utf-8", "replace"), rel.as_posix()
        data = data.replace(root, "<WORK>").replace(root.replace("/", "\\/"), "<WORK>")  # also as JSON escapes it
        out[name] = hashlib.sha256(data.encode()).hexdigest()
    return out


def demo_sets(recipe: str) -> list[str]:
    from lomo_datasets.execution.recipes import get_recipe

    argv = []
    for step, settings in get_recipe(recipe).demo_settings.items():
        for key, value in settings.items():
            argv += ["--set", f"{step}.{key}={json.dumps(value)}"]
    return argv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the snapshot here")
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--work", default=None, help="folder for the videos and outputs (default: a temp folder)")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--rehash", action="store_true", help="hash the outputs already under --work (no run)")
    parser.add_argument("--root", help="with --rehash: the folder the outputs were made in (default --work)")
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.rehash:
        work = Path(args.work)
        snapshot = {key: published(work / key.replace("/", "-"), work, args.root) for key in args.runs.split(",") if (work / key.replace("/", "-")).exists()}
        Path(args.json).write_text(json.dumps(snapshot, indent=1, sort_keys=True))
        print(f"wrote {args.json}")
        return 0
    from lomo_datasets.media.samples import SAMPLES, make_samples

    work = Path(args.work or tempfile.mkdtemp(prefix="lomo-snapshot-"))
    videos = work / "videos"
    make_samples(videos)
    two = work / "two.jsonl"
    wanted = {s.name for s in SAMPLES if s.name in ("cooking_pasta.mp4", "cooking_zh.mp4")}
    two.write_text(
        "".join(line + "\n" for line in (videos / "manifest.jsonl").read_text().splitlines() if json.loads(line)["video"] in wanted)
    )
    (work / "two-videos").mkdir(exist_ok=True)
    for name in wanted:
        link = work / "two-videos" / name
        if not link.exists():
            link.symlink_to(videos / name)
    (work / "two-videos" / "manifest.jsonl").write_text(two.read_text())
    snapshot: dict[str, dict[str, str]] = {}
    for key in args.runs.split(","):
        recipe, extra = RUNS[key]
        out = work / key.replace("/", "-")
        manifest = work / "two-videos" / "manifest.jsonl" if recipe == "lomo" else videos / "manifest.jsonl"
        argv = [sys.executable, "-m", "lomo_datasets.cli", "run", recipe, "--videos", str(manifest), "--out", str(out),
                "--embedded", "--group-size", "1", *demo_sets(recipe), *extra]
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        print(f"{key}: exit {done.returncode} in {seconds:.0f}s: {' | '.join(tail)[-300:]}", flush=True)
        snapshot[key] = published(out, work) if out.exists() else {}
        snapshot[key]["<exit>"] = str(done.returncode)
    if args.json:
        Path(args.json).write_text(json.dumps(snapshot, indent=1, sort_keys=True))
        print(f"wrote {args.json}")
    return 0


def compare(before: str, after: str) -> int:
    a, b = json.loads(Path(before).read_text()), json.loads(Path(after).read_text())
    differ = 0
    print(f"{'run':24} {'files':>5} {'same':>5}  differing")
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, {}), b.get(key, {})
        names = sorted(set(x) | set(y))
        bad = [n for n in names if x.get(n) != y.get(n)]
        differ += len(bad)
        print(f"{key:24} {len(names):>5} {len(names) - len(bad):>5}  {', '.join(bad) or '-'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
