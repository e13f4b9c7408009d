"""Causal-LM loss filter with the real SmolLM2-135M-Instruct (embedded GGUF, dequantized once)."""

from __future__ import annotations

import math

import pytest
from datasets import Dataset

from lomo_datasets.execution.pipeline import Filter
from lomo_datasets.processors.lm_loss import LMLoss, batch_losses, conversation, encode
from lomo_datasets.core.stage import SettingError, apply_stage, split_by_threshold

pytestmark = pytest.mark.slow


def _content(text: str) -> list[dict]:
    return [{"start": float(i), "end": i + 0.5, "word": w} for i, w in enumerate(text.split())]


ROWS = [
    {"video_id": "a", "title": "Cooking pasta at home", "previous": "", "content": _content("Today we cook pasta at home. First, boil a large pot of salted water.")},
    {"video_id": "b", "title": "Football match highlights", "previous": "The home team starts with the ball.", "content": _content("A long pass goes to the right wing and the striker scores.")},
    {"video_id": "c", "title": "A walk", "previous": "", "content": _content("zq vlorp fnark xxj qqq")},
    {"video_id": "d", "title": "Empty", "previous": "", "content": []},
]


@pytest.fixture(scope="module")
def stage():
    # float32 everywhere (on a GPU "auto" would pick bfloat16, too coarse for the 1e-3 check).
    return LMLoss(model="embedded:smollm2-135m", batch_size=4, dtype="float32")


def test_assistant_tokens_only_and_no_end_of_turn(stage):
    _, tokenizer = stage.lm
    messages = conversation("Cooking pasta", "Today we cook pasta.")
    ids, first, last = encode(tokenizer, messages)
    assert tokenizer.decode(ids[first:last]) == "Today we cook pasta."
    assert ids[last] == tokenizer.convert_tokens_to_ids(tokenizer.eos_token)  # the end of turn is not counted
    prompt = tokenizer.decode(ids[:first])
    assert "Video Title: Cooking pasta" in prompt and prompt.rstrip().endswith("assistant")


def test_losses_are_finite_and_the_same_alone_and_in_a_padded_batch(stage):
    model, tokenizer = stage.lm
    convs = [stage.messages(row) for row in ROWS[:3]]
    batch = batch_losses(model, tokenizer, convs)
    assert all(math.isfinite(x) and x > 0 for x in batch)
    for conv, in_batch in zip(convs, batch):
        alone = batch_losses(model, tokenizer, [conv])[0]
        assert abs(alone - in_batch) < 1e-3
    # Lengths differ, so the batch really was padded.
    lengths = {len(encode(tokenizer, c)[0]) for c in convs}
    assert len(lengths) == 3
    # Fluent English scores lower than letter soup.
    assert batch[0] < batch[2]


def test_logits_only_at_counted_positions_match_full_logits(stage, monkeypatch):
    from lomo_datasets.processors import lm_loss

    model, tokenizer = stage.lm
    convs = [stage.messages(row) for row in ROWS[:2]]
    lean = batch_losses(model, tokenizer, convs)
    monkeypatch.setattr(lm_loss, "_decoder_and_head", lambda m: (None, None))  # the full-logits path
    full = batch_losses(model, tokenizer, convs)
    assert lean == pytest.approx(full, abs=1e-4)


def test_previous_goes_into_the_prompt(stage):
    with_prev = stage.messages(ROWS[1])[1]["content"]
    assert "Previous transcription: The home team starts with the ball." in with_prev
    no_prev = LMLoss(model="embedded:smollm2-135m", use_previous=False).messages(ROWS[1])[1]["content"]
    assert "Previous" not in no_prev
    short = LMLoss(model="embedded:smollm2-135m", max_previous_words=2).messages(ROWS[1])[1]["content"]
    assert "Previous transcription: the ball." in short


def test_stage_map_and_band_filter(stage):
    ds = Dataset.from_list([{**row, "errors": []} for row in ROWS])
    out = apply_stage(ds, stage, load_from_cache_file=False)
    losses = out["lm_loss"]
    assert all(math.isfinite(x) for x in losses[:3]) and losses[3] is None
    assert out[3]["errors"][0]["stage"] == "lm_loss" and "no transcript" in out[3]["errors"][0]["error"]
    flt = Filter("lm_loss", "lm_loss", low=0.0, high=(losses[0] + losses[2]) / 2)
    kept, dropped = split_by_threshold(out, flt.column, flt.low, flt.high, reason=flt.name)
    assert "a" in kept["video_id"] and "c" in dropped["video_id"] and "d" in dropped["video_id"]


def test_settings_are_checked():
    with pytest.raises(SettingError, match="batch_size"):
        LMLoss(model="embedded:smollm2-135m", batch_size=0)
    with pytest.raises(SettingError, match="unknown embedded model"):
        LMLoss(model="embedded:nope")
