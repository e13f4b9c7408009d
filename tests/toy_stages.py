"""Toy stages for contract tests. They live in an importable module so ``spawn`` workers can
unpickle them. The "model" is a real (tiny) torch module; loads are counted per process."""

from __future__ import annotations

import os
from dataclasses import dataclass

from datasets import Features, Value

from lomo_datasets.stage import SettingError, Stage

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
