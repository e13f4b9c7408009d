"""Word-level clipping: property tests over random word sequences, hand-made cases that pin the
fixed sentence-start rule, subtitle parsing, and the fan-out through ``datasets``' batched map."""

from __future__ import annotations

import random

import pytest
from datasets import Dataset

from lomo_datasets.core import features as F
from lomo_datasets.processors.clip import (
    Clip,
    NoClipsError,
    is_sentence_start,
    join_words,
    parse_subtitles,
    pretrain_clips,
    read_subtitles,
    sft_clips,
    split_to_words,
    words_per_second,
)
from lomo_datasets.core.stage import SettingError, apply_stage

VOCAB = ["the", "ball", "goes", "left", "and", "he", "runs", "fast", "What", "a", "goal", "Now", "The", "I", "OK"]
PUNCT = ["", "", "", "", ".", "?", "!", ","]


def random_words(rng: random.Random, n: int) -> list[dict]:
    """Words with random lengths and gaps: mostly short pauses, sometimes long silences."""
    t = rng.uniform(0, 5)
    words = []
    for _ in range(n):
        roll = rng.random()
        gap = rng.uniform(0, 0.6) if roll < 0.85 else rng.uniform(0.5, 8.0)
        start = t + gap
        end = start + rng.uniform(0.05, 1.2)
        word = rng.choice(VOCAB)
        if rng.random() < 0.3:
            word = word[0].upper() + word[1:]
        words.append({"start": round(start, 3), "end": round(end, 3), "word": word + rng.choice(PUNCT), "probability": 0.9})
        t = end
    return words


def check_clips(words, spans, min_sec, max_sec, max_silence, sft):
    last_end = 0
    for i, j in spans:
        assert 0 <= i < j <= len(words)
        assert i >= last_end, "clips overlap or are out of order"
        last_end = j
        clip = words[i:j]
        duration = clip[-1]["end"] - clip[0]["start"]
        assert min_sec - 1e-9 <= duration <= max_sec + 1e-9, (duration, min_sec, max_sec)
        for a, b in zip(clip, clip[1:]):
            assert b["start"] - a["end"] <= max_silence + 1e-9
        if sft:
            first = clip[0]["word"]
            assert i == 0 or (first[0].isupper() and words[i - 1]["word"].endswith((".", "?", "!")))


@pytest.mark.parametrize("mode", ["pretrain", "sft"])
def test_clip_properties_over_random_sequences(mode):
    rng = random.Random(1234 if mode == "pretrain" else 4321)
    total_clips = 0
    for case in range(1000):
        words = random_words(rng, rng.randint(0, 120))
        min_sec = rng.uniform(0, 10)
        max_sec = min_sec + rng.uniform(0.5, 30)
        max_silence = rng.uniform(0.2, 4)
        stage = Clip(mode=mode, source="words", min_clip_sec=min_sec, max_clip_sec=max_sec, max_silence_sec=max_silence)
        find = pretrain_clips if mode == "pretrain" else sft_clips
        spans = find(words, min_sec, max_sec, max_silence)
        check_clips(words, spans, min_sec, max_sec, max_silence, sft=mode == "sft")
        row = {"video_id": f"v{case}", "video": "", "words": words, "segments": []}
        if not spans:  # no clip: the video fails with the reason, so the run accounts for it
            with pytest.raises(NoClipsError, match="no clip of"):
                stage.process_row(row)
            continue
        rows = stage.process_row(row)
        assert len(rows) == len(spans)
        context = stage.context_column
        for (i, j), row in zip(spans, rows):
            assert row[context] == join_words(words[:i])  # exactly the words before the clip
            assert [w["word"] for w in row["content"]] == [w["word"] for w in words[i:j]]
            assert row["video_start"] == words[i]["start"] and row["video_end"] == words[j - 1]["end"]
            assert row["wps"] == pytest.approx((j - i) / (words[j - 1]["end"] - words[i]["start"]))
        total_clips += len(spans)
    assert total_clips > 500  # the random cases really exercise clipping


