"""Commentary judge + generic user query (LiveCC B6) on the LLM layer, with the real embedded
SmolLM2-135M-Instruct (transformers backend, JSON-schema constrained decoding). A 135M model's
judgement is not meaningful; the tests check the contract: validated answers, NO rows without a
query, row errors, and the filter."""

from __future__ import annotations

import pytest
from datasets import Dataset

from lomo_datasets.llm.stage import validate_json
from lomo_datasets.execution.pipeline import Filter
from lomo_datasets.processors.commentary import SCHEMA, TASK, MakePrompt, to_columns
from lomo_datasets.core.stage import SettingError, apply_stage, split_by_threshold

pytestmark = pytest.mark.slow


def _content(text: str) -> list[dict]:
    return [{"start": float(i), "end": i + 0.5, "word": w} for i, w in enumerate(text.split())]


ROWS = [
    {"video_id": "a", "title": "Football match highlights", "category": "Sports",
     "content": _content("The home team starts with the ball. A long pass goes to the right wing. He crosses and the striker scores! What a goal!")},
    {"video_id": "b", "title": "History lecture", "category": "Education",
     "content": _content("In this lecture we discuss the economic causes of the war and the treaties that followed it.")},
    {"video_id": "c", "title": "Empty", "category": "Sports", "content": []},
]


def test_answers_follow_the_schema_and_no_rows_have_no_query():
    stage = MakePrompt(model="embedded:smollm2-135m", batch_size=4, max_tries=2)
    ds = Dataset.from_list([{**row, "errors": []} for row in ROWS])
    out = apply_stage(ds, stage, load_from_cache_file=False)
    for row in out.select(range(2)):
        if row["errors"]:  # the small model may fail the schema check twice: a row error, no crash
            assert row["errors"][0]["stage"] == "prompt" and row["commentary"] is None
            continue
        assert isinstance(row["commentary"], bool)
        if row["commentary"]:
            assert row["query"] and row["query"].strip() == row["query"]
        else:
            assert row["query"] is None
    assert out[2]["errors"][0]["stage"] == "prompt" and "no transcript" in out[2]["errors"][0]["error"]
    assert any(not r["errors"] for r in out.select(range(2)))  # constrained decoding gives valid JSON
    flt = Filter("prompt", "commentary", low=1)
    kept, dropped = split_by_threshold(out, flt.column, flt.low, flt.high, reason=flt.name)
    assert all(kept["commentary"]) and len(kept) + len(dropped) == 3
    assert all(q for q in kept["query"])


def test_prompt_holds_the_transcript_and_metadata():
    stage = MakePrompt(model="embedded:smollm2-135m", max_words=5)
    messages = stage.messages(ROWS[0])
    user = messages[-1]["content"]
    assert "Title: Football match highlights" in user and "Category: Sports" in user
    assert "Transcript: The home team starts with\n" in user  # cut to max_words


def test_to_columns_and_schema():
    assert to_columns({"result": "NO", "query": "ignored"}) == {"commentary": False, "query": None}
    assert to_columns({"result": "YES", "query": " Commentate please. "}) == {"commentary": True, "query": "Commentate please."}
    validate_json({"result": "YES", "query": "x"}, SCHEMA)
    with pytest.raises(ValueError):
        validate_json({"result": "MAYBE", "query": "x"}, SCHEMA)
    with pytest.raises(ValueError, match="empty"):
        TASK.check({"result": "YES", "query": "  "})
    with pytest.raises(SettingError, match="max_words"):
        MakePrompt(model="embedded:smollm2-135m", max_words=0)
