"""Toy stages for the crash-safety tests, in an importable module so a subprocess (and spawn
workers) can load them. Each appends one line per processed row to a log file, so a test can
count which rows a run computed; outputs depend only on the row, so runs can be compared.

``python -m tests.resume_stages WORK LOG OUT ROWS DELAY CHUNK`` runs the runner over ROWS toy
records (the SIGKILL test starts and kills this) and writes the final rows to OUT as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

from datasets import Dataset, Features, Value

from lomo_datasets.core import features as F
from lomo_datasets.core.stage import Stage


def _log(path: str, stage: str, video_id: str) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{stage} {video_id}\n")


@dataclass
class SlowNumber(Stage):
    """value = number in the video id x factor, after ``delay`` seconds per row."""

    name = "number"
    version = "1"
    reads = ("video_id",)
    rows_per_batch = 1

    log: str = ""
    delay: float = 0.0
    factor: int = 1

    def features(self) -> Features:
        return Features({"value": Value("int64")})

    def process_row(self, row):
        time.sleep(self.delay)
        _log(self.log, self.name, row["video_id"])
        number = int(row["video_id"].rsplit("-", 1)[1])
        if number % 5 == 4:
            raise ValueError(f"toy failure for {row['video_id']}")
        return {"value": number * self.factor}


@dataclass
class AddOffset(Stage):
    name = "add"
    version = "1"
    reads = ("value",)
    rows_per_batch = 4

    log: str = ""
    offset: int = 0

    def features(self) -> Features:
        return Features({"shifted": Value("int64")})

    def process_row(self, row):
        _log(self.log, self.name, row["video_id"])
        return {"shifted": row["value"] + self.offset}


@dataclass
class Square(Stage):
    name = "square"
    version = "1"
    reads = ("shifted",)
    rows_per_batch = 4

    log: str = ""

    def features(self) -> Features:
        return Features({"squared": Value("int64")})

    def process_row(self, row):
        _log(self.log, self.name, row["video_id"])
        return {"squared": row["shifted"] ** 2}


def toy_records(n: int) -> Dataset:
    rows = [
        {"video_id": f"toy-{i:03d}", "video": f"/videos/toy-{i:03d}.mp4", "source": "local", "title": None, "category": None, "language": None, "errors": []}
        for i in range(n)
    ]
    return Dataset.from_list(rows, features=F.VIDEO)


def main(argv: list[str]) -> int:
    from lomo_datasets.execution.pipeline import Runner

    work, log, out, rows, delay, chunk = argv
    steps = [SlowNumber(log=log, delay=float(delay), factor=3), AddOffset(log=log, offset=1), Square(log=log)]
    result = Runner(work, chunk_size=int(chunk)).run(toy_records(int(rows)), steps)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(result.dataset.to_list(), fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