def test_pretrain_cuts_at_silence_and_keeps_previous():
    # Two runs of speech separated by a 5 s silence; each run lasts 4 s.
    words = [{"start": float(t), "end": float(t) + 0.9, "word": f"w{t}"} for t in range(0, 5)]
    words += [{"start": 10.0 + t, "end": 10.9 + t, "word": f"x{t}"} for t in range(0, 5)]
    spans = pretrain_clips(words, min_clip_sec=3, max_clip_sec=20, max_silence_sec=3)
    assert spans == [(0, 5), (5, 10)]
    rows = Clip(mode="pretrain", min_clip_sec=3, max_clip_sec=20).process_row({"video_id": "v", "video": "", "words": words})
    assert rows[0]["previous"] == "" and rows[1]["previous"] == "w0 w1 w2 w3 w4"
    # Too short a minimum length for the second run drops it; a short maximum splits runs.
    assert pretrain_clips(words, min_clip_sec=5, max_clip_sec=20, max_silence_sec=3) == []
    assert pretrain_clips(words, min_clip_sec=1, max_clip_sec=2, max_silence_sec=3) == [(0, 2), (2, 4), (5, 7), (7, 9)]


def _w(text: str) -> list[dict]:
    return [{"start": float(i), "end": i + 0.5, "word": w} for i, w in enumerate(text.split())]


@pytest.mark.parametrize(
    "text, index, expected",
    [
        ("we won. The end", 2, True),  # the seed's whole-word isupper() said False here
        ("we won. the end", 2, False),
        ("really? Yes", 1, True),
        ("wow! Great", 1, True),
        ("we won, The end", 2, False),  # a comma does not end a sentence
        ("we won. NASA said", 2, True),
        ("we won. 3 goals", 2, False),
        ("Hello there", 0, True),  # the first word always starts a sentence
        ("hello there", 0, True),
    ],
)
def test_sentence_start_rule(text, index, expected):
    assert is_sentence_start(_w(text), index) is expected


def test_sft_clips_start_at_the_fixed_sentence_starts():
    words = _w("and so on. The match starts now and the team attacks. it goes on")
    spans = sft_clips(words, min_clip_sec=2, max_clip_sec=100, max_silence_sec=3)
    # The first clip starts at word 0 and runs to the end (no silence): one clip.
    assert spans == [(0, len(words))]
    spans = sft_clips(words, min_clip_sec=2, max_clip_sec=3, max_silence_sec=3)
    assert spans == [(0, 3), (3, 6)]
    starts = [words[i]["word"] for i, _ in spans]
    assert starts == ["and", "The"]  # "it" after "attacks." is lower case: not a start
    rows = Clip(mode="sft", min_clip_sec=2, max_clip_sec=3).process_row({"video_id": "v", "video": "", "words": words})
    assert rows[1]["preasr"] == "and so on."


def test_split_to_words_spreads_times_and_skips_brackets_and_repeats():
    words = split_to_words([(0.0, 2.0, "hello hello world now"), (2.0, 3.0, "[Music]"), (3.0, 4.0, "  "), (4.0, 5.0, "go")])
    assert [w["word"] for w in words] == ["hello", "world", "now", "go"]
    assert [(w["start"], w["end"]) for w in words] == [(0.0, 0.667), (0.667, 1.333), (1.333, 2.0), (4.0, 5.0)]


SRT = """1
00:00:01,000 --> 00:00:03,500
Hello <i>there</i> world

2
00:00:04,000 --> 00:00:05,000
[Applause]

3
01:00:00,250 --> 01:00:01,250
Last line
"""

VTT = """WEBVTT
Kind: captions

00:01.000 --> 00:03.500 align:start position:0%
Hello there
world

00:00:04.000 --> 00:00:05.000
second cue
"""


ROLLING_VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.000 --> 00:00:02.000 align:start position:0%
the<00:00:00.500><c> home</c><00:00:01.000><c> team</c>

00:00:02.000 --> 00:00:02.010 align:start position:0%
the home team

00:00:02.010 --> 00:00:04.000 align:start position:0%
the home team
starts<00:00:03.000><c> with</c>

