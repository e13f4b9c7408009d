"""Toy stages for contract tests. They live in an importable module so ``spawn`` workers can
unpickle them. The "model" is a real (tiny) torch module; loads are counted per process."""

from __future__ import annotations

import os
from dataclasses import dataclass

from datasets import Features, Value

from lomo_datasets.core.stage import SettingError, Stage

LOADS = {"count": 0}


@dataclass
class ToyModelStage(Stage):
    """y = w * x with a torch "model"; rows with x < 0 fail; reports pid, rank and device."""

    name = "toy"
    version = "1"
    reads = ("x",)
    start_method = "spawn"
    rows_per_batch = 2

    scale: float = 2.0

    def validate(self) -> None:
        if not isinstance(self.scale, (int, float)):
            raise SettingError(f"toy.scale must be a number, got {self.scale!r}")

    def features(self) -> Features:
        return Features(
            {
                "y": Value("float64"),
                "pid": Value("int64"),
                "rank": Value("int64"),
                "device": Value("string"),
                "loads": Value("int64"),
            }
        )

    def load_model(self, device: str):
        import torch

        LOADS["count"] += 1
        layer = torch.nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            layer.weight.fill_(self.scale)
        return layer.to(device)

    def process_row(self, row):
        import torch

        if row["x"] < 0:
            raise ValueError(f"negative input {row['x']}")
        with torch.no_grad():
            y = self.loaded_model(torch.tensor([[float(row["x"])]], device=self.current_device)).item()
        return {
            "y": y,
            "pid": os.getpid(),
            "rank": -1 if self.current_rank is None else self.current_rank,
            "device": self.current_device,
            "loads": LOADS["count"],
        }


@dataclass
class ToyFanOut(Stage):
    """One row with n = x becomes n rows with part = 0..n-1; x < 0 fails."""

    name = "fan"
    fan_out = True
    reads = ("x",)

    def features(self) -> Features:
        return Features({"part": Value("int64")})

    def process_row(self, row):
        if row["x"] < 0:
            raise ValueError("cannot split a negative count")
        return [{"part": i} for i in range(int(row["x"]))]


@dataclass
class ToySlowModel(Stage):
    """A model stage that takes ``delay`` seconds per row; each model load (one per worker
    process) writes the worker's pid into ``pid_dir``, so a test can find and kill a worker."""

    name = "slow"
    reads = ("x",)
    rows_per_batch = 2

    delay: float = 0.2
    pid_dir: str = ""

    def features(self) -> Features:
        return Features({"y": Value("float64"), "pid": Value("int64")})

    def load_model(self, device: str):
        if self.pid_dir:
            with open(os.path.join(self.pid_dir, str(os.getpid())), "w") as fh:
                fh.write(device)
        return {"scale": 3.0}

    def process_row(self, row):
        import time

        time.sleep(self.delay)
        return {"y": self.loaded_model["scale"] * row["x"], "pid": os.getpid()}


@dataclass
class ToyBatchRaises(Stage):
    """A batched stage whose whole batch raises when one of its rows has x < 0 (the contract
    then runs the batch item by item, so only that row fails)."""

    name = "batch_raises"
    reads = ("x",)
    rows_per_batch = 4

    def features(self) -> Features:
        return Features({"z": Value("float64")})

    def run_batch(self, items):
        if any(item["x"] < 0 for item in items):
            raise ValueError("a negative x in the batch")
        return [{"z": item["x"] + 1} for item in items]


@dataclass
class ToyMissingModel(Stage):
    """A model stage whose model is not there: loading it is a setting error."""

    name = "missing_model"
    reads = ("x",)

    path: str = "/nonexistent/model"

    def features(self) -> Features:
        return Features({"y": Value("float64")})

    def load_model(self, device: str):
        raise SettingError(f"missing_model.path={self.path!r} does not exist: give the model's folder")

    def process_row(self, row):
        return {"y": row["x"]}
