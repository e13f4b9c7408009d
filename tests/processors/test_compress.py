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


# --------------------------------------------------------------------------------------------
# A line that gives no grounded item: the next line shown for the pick (a scripted model)
# --------------------------------------------------------------------------------------------

#: Lines of more than three content words (a shorter line may be its own answer).
LONG_LINES = [
    "First, boil a large pot of salted water.",
    "Next, add the dry pasta and stir it well.",
    "After ten minutes, drain the water and mix in the tomato sauce.",
    "Finally, serve the hot pasta with fresh green basil.",
    "Then we wash the big pot and the wooden spoon.",
]
WRONG = '["A big wooden spoon", "An empty glass jar", "A brown paper bag"]'


def scripted_reply(task: str, prompt: str, stubborn: str) -> str:
    """A model that picks the first line it may, copies ``stubborn`` whole whenever it writes
    an item about it (refused: "the answer is the whole line"), writes a grounded item about
    any other line, and checks an item by the option whose words are in the evidence line."""
    import json
    import re

    if task == "summary":
        return '{"summary": "Someone cooks pasta at home in a kitchen."}'
    if task == "temporal":
        return '{"index": %s}' % re.findall(r"^(\d+)\. ", prompt, re.M)[0]
    line = re.search(r'"(.*)"', prompt).group(1)
    if task == "temporal_qa":
        words = line.rstrip(".").split()
        answer = line if line == stubborn else " ".join(words[-2:])
        return json.dumps({"conclusion": f"{answer} is shown", "question": "What can be seen at this moment?",
                           "answer": answer, "wrong": json.loads(WRONG)})
    options = dict(re.findall(r"^([ABCD]): (.*)$", prompt, re.M))  # grounding: the option found in the line
    return '{"answer": "%s"}' % next((k for k, v in options.items() if v in line), "A")


def test_a_line_without_a_grounded_item_gives_way_to_the_next_line_shown():
    from lomo_datasets.llm import backends
    from lomo_datasets.llm.stage import Completion

    stubborn = {}

    @backends.register_backend
    class Scripted(backends.Backend):
        name, modules, library, remote, feedback = "test-scripted", {}, None, True, True
        prompts: list = []

        def generate(self, messages_list, task, sample=0):
            tasks = task if isinstance(task, list) else [task] * len(messages_list)
            self.prompts.extend((t.name, m[-1]["content"]) for t, m in zip(tasks, messages_list))
            return [Completion(scripted_reply(t.name, m[-1]["content"], stubborn["line"]), True)
                    for t, m in zip(tasks, messages_list)]

    try:
        stage = Compress(backend="test-scripted", model="scripted", device="cpu", grounding_rounds=2, grounding_lines=2)
        video = row("pasta", segments=segments(LONG_LINES))
        pending = stage.prepare(video)
        shown = pending.requests["temporal"][1].schema["properties"]["index"]["enum"]
        first, then = shown[0], pending.others[0] if pending.others[0] != shown[0] else pending.others[1]
        stubborn["line"] = LONG_LINES[first]
        [out] = apply_stage(Dataset.from_list([video]), stage)
        assert out["errors"] == [], out["errors"]
        t = out["temporal"]
        # The item, its text and its window are the next line's, never a mix of the two.
        assert t["index"] == then and t["subtitle"] == LONG_LINES[then] and t["start"] == segments()[then]["start"]
        assert t["answer"] in LONG_LINES[then] and t["answer"] != LONG_LINES[then]
        events = {e["event"]: e["count"] for e in out["generation"]}
        assert events["grounding_lines"] == 2 and events["grounding_rounds"] == 3  # 2 rounds on the first line, 1 on the next
        written = [p for name, p in Scripted.prompts if name == "temporal_qa"]
        assert len(written) == 2 * stage.max_tries + 1
        # The second round on the stubborn line says why the first was refused; the next line starts afresh.
        assert "the answer is the whole line" in written[stage.max_tries] and LONG_LINES[first] in written[stage.max_tries]
        assert "refused" not in written[-1] and LONG_LINES[then] in written[-1]

        # No other line to try (grounding_lines=1): the row fails, the reason names the line.
        Scripted.prompts.clear()
        [failed] = apply_stage(Dataset.from_list([video]), dataclasses_replace(stage, grounding_lines=1))
        assert failed["temporal"] is None
        error = failed["errors"][-1]["error"]
        assert "no item grounded in its line after 2 rounds on 1 line" in error and LONG_LINES[first][:40] in error
        assert "the answer is the whole line" in error
    finally:
        from lomo_datasets.core.stage import release_models

        release_models(stage)  # apply_stage keeps a step's model for the next call; the runner releases it
        backends.unregister_backend("test-scripted")


def dataclasses_replace(stage, **changes):
    import dataclasses

    return dataclasses.replace(stage, **changes)
