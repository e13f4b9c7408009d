"""GPU check: the embedded models on CUDA, locally with --num-proc 2 and under Ray with one GPU
per actor. Run it on a machine with CUDA (it says what is missing otherwise)::

    RAY_USAGE_STATS_ENABLED=0 python benchmarks/gpu_check.py [--rows 24]

Three checks on the same ``--rows`` speech videos (benchmarks/bench_scale.py makes them):

1. ``asr local x2``: probe + Whisper tiny.en (embedded, greedy) with the local runner and
   ``--num-proc 2``: worker rank r runs on ``cuda:{r % gpus}`` (one GPU: both on cuda:0);
2. ``lm_loss local``: probe + ASR + clips + the causal-LM loss of SmolLM2-135M (embedded, torch)
   in this process on ``cuda:0`` (needs a CUDA build of torch);
3. ``asr ray``: probe + Whisper with the Ray executor on a local Ray instance, one GPU per
   actor (Ray sets ``CUDA_VISIBLE_DEVICES``, so each actor sees its GPU as ``cuda:0``); its rows
   must equal check 1's.

The table: the device each check asked for, the GPUs its worker processes held memory on
(``nvidia-smi`` sampled during the run), rows/s, realtime factor (seconds of audio per second
of wall time), model loads per worker, and the result. Nothing is downloaded: the models ship
in packages, the videos are made with espeak-ng.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import make_rows  # noqa: E402

TINY = "embedded:whisper-tiny.en"
SMOL = "embedded:smollm2-135m"


class GpuUse:
    """Samples ``nvidia-smi``: which GPUs the given processes (or any, under Ray) hold memory on."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()  # (pid, gpu uuid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader"],
                    capture_output=True, text=True, timeout=10,
                ).stdout
            except (OSError, subprocess.SubprocessError):
                return
            for line in out.splitlines():
                if "," in line:
                    pid, uuid = (x.strip() for x in line.split(",", 1))
                    self.seen.add((pid, uuid))
            self._stop.wait(0.5)

    def __enter__(self) -> "GpuUse":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        gpus = sorted({uuid[-8:] for _, uuid in self.seen})
        return f"{len({pid for pid, _ in self.seen})} procs on GPU {','.join(gpus)}" if self.seen else "none seen"


def audio_seconds(ds) -> float:
    return float(sum(d or 0.0 for d in ds["duration"])) if "duration" in ds.column_names else 0.0


def check(name: str, device: str, run) -> dict:
    started = time.perf_counter()
    row = {"check": name, "device": device}
    with GpuUse() as use:
        try:
            result = run()
        except Exception as exc:  # a check that cannot run is a row of the table, not a crash
            row.update(result=f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            return row
    wall = time.perf_counter() - started
    data = result.dataset
    errors = sum(1 for e in data["errors"] if e)
    row.update(
        rows=len(data), wall=wall, rows_s=len(data) / wall, rtf=audio_seconds(data) / wall,
        loads=result.model_loads, gpu=use.summary(), result=f"ok ({errors} rows with errors)", data=data,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--media", default=str(Path(tempfile.gettempdir()) / "lomo-bench-scale"))
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    from lomo_datasets.execution.pipeline import Runner
    from lomo_datasets.processors.asr import Transcribe
    from lomo_datasets.processors.clip import Clip
    from lomo_datasets.processors.ingest import Probe, ingest
    from lomo_datasets.processors.lm_loss import LMLoss
    from lomo_datasets.core.stage import cuda_device_count, resolve_device

    import ctranslate2

    gpus = cuda_device_count()
    ct2_gpus = ctranslate2.get_cuda_device_count()
    print(f"torch sees {gpus} CUDA device(s); CTranslate2 sees {ct2_gpus}")
    if not ct2_gpus:
        sys.exit("no CUDA device for CTranslate2: run this on a machine with a GPU and its driver")

    listing = make_rows(Path(args.media) / f"rows-{args.rows}", args.rows)
    ds = ingest(listing)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    asr = Transcribe(model=TINY, temperature=0.0)  # device "auto": the rank rule
    rows = []

    ranks = ", ".join(f"r{r}->{resolve_device(r)}" for r in range(2)) if gpus else "cuda (rank % CTranslate2 GPUs)"
    rows.append(check("asr local x2", ranks, lambda: Runner(work / "local", num_proc=2).run(ds, [Probe(), asr])))

    if gpus:
        clip = Clip(min_clip_sec=1.0, max_clip_sec=20.0)
        steps = [Probe(), asr, clip, LMLoss(model=SMOL)]
        rows.append(check("lm_loss local", resolve_device(0), lambda: Runner(work / "llm").run(ds, steps)))
    else:
        rows.append({"check": "lm_loss local", "device": "-", "result": "skipped: torch has no CUDA (install a CUDA build of torch)"})

    def on_ray():
        import ray

        from lomo_datasets.execution.ray_executor import RayExecutor, RaySettings

        ray.init(include_dashboard=False, logging_level="WARNING")
        try:
            actors = max(1, int(ray.cluster_resources().get("GPU", 0)))
            return RayExecutor(work / "ray", RaySettings(workers=actors, gpus_per_actor=1)).run(ds, [Probe(), asr])
        finally:
            ray.shutdown()

    rows.append(check("asr ray", "1 GPU per actor (cuda:0 inside)", on_ray))
    local, remote = rows[0].get("data"), rows[-1].get("data")
    if local is not None and remote is not None:
        same = local.to_list() == remote.to_list()
        rows[-1]["result"] += "; rows equal the local run" if same else "; ROWS DIFFER from the local run"

    print(f"\n{args.rows} rows of espeak-ng speech\n")
    header = f"{'check':<15}{'device':<34}{'rows':>5}{'wall s':>8}{'rows/s':>8}{'RTF':>7}  {'model loads':<22}{'GPU use':<26}result"
    print(header)
    print("-" * len(header))
    for r in rows:
        if "wall" not in r:
            print(f"{r['check']:<15}{r['device']:<34}{'':>5}{'':>8}{'':>8}{'':>7}  {'':<22}{'':<26}{r['result']}")
            continue
        loads = "; ".join(f"{k} {','.join(map(str, v))}" for k, v in r["loads"].items()) or "-"
        print(
            f"{r['check']:<15}{r['device']:<34}{r['rows']:>5}{r['wall']:>8.1f}{r['rows_s']:>8.2f}{r['rtf']:>7.1f}  "
            f"{loads:<22}{r['gpu']:<26}{r['result']}"
        )


if __name__ == "__main__":
    main()
