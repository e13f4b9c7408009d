"""The stage contract: device rule, per-process model cache, row errors, fingerprints, pickling."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest
from datasets import Dataset, Features, Value

from lomo_datasets.core import stage as S
from lomo_datasets.core.stage import MissingDependencyError, SettingError, Stage, apply_stage, resolve_device
from tests.toy_stages import ToyModelStage


def test_rank_to_device_with_two_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # only the count is faked
    assert [resolve_device(r) for r in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert resolve_device(None) == "cuda:0"
    assert resolve_device(3, "cpu") == "cpu"
    assert resolve_device(3, "cuda:1") == "cuda:1"


def test_no_gpu_means_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert [resolve_device(r) for r in (None, 0, 1, 5)] == ["cpu"] * 4


def test_bad_settings_fail_at_construction():
    with pytest.raises(SettingError, match="toy.scale"):
        ToyModelStage(scale="big")
    with pytest.raises(SettingError, match="'auto'"):
        ToyModelStage(device="gpu0")


def test_missing_extra_names_the_pip_command():
    @dataclass
    class NeedsMissing(Stage):
        name = "needs"
        requires = {"surely_not_a_module_xyz": "asr"}

        def features(self):
            return Features({})

    with pytest.raises(MissingDependencyError, match=r"pip install 'lomo-datasets\[asr\]'"):
        NeedsMissing()


def test_stage_pickles_without_model():
    stage = ToyModelStage(scale=3.0)
    stage({"x": [1.0]})  # loads the model in this process
    data = pickle.dumps(stage)
    assert b"Linear" not in data and len(data) < 400
    clone = pickle.loads(data)
    assert clone.scale == 3.0 and clone == stage


def test_row_error_keeps_other_rows():
    ds = Dataset.from_dict({"video_id": ["a", "b", "c"], "x": [1.0, -1.0, 2.0]})
    out = apply_stage(ds, ToyModelStage(scale=2.0), load_from_cache_file=False)
    rows = out.to_list()
    assert [r["y"] for r in rows] == [2.0, None, 4.0]
    assert rows[0]["errors"] == [] and rows[2]["errors"] == []
    assert rows[1]["errors"] == [{"stage": "toy", "error": "ValueError: negative input -1.0"}]
    assert rows[1]["pid"] is None and rows[1]["device"] is None
    assert out.features["y"] == Value("float64")


def test_failed_upstream_rows_are_passed_through():
    ds = Dataset.from_dict(
        {"x": [1.0, 2.0], "errors": [[{"stage": "probe", "error": "EmptyMediaError: empty"}], []]}
    )
    out = apply_stage(ds, ToyModelStage(), load_from_cache_file=False).to_list()
    assert out[0]["y"] is None and out[0]["errors"] == [{"stage": "probe", "error": "EmptyMediaError: empty"}]
    assert out[1]["y"] == 4.0


def test_num_proc_2_sees_both_ranks_and_loads_once_per_process():
    ds = Dataset.from_dict({"x": [float(i) for i in range(12)]})
    out = apply_stage(ds, ToyModelStage(scale=1.5), num_proc=2, load_from_cache_file=False)
    rows = out.to_list()
    assert sorted({r["rank"] for r in rows}) == [0, 1]
    assert all(r["device"] == "cpu" for r in rows)
    assert [r["y"] for r in rows] == [1.5 * i for i in range(12)]
    by_pid: dict[int, set] = {}
    for r in rows:
        by_pid.setdefault(r["pid"], set()).add(r["loads"])
    assert len(by_pid) == 2  # two worker processes
    # Each worker loaded the model once, on its first batch, and reused it for the other 2 batches.
    assert all(loads == {1} for loads in by_pid.values())


def test_model_cache_is_keyed_by_settings():
    S.clear_model_cache()
    a, b, a2 = ToyModelStage(scale=1.0), ToyModelStage(scale=2.0), ToyModelStage(scale=1.0)
    assert a.loaded_model is a2.loaded_model
    assert a.loaded_model is not b.loaded_model


def test_fingerprint_changes_with_settings_version_and_code(monkeypatch):
    base = ToyModelStage(scale=2.0).fingerprint("prev")
    assert ToyModelStage(scale=2.0).fingerprint("prev") == base
    assert ToyModelStage(scale=3.0).fingerprint("prev") != base
    assert ToyModelStage(scale=2.0).fingerprint("other") != base
    monkeypatch.setattr(ToyModelStage, "version", "2")
    assert ToyModelStage(scale=2.0).fingerprint("prev") != base
    monkeypatch.setattr(ToyModelStage, "version", "1")
    monkeypatch.setattr(ToyModelStage, "code_hash", classmethod(lambda cls: "edited"))
    assert ToyModelStage(scale=2.0).fingerprint("prev") != base


def test_a_stages_code_includes_the_helper_modules_it_uses(tmp_path, monkeypatch):
    """A resumed run must not reuse a step written by older code: an edit of a helper module the
    stage's module imports (as translate's checks live in llm_translate.py) changes the code hash.
    Found when bench_yield reused a translate step after llm_translate.py's checks changed."""
    import importlib.util
    import sys

    helper = tmp_path / "probe_helper.py"
    helper.write_text("def check(line):\n    return bool(line)\n")
    module = tmp_path / "probe_stage.py"
    module.write_text("from dataclasses import dataclass\nfrom typing import ClassVar\n\n"
                      "from lomo_datasets.core.stage import Stage\n"
                      "from lomo_datasets.processors._probe_helper import check\n\n\n"
                      "@dataclass\nclass ProbeStage(Stage):\n    name: ClassVar[str] = 'probe_code'\n")

    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, path)
        loaded = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, loaded)
        spec.loader.exec_module(loaded)
        return loaded

    load("lomo_datasets.processors._probe_helper", helper)
    probe = load("lomo_datasets.processors._probe_stage", module).ProbeStage
    assert probe.code_files()[:2] == [str(module), str(helper)]
    before = probe.code_hash()
    assert probe.code_hash() == before
    helper.write_text("def check(line):\n    return bool(line.strip())\n")
    assert probe.code_hash() != before
    # The real stages: translate's checks and compress's lexical test are part of their code.
    from lomo_datasets.processors.compress import Compress
    from lomo_datasets.processors.translate import TranslateToEnglish

    assert any(f.endswith("llm_translate.py") for f in TranslateToEnglish.code_files())
    assert any(f.endswith("grounding.py") for f in Compress.code_files())


