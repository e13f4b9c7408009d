"""The recipe runner: ingest, then each step of a recipe, persisted chunk by chunk.

A recipe is an ordered list of steps: stages (maps) and threshold filters. The runner builds
every step from the recipe defaults, the ``--config`` file and ``--set`` overrides *before*
running anything (a bad setting fails at once), then runs them in order. Each step's output is
saved under the work dir in chunks with completion markers, in a folder named by a fingerprint
chained from the input and every earlier step. A rerun with unchanged settings reuses it;
changing a step's settings, version or code recomputes that step and the steps after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from datasets import Dataset, concatenate_datasets, load_from_disk

from lomo_datasets.stage import SettingError, Stage, apply_stage, split_by_threshold

logger = logging.getLogger(__name__)

DONE = "_SUCCESS"


@dataclass
class Filter:
    """The second half of a two-step filter: keep rows whose ``column`` is in [low, high]."""

    name: str
    column: str
    low: float | None = None
    high: float | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if value is not None and not isinstance(value, (int, float)):
                raise SettingError(f"{self.name}.{bound} must be a number or null, got {value!r}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise SettingError(f"{self.name}: low ({self.low}) is above high ({self.high})")

    def settings(self) -> dict[str, Any]:
        return {"column": self.column, "low": self.low, "high": self.high, "enabled": self.enabled}

    def fingerprint(self, previous: str) -> str:
        payload = json.dumps({"previous": previous, "filter": self.name, **self.settings()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass
class Recipe:
    """An ordered list of step factories. ``steps`` holds (name, factory) pairs; a factory
    takes the step's settings as keyword arguments."""

    name: str
    description: str
    steps: list[tuple[str, Callable[..., Stage | Filter]]]
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)

    def step_names(self) -> list[str]:
        return [name for name, _ in self.steps]


def load_config(path: str | os.PathLike | None) -> dict[str, dict[str, Any]]:
    """A YAML file mapping step name -> {setting: value}."""
    if not path:
        return {}
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise SettingError(f"{path}: the config must map step names to settings, e.g. 'probe: {{verify: true}}'")
    return data