00:00:04.000 --> 00:00:06.000 align:start position:0%
starts with
the ball
"""


def test_rolling_youtube_captions_are_not_repeated():
    cues = parse_subtitles(ROLLING_VTT)
    assert cues == [(0.0, 2.0, "the home team"), (2.01, 4.0, "starts with"), (4.0, 6.0, "the ball")]
    words = split_to_words(cues)
    assert [w["word"] for w in words] == "the home team starts with the ball".split()
    # SRT does not roll: identical consecutive cues are kept.
    assert len(parse_subtitles(ROLLING_VTT.replace("WEBVTT", "NOTE"), rolling=False)) == 4


def test_parse_srt_and_vtt(tmp_path):
    assert parse_subtitles(SRT) == [(1.0, 3.5, "Hello there world"), (4.0, 5.0, "[Applause]"), (3600.25, 3601.25, "Last line")]
    assert parse_subtitles(VTT) == [(1.0, 3.5, "Hello there world"), (4.0, 5.0, "second cue")]
    (tmp_path / "a.vtt").write_text(VTT, encoding="utf-8")
    assert read_subtitles(tmp_path / "a.vtt") == parse_subtitles(VTT)


def test_settings_are_checked():
    with pytest.raises(SettingError, match="mode"):
        Clip(mode="both")
    with pytest.raises(SettingError, match="min_clip_sec"):
        Clip(min_clip_sec=50, max_clip_sec=10)
    with pytest.raises(SettingError, match="source"):
        Clip(source="ocr")


def test_fan_out_through_batched_map(tmp_path):
    """One row per clip from a batched map; a failed video gives one row with the error, and so
    does a video without clips (NoClipsError); clips from a sidecar SRT file; upstream errors pass through."""
    long_words = [{"start": t * 1.0, "end": t + 0.8, "word": f"w{t}", "probability": 0.5} for t in range(40)]
    long_words += [{"start": 50.0 + t, "end": 50.8 + t, "word": f"x{t}", "probability": 0.5} for t in range(20)]
    video = tmp_path / "subbed.mp4"
    video.write_bytes(b"")
    (tmp_path / "subbed.en.srt").write_text(SRT, encoding="utf-8")
    rows = {
        "video_id": ["long", "short", "failing", "subbed", "upstream"],
        "video": ["", "", str(tmp_path / "missing.mp4"), str(video), ""],
        "words": [long_words, long_words[:1], [], [], []],
        "segments": [[{"start": 0.0, "end": 10.0, "text": "w0"}], [], [], [], []],
        "errors": [[], [], [], [], [{"stage": "asr", "error": "NoAudioError: no audio"}]],
    }
    features = F.merge({"video_id": F.Value("string"), "video": F.Value("string"), "words": F.WORDS, "segments": F.SEGMENTS, "errors": F.ERRORS})
    ds = Dataset.from_dict(rows, features=features)
    stage = Clip(mode="pretrain", source="auto", min_clip_sec=1.5, max_clip_sec=15, max_silence_sec=3)
    out = apply_stage(ds, stage, batch_size=5, load_from_cache_file=False)
    by_video = {}
    for row in out:
        by_video.setdefault(row["video_id"], []).append(row)
    assert [r["clip_index"] for r in by_video["long"]] == [0, 1, 2, 3, 4]  # 0-15-30-40 | 50-65-70 s
    assert all(1.5 <= r["video_end"] - r["video_start"] <= 15 for r in by_video["long"])
    assert by_video["long"][0]["segments"] == [{"start": 0.0, "end": 10.0, "text": "w0"}]
    assert by_video["long"][0]["words"][0]["probability"] == 0.5
    # 0.8 s of speech: no clip; the video stays as one failed row that says why
    assert [r["clip_index"] for r in by_video["short"]] == [None]
    assert [e["error"] for e in by_video["short"][0]["errors"]] == ["NoClipsError: no clip of 1.5-15 s: 1 timed words"]
    assert [w["word"] for w in by_video["subbed"][0]["content"]] == ["Hello", "there", "world"]
    assert by_video["upstream"][0]["errors"] == [{"stage": "asr", "error": "NoAudioError: no audio"}]
    assert by_video["upstream"][0]["content"] == []

    # The same through two worker processes.
    parallel = apply_stage(ds, stage, num_proc=2, batch_size=2, load_from_cache_file=False)
    assert parallel.to_list() == out.to_list()

    strict = Clip(mode="pretrain", source="subtitles", min_clip_sec=1.0, max_clip_sec=15)
    failed = apply_stage(ds.select([2]), strict, load_from_cache_file=False)
    assert len(failed) == 1
    assert failed[0]["errors"][0]["stage"] == "clip" and "FileNotFoundError" in failed[0]["errors"][0]["error"]
    assert failed[0]["content"] == [] and failed[0]["clip_id"] is None


def test_words_per_second():
    assert words_per_second([]) is None
    assert words_per_second(_w("a b c d")) == pytest.approx(4 / 3.5)
