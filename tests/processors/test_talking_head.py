"""Talking-head scores.

The vision-language scorer runs its real code path (frames -> image processor -> chat template
-> expanded image tokens -> Qwen2-VL forward -> P("Yes")) on a TINY RANDOM Qwen2-VL built here
(2 text layers, hidden 64; vision depth 2) with a small word-level tokenizer that has the Qwen
vision special tokens and "Yes"/"No". Its weights are random, so its probabilities mean nothing:
the tests check ranges, shapes, batching and token bookkeeping, not the answer.

The face scorer runs on a real talking-face clip (Megamind.avi from Debian's opencv-doc,
copied into a temp dir at test time) and on a generated clip with no face.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from lomo_datasets.execution.pipeline import Filter
from lomo_datasets.processors.talking_head import (
    IMAGE_PAD,
    TalkingHead,
    TalkingHeadFace,
    TalkingHeadVLM,
    build_inputs,
    speech_share,
    yes_probabilities,
)
from lomo_datasets.core.stage import SettingError, apply_stage, split_by_threshold

MEGAMIND = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2_vl(folder: Path) -> Path:
    """Save a tiny RANDOM Qwen2-VL (model + tokenizer + image processor) to ``folder``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", IMAGE_PAD, "<|video_pad|>"]
    words = ["[UNK]", "user", "assistant", "system", "Yes", "No", "Here", "are", "frames", "?", ".", "Answer", "or"]
    vocab = {tok: i for i, tok in enumerate(words + specials)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )
    tokenizer.chat_template = CHATML
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(vocab), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            "bos_token_id": vocab["<|im_start|>"], "eos_token_id": vocab["<|im_end|>"], "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2},
        image_token_id=vocab[IMAGE_PAD], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Qwen2VLImageProcessorPil().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-qwen2-vl"))


def test_vlm_yes_probability_real_code_path(tiny_vlm, test_media):
    stage = TalkingHeadVLM(model=str(tiny_vlm), batch_size=2, dtype="float32")
    vm = stage.vision
    assert vm.yes_id == vm.tokenizer.convert_tokens_to_ids("Yes")  # looked up, not hard-coded
    rows = [
        {"video": str(test_media.english)},
        {"video": str(test_media.english2), "video_start": 0.5, "video_end": 2.5},
    ]
    frames = [stage.frames(r) for r in rows]
    assert [len(f) for f in frames] == [8, 8] and frames[0][0].shape == (180, 320, 3)
    inputs = build_inputs(vm, frames, stage.question)
    grid = inputs["image_grid_thw"]
    assert grid.shape == (16, 3)
    per_image = int(grid[0].prod()) // vm.merge_size**2
    assert int(inputs["mm_token_type_ids"][0].sum()) == 8 * per_image  # every image placeholder expanded
    assert inputs["input_ids"].shape == inputs["mm_token_type_ids"].shape
    probs = yes_probabilities(vm, frames, stage.question)
    assert len(probs) == 2 and all(0.0 <= p <= 1.0 for p in probs)
    # A row alone scores as inside the (left-padded) batch.
    alone = yes_probabilities(vm, frames[1:], stage.question)[0]
    assert abs(alone - probs[1]) < 1e-4


def test_vlm_stage_map_with_bad_row(tiny_vlm, test_media):
    ds = Dataset.from_list(
        [
            {"video_id": "a", "video": str(test_media.english), "errors": []},
            {"video_id": "b", "video": str(test_media.audio_only), "errors": []},
        ]
    )
    out = apply_stage(ds, TalkingHeadVLM(model=str(tiny_vlm)), load_from_cache_file=False)
    assert 0.0 <= out[0]["talking_head"] <= 1.0 and out[0]["errors"] == []
    assert out[1]["talking_head"] is None and "NoVideoError" in out[1]["errors"][0]["error"]


def test_face_score_megamind_and_no_face(tmp_path, test_media):
    if not MEGAMIND.exists():
        pytest.skip("opencv-doc is not installed (apt-get install opencv-doc)")
    clip = tmp_path / "Megamind.avi"
    shutil.copy(MEGAMIND, clip)  # never committed: copied at test time
    stage = TalkingHeadFace()
    face = stage.process_row({"video": str(clip)})
    assert face["talking_head"] > 0.5 and face["face_share"] == face["talking_head"]
    none = stage.process_row({"video": str(test_media.english)})
    assert none["talking_head"] == 0.0
    # With speech: the share of the clip covered by words scales the score.
    words = [{"start": 0.0, "end": 5.0, "word": "hi"}]
    spoken = TalkingHeadFace(use_speech=True).process_row({"video": str(clip), "video_start": 0.0, "video_end": 10.0, "content": words})
    assert spoken["speech_share"] == pytest.approx(0.5)
    assert spoken["talking_head"] == pytest.approx(face_at(clip, 0.0, 10.0) * 0.5)
    # The filter keeps rows below the threshold.
    ds = Dataset.from_list([{"video_id": "mega", **face}, {"video_id": "none", **none}])
    flt = Filter("talking_head", "talking_head", high=0.5)
    kept, dropped = split_by_threshold(ds, flt.column, flt.low, flt.high, reason=flt.name)
    assert kept["video_id"] == ["none"] and dropped["video_id"] == ["mega"]


def face_at(clip: Path, start: float, end: float) -> float:
    return TalkingHeadFace().process_row({"video": str(clip), "video_start": start, "video_end": end})["face_share"]


def test_speech_share_merges_overlaps():
    words = [{"start": 0.0, "end": 2.0}, {"start": 1.0, "end": 3.0}, {"start": 8.0, "end": 12.0}]
    assert speech_share(words, 0.0, 10.0) == pytest.approx(0.5)
    assert speech_share([], 0.0, 10.0) == 0.0


def test_factory_and_settings():
    # the method picks the class through the variant registry (no hidden __new__)
    assert TalkingHead.variant_class({"method": "face"}) is TalkingHeadFace
    assert TalkingHead.variant_class({}) is TalkingHeadVLM  # the field's default method
    assert isinstance(TalkingHead.create(method="face"), TalkingHeadFace)
    assert isinstance(TalkingHead.create(method="vlm", model="some/folder"), TalkingHeadVLM)
    with pytest.raises(SettingError, match=r"build it with TalkingHead.create\(method='face'\)"):
        TalkingHead(method="face")
    # A setting of the other method (a recipe default) is ignored, an unknown one fails.
    assert TalkingHead.create(method="vlm", model="some/folder", use_speech=True).model == "some/folder"
    with pytest.raises(TypeError):
        TalkingHead.create(method="face", colour=True)
    with pytest.raises(SettingError, match=r"talking_head.method='asd': use one of \['face', 'vlm'\]"):
        TalkingHead.create(method="asd")
    with pytest.raises(SettingError, match="no vision-language model ships"):
        TalkingHeadVLM(model="embedded:smollm2-135m")
    with pytest.raises(SettingError, match="min_face_ratio"):
        TalkingHeadFace(min_face_ratio=0)
    assert np.isfinite(TalkingHeadFace().min_face_ratio)
