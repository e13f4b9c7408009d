"""QA audit cost without the LLM: every check and figure over synthetic LoMo-shaped videos
(six items each, 20 subtitle lines, random option texts), growing in size. The card of every QA
dataset runs this audit, so it must stay small next to writing the shards.

Usage::

    python benchmarks/bench_audit.py [--videos 1000 5000 14000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lomo_datasets.audit import checks as A  # noqa: E402

WORDS = "the a man woman cooks runs pasta water ball goal team city walk street car bike dog cat".split()


def make_videos(n: int, seed: int = 0) -> list[A.Video]:
    rng = random.Random(seed)

    def sentence(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    videos = []
    for v in range(n):
        subtitles = [(3.0 * i, 3.0 * i + 2.5) for i in range(20)]
        items = []
        for k, task in enumerate(A.LOMO_TASKS):
            window = list(subtitles[rng.randrange(20)]) if k >= 2 else []
            when = f" between {window[0]:g} and {window[1]:g} seconds" if window else ""
            items.append({
                "question_id": f"v{v}_{k + 1:02d}", "task": task, "question": sentence(10) + when,
                "options": [f"{letter}: {sentence(8)}" for letter in "ABCD"], "answer": rng.choice("ABCD"),
                "window": window, "descriptions": "",
            })
        videos.append(A.Video(f"v{v}", items, 60.0, subtitles))
    return videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[1000, 5000, 14000])
    args = parser.parse_args()
    print("| videos | items | audit s | items/s | flagged |")
    print("|---|---|---|---|---|")
    for n in args.videos:
        videos = make_videos(n)
        start = time.perf_counter()
        report = A.audit(videos)
        seconds = time.perf_counter() - start
        items = report.overall.items
        print(f"| {n} | {items} | {seconds:.1f} | {items / seconds:,.0f} | {report.overall.flagged_items} |")


if __name__ == "__main__":
    main()
