"""Compress (summary + temporal view) with the embedded SmolLM2-135M under xgrammar, on records
with hand-made subtitle lines; and the English-aware translate step of the LoMo recipe."""

from __future__ import annotations

import pytest
from datasets import Dataset

from lomo_datasets.core import features as F
from lomo_datasets.llm import prompts as P
from lomo_datasets.processors.compress import Compress, english_segments, usable_lines
from lomo_datasets.processors.translate import TranslateToEnglish
from lomo_datasets.core.stage import SettingError, apply_stage

LINES = [
    "Today we cook pasta at home.",
    "First, boil a large pot of salted water.",
    "Next, add the pasta and stir it well.",
    "After ten minutes, drain the water and mix in the tomato sauce.",
    "Finally, serve it with fresh basil.",
]


def segments(lines=LINES, step=3.0, offset=0.5):
    return [{"start": offset + step * i, "end": offset + step * i + 2.8, "text": t} for i, t in enumerate(lines)]


def row(video_id, **kw):
    base = dict(video_id=video_id, title="Cooking pasta", language="en", duration=16.0,
                segments=segments(), segments_en=[], errors=[])
    base.update(kw)
    return base


def test_english_segments_and_usable_lines():
    assert english_segments(row("a")) == segments()
    translated = [{"start": 0.0, "end": 1.0, "text": "Hello"}]
    assert english_segments(row("b", language="zh", segments_en=translated)) == translated
    with pytest.raises(ValueError, match="run translate"):
        english_segments(row("c", language="zh"))
    with pytest.raises(ValueError, match="no subtitle lines"):
        english_segments(row("d", language="zh", segments=[]))
    lines = segments() + [{"start": 15.0, "end": 17.0, "text": "past the end"}, {"start": 2.0, "end": 2.0, "text": "empty window"}]
    assert [i for i, _ in usable_lines(lines, 16.0)] == [0, 1, 2, 3, 4]


def test_temporal_pick_is_offered_lines_drawn_per_video():
    def offered(stage, video_id):
        _, task = stage.requests(row(video_id))["temporal"]
        return task.schema["properties"]["index"]["enum"]

    stage = Compress()
    picks = {v: offered(stage, v) for v in ("pasta", "city", "football", "garden", "market", "chess")}
    assert all(len(p) == 3 and p == sorted(p) and set(p) <= {0, 1, 2, 3, 4} for p in picks.values())
    assert offered(stage, "pasta") == picks["pasta"]  # seeded by the video id: a rerun offers the same
    assert len({tuple(p) for p in picks.values()}) > 1 and {p[0] for p in picks.values()} != {0}
    assert offered(Compress(temporal_choices=0), "pasta") == [0, 1, 2, 3, 4]  # all, as LoMo-Pipe
    messages, _ = stage.requests(row("pasta"))["temporal"]
    shown = [line.split(".")[0] for line in messages[-1]["content"].splitlines() if line[:1].isdigit()]
    assert shown == [str(k) for k in picks["pasta"]]  # the lines shown are the ones allowed


def test_bad_settings_raise():
    with pytest.raises(SettingError, match="max_lines"):
        Compress(max_lines=1)
    with pytest.raises(SettingError, match="temporal_choices"):
        Compress(temporal_choices=-1)
    with pytest.raises(SettingError, match="backend"):
        Compress(backend="nope")


@pytest.mark.slow
def test_compress_with_smollm2_writes_valid_views():
    rows = [
        row("pasta"),
        # translated Mandarin: the English lines are segments_en
        row("translated", language="zh", segments=[{"start": s["start"], "end": s["end"], "text": "中文"} for s in segments()],
            segments_en=segments()),
        row("no_translation", language="zh"),  # Mandarin, not translated: a row error
        row("failed_upstream", errors=[{"stage": "asr", "error": "boom"}]),
    ]
    ds = Dataset.from_list(rows, features=F.merge(Dataset.from_list(rows).features, {"segments_en": F.SEGMENTS}))
    # The 135M model cannot check its own items against their lines (grounding_rotations=0 keeps
    # the lexical test only; test_grounding.py checks the LLM test with the 1.5B model).
    stage = Compress(model="embedded:smollm2-135m", summary_max_chars=200, text_max_chars=80, max_tries=3, cpu_threads=1,
                     grounding_rotations=0)
    out = apply_stage(ds, stage)
    assert out.features["temporal"] == F.TEMPORAL
    by_id = {r["video_id"]: r for r in out}
    assert by_id["no_translation"]["summary"] is None
    assert "run translate" in by_id["no_translation"]["errors"][-1]["error"]
    assert by_id["failed_upstream"]["errors"] == [{"stage": "asr", "error": "boom"}]  # passed through untouched
    for vid in ("pasta", "translated"):
        r = by_id[vid]
        assert r["errors"] == [], r["errors"]
        assert len(r["summary"].split()) >= 3
        t = r["temporal"]
        seg = segments()[t["index"]]
        # text and window are the segment's own, never model-written numbers
        assert (t["subtitle"], t["start"], t["end"]) == (seg["text"], seg["start"], seg["end"])
        assert 0 <= t["start"] < t["end"] <= r["duration"]
        assert t["conclusion"].strip() and t["question"].strip() and t["answer"].strip()
        assert len(t["wrong"]) == 3 and len({w.lower() for w in t["wrong"] + [t["answer"]]}) == 4
        assert [p["name"] for p in r["prompts"]] == ["summary", "temporal", "temporal_qa", "grounding"]
        assert r["prompts"][0] == P.SUMMARY.provenance()


def test_translate_to_english_skips_english_and_never_loads_a_model():
    stage = TranslateToEnglish(model="none")
    rows = [row("en"), row("zh", language="zh"), row("silent", language="zh", segments=[])]
    results = stage.process(rows)
    assert results[0] == {"segments_en": segments()}
    assert isinstance(results[1], ValueError) and "translate.model" in str(results[1])
    assert results[2] == {"segments_en": []}


def test_embedded_flag_picks_the_1_5b_model_for_every_llm_step():
    from lomo_datasets.execution.pipeline import build_steps
    from lomo_datasets.execution.recipes import get_recipe

    steps = {s.name: s for s in build_steps(get_recipe("lomo"), embedded=True)}
    # Translation too (issue 13): no row fails for lack of a translation model.
    assert steps["translate"].model == steps["compress"].model == steps["qa"].model == "embedded:qwen2.5-coder-1.5b"
    assert steps["compress"].backend == steps["qa"].backend == steps["translate"].llm_backend == "ctranslate2"
    assert steps["translate"].uses_llm
    # A model named explicitly keeps its own backend default (SmolLM2 runs under xgrammar).
    named = {s.name: s for s in build_steps(get_recipe("lomo"), None, {"qa": {"model": "embedded:smollm2-135m"}}, embedded=True)}
    assert named["qa"].model == "embedded:smollm2-135m" and named["qa"].backend == "transformers"
    assert named["compress"].backend == "ctranslate2"