def parse_overrides(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["asr.batch_size=8", ...]`` -> ``{"asr": {"batch_size": 8}}`` (values parsed as YAML)."""
    result: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        step, dot, setting = key.strip().partition(".")
        if not sep or not dot or not step or not setting:
            raise SettingError(f"--set {item!r}: use STEP.SETTING=VALUE, e.g. --set probe.verify=false")
        result.setdefault(step, {})[setting] = yaml.safe_load(value) if value.strip() else None
    return result


def build_steps(
    recipe: Recipe,
    config: dict[str, dict[str, Any]] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    embedded: bool = False,
) -> list[Stage | Filter]:
    """Construct every step of ``recipe`` with its settings; unknown names fail here."""
    names = recipe.step_names()
    for source, given in (("--config", config or {}), ("--set", overrides or {})):
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise SettingError(f"{source}: unknown step(s) {unknown} for recipe '{recipe.name}'; its steps are {names}")
    steps = []
    for name, factory in recipe.steps:
        settings: dict[str, Any] = dict(recipe.defaults.get(name, {}))
        settings.update((config or {}).get(name, {}))
        settings.update((overrides or {}).get(name, {}))
        chosen = set((config or {}).get(name, {})) | set((overrides or {}).get(name, {}))
        target = getattr(factory, "embedded_setting", None)
        if embedded and target and target not in chosen:
            settings[target] = factory.embedded_model
        try:
            step = factory(**settings)
        except TypeError as exc:
            valid = _valid_settings(factory)
            raise SettingError(f"step '{name}': {exc}; valid settings: {valid}") from None
        steps.append(step)
    return steps


def _valid_settings(factory: Callable) -> list[str]:
    if dataclasses.is_dataclass(factory):
        return [f.name for f in dataclasses.fields(factory)]
    return []


def _fingerprint_dataset(ds: Dataset) -> str:
    """A content fingerprint of the ingested input (so runs in a new process match)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(ds.features.to_dict(), sort_keys=True).encode())
    for batch in ds.iter(batch_size=1000):
        digest.update(json.dumps(batch, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


@dataclass
class RunResult:
    dataset: Dataset
    dropped: Dataset | None
    work_dir: Path
    timings: dict[str, float]


class Runner:
    """Runs steps over a dataset, persisting each step's output in chunks under ``work_dir``."""

    def __init__(self, work_dir: str | os.PathLike, num_proc: int = 1, chunk_size: int = 256):
        if num_proc < 1:
            raise SettingError(f"--num-proc must be >= 1, got {num_proc}")
        if chunk_size < 1:
            raise SettingError(f"chunk_size must be >= 1, got {chunk_size}")
        self.work_dir = Path(work_dir)
        self.num_proc = num_proc
        self.chunk_size = chunk_size

    def run(self, ds: Dataset, steps: list[Stage | Filter]) -> RunResult:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        fingerprint = _fingerprint_dataset(ds)
        dropped_parts: list[Dataset] = []
        timings: dict[str, float] = {}
        for index, step in enumerate(steps):
            fingerprint = step.fingerprint(fingerprint)
            step_dir = self.work_dir / f"{index:02d}-{step.name}-{fingerprint[:16]}"
            started = time.perf_counter()
            if isinstance(step, Filter):
                ds, dropped = self._filter(ds, step, step_dir)
                if dropped is not None and len(dropped):
                    dropped_parts.append(dropped)
            else:
                ds = self._stage(ds, step, step_dir)
            timings[step.name] = time.perf_counter() - started
            logger.info("%s: %d rows (%.1fs)", step.name, len(ds), timings[step.name])
        dropped = concatenate_datasets(dropped_parts) if dropped_parts and _same_schema(dropped_parts) else (
            dropped_parts[-1] if dropped_parts else None
        )
        return RunResult(ds, dropped, self.work_dir, timings)

    def _stage(self, ds: Dataset, stage: Stage, step_dir: Path) -> Dataset:
        if (step_dir / DONE).exists():
            logger.info("%s: reusing %s", stage.name, step_dir)
            return load_from_disk(str(step_dir / "data"))
        parts = []
        n_chunks = max(1, math.ceil(len(ds) / self.chunk_size))
        for chunk in range(n_chunks):
            chunk_dir = step_dir / f"chunk-{chunk:05d}"
            if (chunk_dir / DONE).exists():
                parts.append(load_from_disk(str(chunk_dir / "data")))
                continue
            rows = range(chunk * self.chunk_size, min(len(ds), (chunk + 1) * self.chunk_size))
            part = apply_stage(
                ds.select(rows), stage, num_proc=self.num_proc, load_from_cache_file=False,
                desc=f"{stage.name} [{chunk + 1}/{n_chunks}]",
            )
            parts.append(_save(part, chunk_dir))
        result = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        result = _save(result, step_dir)
        for chunk_dir in step_dir.glob("chunk-*"):
            shutil.rmtree(chunk_dir, ignore_errors=True)
        return result

    def _filter(self, ds: Dataset, flt: Filter, step_dir: Path) -> tuple[Dataset, Dataset | None]:
        if not flt.enabled:
            return ds, None
        if (step_dir / DONE).exists():
            return load_from_disk(str(step_dir / "data")), load_from_disk(str(step_dir / "dropped"))
        kept, dropped = split_by_threshold(ds, flt.column, flt.low, flt.high, reason=flt.name)
        step_dir.mkdir(parents=True, exist_ok=True)
        dropped.save_to_disk(str(step_dir / "dropped"))
        return _save(kept, step_dir), load_from_disk(str(step_dir / "dropped"))


def _same_schema(parts: list[Dataset]) -> bool:
    return all(p.features == parts[0].features for p in parts)


def _save(ds: Dataset, folder: Path) -> Dataset:
    """Save ``ds`` to ``folder/data`` atomically, then mark the folder done."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "data.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp))
    if (folder / "data").exists():
        shutil.rmtree(folder / "data")
    os.replace(tmp, folder / "data")
    (folder / DONE).write_text(json.dumps({"rows": len(ds), "time": time.time()}))
    return load_from_disk(str(folder / "data"))
