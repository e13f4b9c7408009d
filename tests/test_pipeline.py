"""The recipe runner and CLI: probe recipe end to end, reuse, overrides, bad settings."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest
from datasets import Dataset, Features, Value, load_dataset

from lomo_datasets.media import decode as media
from lomo_datasets.execution.pipeline import Filter, Recipe, Runner, build_steps, parse_overrides
from lomo_datasets.execution.recipes import run_recipe
from lomo_datasets.core.stage import SettingError, Stage
from tests.toy_stages import ToyModelStage


@pytest.fixture()
def videos(test_media, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for path in [test_media.english, test_media.no_audio, test_media.corrupt, test_media.zero_byte]:
        shutil.copy(path, folder / path.name)
    return folder


def test_probe_recipe_writes_a_dataset_load_dataset_reads(videos, tmp_path):
    out = tmp_path / "out"
    summary = run_recipe("probe", videos, out)
    assert summary.rows == 4 and summary.failed == 2 and summary.errors_by_stage == {"probe": 2}
    loaded = load_dataset(str(out), split="train")
    rows = {r["video_id"]: r for r in loaded}
    assert set(rows) == {"english", "no_audio", "corrupt", "zero_byte"}
    assert rows["english"]["width"] == 320 and rows["english"]["errors"] == []
    assert rows["zero_byte"]["errors"][0]["error"].startswith("EmptyMediaError")
    assert loaded.features["duration"] == Value("float64")
    assert (out / "README.md").read_text().startswith("---\n")
    assert list((out / "data").glob("train-00000-of-*.parquet"))


def test_rerun_reuses_steps_and_changed_settings_recompute(videos, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = []
    real_probe = media.probe
    monkeypatch.setattr(media, "probe", lambda *a, **k: calls.append(a[0]) or real_probe(*a, **k))
    first = run_recipe("probe", videos, out)
    assert len(calls) == 4
    rows_first = load_dataset(str(out), split="train").to_list()
    again = run_recipe("probe", videos, out)
    assert len(calls) == 4  # nothing recomputed
    assert load_dataset(str(out), split="train").to_list() == rows_first
    assert again.rows == first.rows
    run_recipe("probe", videos, out, overrides=["probe.verify=false"])
    assert len(calls) == 8  # a new setting recomputes the stage
    assert len(list((out / ".lomo-work").glob("00-probe-*"))) == 2


def test_rerun_summary_says_what_each_step_reused_and_the_wall_time(tmp_path):
    ds = Dataset.from_dict({"video_id": list("abcd"), "x": [1.0, 2.0, 3.0, -1.0]})
    steps = [ToyModelStage(scale=1.0), Filter("y_band", "y", low=1.5, high=None)]
    assert Runner(tmp_path / "work").run(ds, steps).reused == {}
    # a filter stores nothing (its keep reruns on the reused rows): only the stage is reused
    assert Runner(tmp_path / "work").run(ds, steps).reused == {"toy": "4 rows"}
    # a step cut short in its second chunk: the rerun reuses the first and computes the second
    from lomo_datasets.execution import pipeline

    real_map, calls = pipeline.StepPool.map, []

    def crash_on_second_chunk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("crashed")
        return real_map(self, *args, **kwargs)

    pipeline.StepPool.map = crash_on_second_chunk
    try:
        with pytest.raises(RuntimeError, match="crashed"):
            Runner(tmp_path / "chunks", chunk_size=2).run(ds, steps[:1])
    finally:
        pipeline.StepPool.map = real_map
    again = Runner(tmp_path / "chunks", chunk_size=2).run(ds, steps[:1])
    assert again.reused == {"toy": "1 of 2 chunks (2 rows)"}
    assert again.dataset["y"] == Runner(tmp_path / "whole").run(ds, steps[:1]).dataset["y"]


def test_rerun_through_the_cli_prints_reuse_per_step_and_wall_time(videos, tmp_path):
    out = tmp_path / "out"
    first = _cli("run", "probe", "--videos", str(videos), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "reused from the work dir" not in first.stdout
    assert re.search(r"^wall time: \d+\.\ds$", first.stdout, re.M), first.stdout
    again = _cli("run", "probe", "--videos", str(videos), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "reused from the work dir (every file's size and SHA-256 checked): probe 4 rows\n" in again.stdout
    assert re.search(r"^wall time: \d+\.\ds$", again.stdout, re.M), again.stdout


def test_chunks_persist_with_markers(videos, tmp_path):
    out = tmp_path / "out"
    run_recipe("probe", videos, out, chunk_size=1)
    (step,) = (out / ".lomo-work").glob("00-probe-*")
    assert (step / "_SUCCESS").exists() and (step / "data").exists()


def test_overrides_and_config(tmp_path):
    assert parse_overrides(["probe.verify=false", "asr.batch_size=8", "asr.language=zh"]) == {
        "probe": {"verify": False},
        "asr": {"batch_size": 8, "language": "zh"},
    }
    with pytest.raises(SettingError, match="STEP.SETTING=VALUE"):
        parse_overrides(["verify=false"])
    config = tmp_path / "recipe.yaml"
    config.write_text("probe:\n  verify: false\n")
    recipe = Recipe("t", "test", [("probe", __import__("lomo_datasets.processors.ingest", fromlist=["Probe"]).Probe)])
    (step,) = build_steps(recipe, {"probe": {"verify": False}})
    assert step.verify is False
    with pytest.raises(SettingError, match="unknown step"):
        build_steps(recipe, {"asr": {"model": "x"}})
    with pytest.raises(SettingError, match="valid settings: \\['device', 'verify'\\]"):
        build_steps(recipe, None, {"probe": {"verfy": True}})
    with pytest.raises(SettingError, match="probe.verify must be true or false"):
        build_steps(recipe, None, {"probe": {"verify": "yes please"}})


def test_embedded_selects_packaged_models_unless_set_explicitly():
    @dataclass
    class WithModel(Stage):
        name = "asr"
        embedded_setting = "model"
        embedded_model = "embedded:whisper-tiny.en"
        model: str = "large-v3"

        def features(self):
            return Features({})

    recipe = Recipe("t", "test", [("asr", WithModel)])
    assert build_steps(recipe)[0].model == "large-v3"
    assert build_steps(recipe, embedded=True)[0].model == "embedded:whisper-tiny.en"
    chosen = build_steps(recipe, None, {"asr": {"model": "embedded:whisper-base"}}, embedded=True)
    assert chosen[0].model == "embedded:whisper-base"


def test_runner_filter_step_keeps_dropped_rows(tmp_path):
    ds = Dataset.from_dict({"video_id": list("abcd"), "x": [1.0, 2.0, 3.0, -1.0]})
    steps = [ToyModelStage(scale=1.0), Filter("y_band", "y", low=1.5, high=None)]
    result = Runner(tmp_path / "work").run(ds, steps)
    assert result.dataset["video_id"] == ["b", "c"]
    assert sorted(result.dropped["video_id"]) == ["a", "d"] and set(result.dropped["drop_reason"]) == {"y_band"}
    with pytest.raises(SettingError, match="low"):
        Filter("bad", "y", low=3, high=1)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lomo_datasets.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_run_recipes_and_errors(videos, tmp_path):
    listing = _cli("recipes")
    assert listing.returncode == 0 and "probe" in listing.stdout
    out = tmp_path / "cli-out"
    done = _cli("run", "probe", "--videos", str(videos), "--out", str(out), "--set", "probe.verify=true")
    assert done.returncode == 0, done.stderr
    assert "4 rows written" in done.stdout and "rows with errors: 2" in done.stdout
    assert len(load_dataset(str(out), split="train")) == 4
    bad = _cli("run", "probe", "--videos", str(videos), "--out", str(out), "--set", "probe.nope=1")
    assert bad.returncode == 2 and "valid settings" in bad.stderr and "Traceback" not in bad.stderr
    unknown = _cli("run", "nope", "--videos", str(videos), "--out", str(out))
    assert unknown.returncode == 2 and "available: " in unknown.stderr


def test_dropped_rows_of_filters_with_different_columns_are_all_kept(tmp_path):
    ds = Dataset.from_dict({"video_id": list("abcd"), "x": [1.0, 2.0, 3.0, -1.0]})
    steps = [Filter("x_positive", "x", low=0.0), ToyModelStage(scale=1.0), Filter("y_band", "y", low=1.5)]
    result = Runner(tmp_path / "work").run(ds, steps)
    assert result.dataset["video_id"] == ["b", "c"]
    reasons = dict(zip(result.dropped["video_id"], result.dropped["drop_reason"]))
    assert reasons == {"d": "x_positive", "a": "y_band"}
    assert "y" not in result.dropped.column_names  # only the columns every filter saw


def test_summary_counts_failed_rows_that_a_filter_dropped(tmp_path):
    from lomo_datasets.execution.recipes import _summarize

    ds = Dataset.from_dict({"video_id": list("abc"), "x": [1.0, -1.0, 2.0]})
    steps = [ToyModelStage(scale=1.0), Filter("y_band", "y", low=0.0)]
    result = Runner(tmp_path / "work").run(ds, steps)
    assert result.dataset["video_id"] == ["a", "c"]  # the failed row (y None) was dropped
    summary = _summarize("t", tmp_path, result.dataset, result)
    assert summary.failed == 1 and summary.errors_by_stage == {"toy": 1} and summary.dropped == 1


def test_a_recipe_declares_its_output_kind_and_the_folder_keeps_it(videos, tmp_path):
    """The card template and the review page follow what the recipe declares (recorded in the
    folder's provenance), not a guess from the columns."""
    from lomo_datasets.execution.recipes import RECIPES
    from lomo_datasets.processors.ingest import Probe
    from lomo_datasets.publish.layout import read_provenance

    assert {name: r.output for name, r in RECIPES.items()} == {
        "probe": "generic", "livecc-pretrain": "livecc", "livecc-sft": "livecc", "lomo": "lomo"}
    with pytest.raises(ValueError, match="output 'qa' is not one of"):
        Recipe("x", "a recipe with an unknown output kind", [("probe", Probe)], output="qa")
    out = tmp_path / "out"
    assert _cli("run", "probe", "--videos", str(videos), "--out", str(out)).returncode == 0
    assert read_provenance(out).output == "generic"
    view = _cli("view", str(out))
    assert view.returncode != 0
    assert "written by recipe 'probe', which makes neither LoMo questions nor LiveCC clips" in view.stderr
