"""The recipes the CLI runs, and ``run_recipe`` that takes one from videos to a published folder.

Later recipes (``lomo``, ``livecc-pretrain``, ``livecc-sft``) register here with ``register``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from lomo_datasets import publish
from lomo_datasets.card import Provenance
from lomo_datasets.pipeline import Recipe, Runner, build_steps, load_config, parse_overrides, parse_shard, write_failed_report
from lomo_datasets.stage import SettingError

logger = logging.getLogger(__name__)

RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


def _probe_recipe() -> Recipe:
    from lomo_datasets.processors.ingest import Probe

    return Recipe("probe", "ingest videos and probe them with PyAV (duration, size, fps, audio)", [("probe", Probe)])


register(_probe_recipe())


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise SettingError(f"unknown recipe '{name}'; available: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


@dataclass
class RunSummary:
    recipe: str
    out: Path
    rows: int
    failed: int
    dropped: int
    errors_by_stage: dict[str, int]
    timings: dict[str, float]
    hours: float
    pushed: str | None = None

    def lines(self) -> list[str]:
        lines = [
            f"recipe {self.recipe}: {self.rows} rows written to {self.out} ({self.hours * 60:.1f} min of video)",
            f"rows with errors: {self.failed}" + (f" ({dict(self.errors_by_stage)})" if self.failed else ""),
        ]
        if self.dropped:
            lines.append(f"rows dropped by filters: {self.dropped}")
        lines.append("time per step: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))
        if self.pushed:
            lines.append(f"pushed: {self.pushed}")
        return lines


def run_recipe(
    name: str,
    videos: str | os.PathLike,
    out: str | os.PathLike,
    num_proc: int = 1,
    config: str | os.PathLike | dict | None = None,
    overrides: list[str] | dict | None = None,
    embedded: bool = False,
    work_dir: str | os.PathLike | None = None,
    chunk_size: int = 256,
    push_to_hub: str | None = None,
    private: bool | None = None,
    shard: str | tuple[int, int] | None = None,
) -> RunSummary:
    """Run recipe ``name`` over ``videos`` and write the Hub layout to ``out``.

    Every step is built before anything runs, so a bad setting fails at once. The work dir
    (default ``OUT/.lomo-work``) keeps each step's output for reruns. The folder gets the full
    card (statistics, plot, how it was made); ``push_to_hub="org/name"`` then uploads it.
    When the input lists URLs or platform ids, a ``download`` step runs first (files go to
    ``WORK/downloads``). ``shard="i/n"`` runs part i of n of the input (merge the parts with
    ``lomo-datasets merge``). Rows with errors are listed in ``OUT/failed.jsonl``.
    """
    from lomo_datasets.processors.ingest import ingest

    if push_to_hub:
        publish.check_repo_id(push_to_hub)
    recipe = get_recipe(name)
    config_dict = config if isinstance(config, dict) else load_config(config)
    override_dict = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    shard_spec = parse_shard(shard)
    out = Path(out)
    work = Path(work_dir or out / ".lomo-work")
    ds = ingest(videos)
    recipe = _with_download(recipe, ds, config_dict, override_dict, work / "downloads")
    steps = build_steps(recipe, config_dict, override_dict, embedded=embedded)
    runner = Runner(work, num_proc=num_proc, chunk_size=chunk_size)
    result = runner.run(ds, steps, shard=shard_spec)
    data = result.dataset
    splits: dict[str, Dataset] = {"train": data}
    publish.write_folder(
        DatasetDict(splits), out, provenance=Provenance.from_recipe(recipe, steps), dropped=result.dropped,
        repo_id=push_to_hub,
    )
    if result.dropped is not None and len(result.dropped):
        result.dropped.to_json(str(out / "dropped.jsonl"), force_ascii=False)
    write_failed_report(out / "failed.jsonl", data, result.dropped)
    summary = _summarize(recipe.name, out, data, result)
    if push_to_hub:
        summary.pushed = publish.push_folder(out, push_to_hub, private=private)
    return summary


def _with_download(recipe: Recipe, ds: Dataset, config: dict, overrides: dict, folder: Path) -> Recipe:
    """``recipe`` with a ``download`` step first when the input has URLs (or download is set)."""
    from lomo_datasets.processors.download import Download
    from lomo_datasets.processors.ingest import is_url

    if "download" in recipe.step_names():
        return recipe
    asked = "download" in config or "download" in overrides
    if not asked and not any(is_url(v) for v in ds["video"]):
        return recipe
    defaults = {**recipe.defaults, "download": {"output_dir": str(folder), **recipe.defaults.get("download", {})}}
    return Recipe(recipe.name, recipe.description, [("download", Download), *recipe.steps], defaults)


def _summarize(name: str, out: Path, data: Dataset, result) -> RunSummary:
    errors = Counter()
    failed = 0
    for row_errors in data["errors"] if "errors" in data.column_names else []:
        if row_errors:
            failed += 1
            errors.update(e["stage"] for e in row_errors)
    seconds = sum(d for d in (data["duration"] if "duration" in data.column_names else []) if d)
    return RunSummary(
        recipe=name,
        out=out,
        rows=len(data),
        failed=failed,
        dropped=len(result.dropped) if result.dropped is not None else 0,
        errors_by_stage=dict(errors),
        timings=result.timings,
        hours=seconds / 3600,
    )
