"""The stage hook (prepare -> run_batch -> finish) and the checks the contract owns.

``Shout`` is a complete batched stage in a few lines: it writes only the hooks, and gets the
input-column check, the model load before the first batch, the item-by-item fallback after a
failed batch and the output-key check from ``Stage`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from datasets import Dataset, Features, Value

from lomo_datasets.core.stage import Ready, SettingError, Stage, StageContractError, apply_stage

CALLS: list[int] = []  # the size of every run_batch call
LOADS: list[str] = []  # every model load, with the state of CALLS at that time


@dataclass
class Shout(Stage):
    """Upper-cases ``text`` in one call per batch; the call fails as a whole on "boom"."""

    name = "shout"
    reads = ("text",)
    rows_per_batch = 8

    suffix: str = "!"

    def features(self) -> Features:
        return Features({"loud": Value("string"), "chars": Value("int64")})

    def load_model(self, device: str):
        LOADS.append(f"loaded after {len(CALLS)} calls")
        return str.upper

    def prepare(self, row):
        if row["text"] is None:
            raise ValueError("no text")
        if not row["text"]:
            return Ready({"loud": "", "chars": 0})  # nothing to send to the model
        return row["text"].strip()

    def run_batch(self, items):
        CALLS.append(len(items))
        if "boom" in items:
            raise RuntimeError("the model choked on boom")
        return [self.loaded_model(t) + self.suffix for t in items]

    def finish(self, row, loud):
        return {"loud": loud, "chars": len(loud)}


def texts(*values) -> Dataset:
    return Dataset.from_dict({"video_id": [f"v{i}" for i in range(len(values))], "text": list(values)})


@pytest.fixture(autouse=True)
def fresh_counts():
    from lomo_datasets.core import stage as S

    CALLS.clear()
    LOADS.clear()
    S.clear_model_cache()


def test_a_batch_that_raises_for_one_item_fails_only_that_row():
    out = apply_stage(texts("a", "boom", " c ", None, ""), Shout(), load_from_cache_file=False).to_list()
    assert [r["loud"] for r in out] == ["A!", None, "C!", None, ""]
    assert [r["chars"] for r in out] == [2, None, 2, None, 0]
    assert out[1]["errors"] == [{"stage": "shout", "error": "RuntimeError: the model choked on boom"}]
    assert out[3]["errors"] == [{"stage": "shout", "error": "ValueError: no text"}]
    assert all(out[i]["errors"] == [] for i in (0, 2, 4))
    # One call for the batch's three items, then one call per item after it failed.
    assert CALLS == [3, 1, 1, 1]
    # The model loaded once, before the first batch.
    assert LOADS == ["loaded after 0 calls"]


def test_no_model_loads_when_no_row_needs_the_batched_call():
    out = apply_stage(texts("", None), Shout(), load_from_cache_file=False).to_list()
    assert [r["loud"] for r in out] == ["", None]
    assert CALLS == [] and LOADS == []


def test_missing_input_column_fails_before_any_row_runs():
    ds = Dataset.from_dict({"video_id": ["a"], "words": ["hello"]})
    with pytest.raises(SettingError, match=r"stage 'shout' reads column\(s\) \['text'\] that the input lacks"):
        apply_stage(ds, Shout(), load_from_cache_file=False)
    with pytest.raises(SettingError, match="run the step that writes them first"):
        ds.map(Shout(), batched=True)  # a stage used alone with ds.map checks it too
    assert CALLS == [] and LOADS == []


def test_undeclared_output_key_is_refused():
    @dataclass
    class Leaky(Shout):
        def finish(self, row, loud):
            return {"loud": loud, "chars": len(loud), "volume": 11}

    with pytest.raises(StageContractError, match=r"\['volume'\] that features\(\) does not declare"):
        apply_stage(texts("a"), Leaky(), load_from_cache_file=False)


def test_fan_out_must_return_a_list():
    @dataclass
    class NotAList(Shout):
        fan_out = True

        def finish(self, row, loud):
            return {"loud": loud, "chars": 1}

    with pytest.raises(StageContractError, match="fan_out"):
        NotAList().process([{"text": "a"}])


def test_a_subclass_that_shadows_name_is_refused():
    with pytest.raises(StageContractError, match=r"Shadow.name: .*would turn it into a setting"):

        @dataclass
        class Shadow(Shout):
            name: str = "shadow"

    @dataclass
    class Renamed(Shout):  # the contract's way: no annotation
        name = "renamed"

    assert Renamed().name == "renamed" and "name" not in Renamed().settings()


def test_a_stage_cannot_write_its_own_batch_loop():
    with pytest.raises(StageContractError, match="the contract owns the batch loop"):

        class OwnLoop(Shout):
            def process(self, rows):
                return [{"loud": "x", "chars": 1} for _ in rows]


def test_run_batch_must_return_one_result_per_item():
    @dataclass
    class Short(Shout):
        def run_batch(self, items):
            return [t.upper() for t in items][:-1]

    # A bug in the stage, not in a row: it stops the map.
    with pytest.raises(StageContractError, match=r"shout.run_batch returned 1 results for 2 items"):
        Short().process([{"text": "a"}, {"text": "b"}])


def test_filter_is_a_dataclass_step_usable_alone():
    from lomo_datasets.processors.aggregate import KeepQC
    from lomo_datasets.core.stage import Filter

    out = apply_stage(texts("ab", "boom", "abcd"), Shout(), load_from_cache_file=False)
    kept, dropped = Filter("keep_short", "chars", high=3).split(out)
    assert kept["text"] == ["ab"] and dropped["text"] == ["boom", "abcd"]  # no score: dropped too
    assert set(dropped["drop_reason"]) == {"keep_short"}
    assert KeepQC().settings() == {"column": "qc_pass", "low": 1.0, "high": None, "enabled": True}
    with pytest.raises(SettingError, match="keep_short: low"):
        Filter("keep_short", "chars", low=3, high=1)


def test_every_recipe_step_is_a_dataclass_that_lists_its_settings():
    from lomo_datasets.execution import recipes
    from lomo_datasets.execution.pipeline import build_steps

    for recipe in recipes.RECIPES.values():
        for name, _ in recipe.steps:
            with pytest.raises(SettingError, match=rf"step '{name}': .*no_such_setting.*; valid settings: \['\w+'"):
                build_steps(recipe, overrides={name: {"no_such_setting": 1}}, embedded=True)
    with pytest.raises(SettingError, match=r"valid settings: \['column', 'low', 'high', 'enabled'\]"):
        build_steps(recipes.get_recipe("livecc-sft"), overrides={"keep_wps": {"threshold": 1}})


def test_a_range_declared_on_the_field_is_the_one_checked():
    """``bounds.setting(default, low, high, what)`` declares a number setting's range on its
    field; the contract checks it once (the name table's range for ``width`` is wider)."""
    from lomo_datasets.core.bounds import setting

    @dataclass
    class Ranged(Stage):
        name = "ranged"
        width: int = setting(32, 1, 100, "pixels")

        def features(self):
            return Features({})

    with pytest.raises(SettingError, match=r"ranged.width=0: use pixels from 1 to 100"):
        Ranged(width=0)
    with pytest.raises(SettingError, match=r"ranged.width=101: use pixels from 1 to 100"):
        Ranged(width=101)
    assert Ranged(width="100").width == 100  # numeric text becomes a number, as for any setting


def test_a_setting_may_not_shadow_a_contract_method():
    """A field named like a method the executors call on every step (``keep_rows``) would
    replace it; the class is refused when it is defined (``language.keep`` is fine)."""
    with pytest.raises(StageContractError, match="'keep_rows' is a method of the stage contract"):
        @dataclass
        class Shadow(Stage):
            name = "shadow"
            keep_rows: str = "en"

    from lomo_datasets.processors.language import DetectLanguage

    assert not DetectLanguage().drops_rows and DetectLanguage().keep == "en"
