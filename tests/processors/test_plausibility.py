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
