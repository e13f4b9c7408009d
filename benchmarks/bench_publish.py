"""Publishing cost: write the Hub layout (shards + card + plot), push it, read it back.

For synthetic LoMo-shaped rows (one row per video, 6 questions each) of growing size it times:

- ``write_folder``: Parquet shards, statistics, the PNG plot and the rendered card;
- the card and plot alone (``compute_stats`` + ``plot_stats`` + ``render_card``);
- ``push_folder`` to the loopback Hub of ``tests/hub_server.py`` (HTTP on 127.0.0.1, LFS, no Xet);
- ``load_dataset(folder)``.

The loopback push measures our client-side cost (hashing, HTTP, one commit), not a real
network. Usage::

    python benchmarks/bench_publish.py [--rows 1000 10000 50000] [--shard-mb 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # before huggingface_hub is imported
os.environ.pop("HF_HUB_OFFLINE", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TASKS = ("GVQA", "GVS", "SVS", "SVQA", "VVQA", "VTG")


def rows(n: int):
    from datasets import Dataset

    from lomo_datasets.formats import LOMO_FEATURES

    def video(i: int) -> dict:
        return {
            "video_id": f"BV{i:08d}.mp4",
            "duration": 30.0 + (i * 7.3) % 600,
            "resolution": "[720, 1280]",
            "questions": [
                {"question_id": f"{i}-{t}", "task": t, "question": f"What happens in video {i} ({t})?",
                 "options": ["A: one", "B: two", "C: three", "D: four"], "answer": "ABCD"[i % 4],
                 "window": [1.0, 9.5] if t not in ("GVQA", "GVS") else [],
                 "descriptions": "a person opens a door" if t == "VTG" else ""}
                for t in TASKS
            ],
        }

    return Dataset.from_list([video(i) for i in range(n)], features=LOMO_FEATURES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--shard-mb", type=float, default=500)
    args = parser.parse_args()

    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar
    from huggingface_hub.utils import disable_progress_bars

    from lomo_datasets.publish import layout as publish
    from lomo_datasets.publish.card import Provenance, compute_stats, plot_stats, render_card
    from tests.hub_server import HubServer

    disable_progress_bar()
    disable_progress_bars()
    server = HubServer().start()
    print(f"{'rows':>7} {'MB':>7} {'shards':>6} {'write_folder s':>14} {'card+plot s':>11} "
          f"{'push s':>7} {'load s':>7}")
    try:
        for n in args.rows:
            data = rows(n)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "ds"
                t0 = time.perf_counter()
                publish.write_folder(data, out, provenance=Provenance(recipe="lomo"),
                                     max_shard_bytes=int(args.shard_mb * 1024 * 1024))
                t_write = time.perf_counter() - t0

                t0 = time.perf_counter()
                stats = compute_stats(data)
                plot_stats(stats, Path(tmp) / "p.png")
                render_card(data, publish.card_header(publish.DatasetDict({"train": data})), stats)
                t_card = time.perf_counter() - t0

                t0 = time.perf_counter()
                publish.push_folder(out, f"bench/rows-{n}", token="hf_benchmark_token_not_real", endpoint=server.url)
                t_push = time.perf_counter() - t0

                t0 = time.perf_counter()
                load_dataset(str(out), cache_dir=str(Path(tmp) / "cache"))
                t_load = time.perf_counter() - t0

                shards = list((out / "data").glob("*.parquet"))
                mb = sum(p.stat().st_size for p in shards) / 1e6
                print(f"{n:>7} {mb:>7.1f} {len(shards):>6} {t_write:>14.2f} {t_card:>11.2f} {t_push:>7.2f} {t_load:>7.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
