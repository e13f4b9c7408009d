"""Transcript plausibility (issue 21 item 5): the LM loss per subtitle line, in the transcript's
language, flags gibberish; it does not drop."""

from __future__ import annotations

import pytest

from lomo_datasets.core.stage import SettingError
from lomo_datasets.processors.plausibility import TranscriptPlausibility


def test_thresholds_are_a_checked_setting():
    assert TranscriptPlausibility(model="embedded:smollm2-135m").threshold("zh-CN") == TranscriptPlausibility().thresholds["zh"]
    assert TranscriptPlausibility().threshold("fr") == TranscriptPlausibility().thresholds["other"]
    with pytest.raises(SettingError, match="thresholds"):
        TranscriptPlausibility(thresholds={"en": 5.0})
    with pytest.raises(SettingError, match="thresholds"):
        TranscriptPlausibility(thresholds={"other": float("nan")})
    with pytest.raises(SettingError, match="min_asr_score"):
        TranscriptPlausibility(min_asr_score=2)


@pytest.mark.slow
def test_plausibility_flags_scrambled_and_gibberish_transcripts_not_real_ones():
    """The embedded SmolLM2 (what --embedded uses for this step) with the shipped thresholds."""
    from lomo_datasets.processors.plausibility import TranscriptPlausibility

    def row(lines, language):
        return {"segments": [{"start": float(k), "end": k + 1.0, "text": t} for k, t in enumerate(lines)], "language": language, "title": ""}

    english = ["Today I will show you how to bake bread.", "First, mix flour, water, salt and yeast in a bowl.",
               "Knead the dough for ten minutes until it is smooth."]
    scrambled = [" ".join(reversed(line.split())) for line in english]
    mandarin = ["今天我们在家做饭。", "首先把水烧开。", "然后放入面条。", "最后加上番茄酱。"]
    gibberish = ["净天瓦门在压座範", "手先把随少凯", "然后放入面条", "最后加上番茄降"]  # issue 21: Whisper on espeak-ng
    stage = TranscriptPlausibility(model="embedded:smollm2-135m")
    out = stage.process([row(english, "en"), row(scrambled, "en"), row(mandarin, "zh"), row(gibberish, "zh"), row([], "zh")])
    flags = [o["transcript_implausible"] for o in out]
    assert flags == [False, True, False, True, None], [o["transcript_loss"] for o in out]
    assert out[0]["transcript_loss"] < out[1]["transcript_loss"] and out[2]["transcript_loss"] < out[3]["transcript_loss"]
    assert [o["transcript_reasons"] for o in out] == [[], ["lm_loss"], [], ["lm_loss"], []]


@pytest.mark.slow
def test_a_whisper_loop_is_implausible_by_the_asr_tests_though_its_loss_is_low():
    """bench_yield's zh_07_human: Whisper looped on "是" (``repetition``, ``high_compression``
    over all its seconds: ``asr_score`` 0.0). A repeated token is easy to predict: the loss alone
    passes it. The same lines with a clean ASR score are not flagged by the ASR test."""
    loop = ["美,美,今天它是说话。", "来," + "是," * 12, "是," * 11, "是," * 14]
    row = {"segments": [{"start": float(k), "end": k + 1.0, "text": t} for k, t in enumerate(loop)], "language": "zh", "title": ""}
    stage = TranscriptPlausibility(model="embedded:smollm2-135m")
    flagged, clean, off = stage.process([{**row, "asr_score": 0.0, "asr_flags": ["high_compression", "repetition"]},
                                         {**row, "asr_score": 1.0, "asr_flags": []},
                                         {k: v for k, v in row.items()}])
    assert clean["transcript_loss"] < stage.threshold("zh")  # the loss alone would pass it
    assert flagged["transcript_implausible"] and flagged["transcript_reasons"] == ["asr"]
    assert not clean["transcript_implausible"] and clean["transcript_reasons"] == []
    assert off["transcript_reasons"] == []  # no ASR columns: the loss only