def test_datasets_cache_hit_and_invalidation(tmp_path, monkeypatch):
    """On a disk-backed dataset, a rerun with nothing changed reuses datasets' cache file;
    a new setting or version recomputes."""
    Dataset.from_dict({"x": [1.0, 2.0, 3.0]}).save_to_disk(str(tmp_path / "in"))
    from datasets import load_from_disk

    ds = load_from_disk(str(tmp_path / "in"))
    first = apply_stage(ds, ToyModelStage(scale=2.0))
    again = apply_stage(ds, ToyModelStage(scale=2.0))
    assert again.cache_files == first.cache_files
    assert again["pid"] == first["pid"] and again["y"] == first["y"]
    changed = apply_stage(ds, ToyModelStage(scale=5.0))
    assert changed.cache_files != first.cache_files and changed["y"] == [5.0, 10.0, 15.0]
    monkeypatch.setattr(ToyModelStage, "version", "2")
    bumped = apply_stage(ds, ToyModelStage(scale=2.0))
    assert bumped.cache_files not in (first.cache_files, changed.cache_files)


def test_split_by_threshold_keeps_dropped_rows_with_reason():
    ds = Dataset.from_dict({"video_id": list("abcd"), "score": [0.5, 1.5, None, 3.0]})
    kept, dropped = S.split_by_threshold(ds, "score", low=1.0, high=2.0, reason="score band")
    assert kept["video_id"] == ["b"]
    assert dropped["video_id"] == ["a", "c", "d"] and set(dropped["drop_reason"]) == {"score band"}
    with pytest.raises(SettingError, match="cannot filter"):
        S.split_by_threshold(ds, "nope", low=1)


def test_fan_out_rows_copy_inputs_and_failed_rows_stay():
    from tests.toy_stages import ToyFanOut

    ds = Dataset.from_dict({"video_id": ["a", "b", "c", "d"], "x": [2, 0, -1, 3]})
    out = apply_stage(ds, ToyFanOut(), load_from_cache_file=False).to_list()
    # "b" makes no rows: it stays, failed with the reason, so every input is accounted for (issue 22)
    assert [(r["video_id"], r["part"]) for r in out] == [
        ("a", 0), ("a", 1), ("b", None), ("c", None), ("d", 0), ("d", 1), ("d", 2)
    ]
    assert out[2]["errors"] == [{"stage": "fan", "error": "NoOutputRows: fan made no rows from this input"}]
    assert out[3]["errors"][0]["error"] == "ValueError: cannot split a negative count"
    assert all(r["errors"] == [] for i, r in enumerate(out) if i not in (2, 3))


def test_model_fix_says_unset_hf_hub_offline_only_when_it_is_set(monkeypatch):
    from lomo_datasets.core.stage import model_fix

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    online = model_fix("asr")
    assert online.startswith("give --set asr.model=PATH") and "model=PATH" in online.split(";")[1]
    assert "HF_HUB_OFFLINE" not in online and online.endswith("fetch it once with the network reachable")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert model_fix("asr").endswith("fetch it once while online (unset HF_HUB_OFFLINE)")


def test_a_model_call_runs_on_the_stage_threads_in_every_thread_pool():
    """torch, OpenCV (the face detector) and numpy's OpenBLAS all run a model call on the
    stage's ``cpu_threads``, and get their own count back afterwards."""
    import cv2
    import numpy  # noqa: F401  (loads OpenBLAS)
    import torch

    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    try:
        blas = S._openblas_controls()
        with S.torch_threads(1):
            assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
            assert all(getter() == 1 for _, getter in blas)
        assert torch.get_num_threads() == 2 and cv2.getNumThreads() == 2
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_a_process_keeps_at_most_max_models_and_drops_the_least_recently_used():
    """A process that calls many stages (a notebook, a test session) holds at most
    ``MAX_MODELS`` models; the one used last stays, and every load is counted."""
    batch = {"x": [1.0]}
    stages = [ToyModelStage(scale=float(k)) for k in (11, 12, 13)]
    before = S.models_loaded()
    for stage in stages[:2]:
        stage(batch)
    stages[0](batch)  # used again: now the most recent, no load
    assert S.models_loaded() - before == 2
    stages[2](batch)  # a third model: the least recently used (scale 12) goes
    assert S.models_loaded() - before == 3
    held = [key[3] for key in S._MODELS if key[1] == "ToyModelStage.load_model"]
    assert stages[0].model_key() in held and stages[2].model_key() in held
    assert stages[1].model_key() not in held and len(S._MODELS) <= S.MAX_MODELS
    stages[1](batch)  # needed again: loaded again
    assert S.models_loaded() - before == 4
