"""Translate with a tiny random M2M100 built by the test (tests/tiny_models.py) and converted
with ``ct2-transformers-converter``: the real CTranslate2 + tokenizer code path.

The weights are random, so the tests check alignment, shapes, the target-prefix convention and
agreement with transformers' own generation, never the words.
"""

from __future__ import annotations

import re

import pytest
from datasets import Dataset, Features, Value

from lomo_datasets.core import features as F
from lomo_datasets.processors.translate import NLLB_CODES, Translate, TranslateToEnglish, family_of, language_code
from lomo_datasets.core.stage import SettingError, apply_stage
from tests.tiny_models import tiny_m2m100, tiny_m2m100_ct2, tiny_nllb

ZH = ["今天天气很好。", "我们去公园散步。", "先烧水", "然后加面条", "等十分钟。", "城市河流", "桥和船", "球队进球！",
      "市场", "教堂塔老城", "早上看见", "今天", "我们"]


@pytest.fixture(scope="session")
def tiny_ct2():
    return str(tiny_m2m100_ct2())


def stage(model: str, **kw) -> Translate:
    return Translate(model=model, device="cpu", beam_size=1, **{"max_decoding_length": 16, **kw})


def lines(n: int, offset: float = 0.0, empty_at: int | None = None) -> list[dict]:
    out = []
    for i in range(n):
        text = "" if i == empty_at else ZH[i % len(ZH)]
        out.append({"start": offset + 2.0 * i, "end": offset + 2.0 * i + 1.5, "text": text})
    return out


class CountingTranslator:
    """Wraps the real ctranslate2.Translator to count translate_batch calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def translate_batch(self, source, *args, **kwargs):
        self.calls.append(len(source))
        return self.inner.translate_batch(source, *args, **kwargs)


def test_one_line_out_per_line_in_batched_across_rows(tiny_ct2):
    counts = [13, 0, 10, 1, 12]  # more than 9 lines per row: the seed dropped every ninth line
    rows = [{"video_id": f"v{i}", "segments": lines(n, offset=100.0 * i, empty_at=3 if n > 3 else None), "errors": []}
            for i, n in enumerate(counts)]
    ds = Dataset.from_list(rows, features=Features({"video_id": Value("string"), "segments": F.SEGMENTS, "errors": F.ERRORS}))
    translate = stage(tiny_ct2, batch_size=8)
    loaded = translate.translator
    spy = CountingTranslator(loaded.translator)
    loaded.translator = spy
    try:
        out = apply_stage(ds, translate)
    finally:
        loaded.translator = spy.inner
    # One translator call for the whole batch of rows (CTranslate2 sub-batches by length inside).
    non_empty = sum(counts) - sum(1 for n in counts if n > 3)
    assert spy.calls == [non_empty]
    assert out.features["segments_en"] == F.SEGMENTS
    for row, n in zip(out, counts):
        assert row["errors"] == []
        assert len(row["segments_en"]) == len(row["segments"]) == n
        for src, dst in zip(row["segments"], row["segments_en"]):
            assert (dst["start"], dst["end"]) == (src["start"], src["end"])
            assert bool(dst["text"]) == bool(src["text"])  # empty stays empty, others translated


@pytest.mark.parametrize(
    "family, build, src_lang, source_token, target_token",
    [("m2m100", tiny_m2m100, "zh", "__zh__", "__en__"), ("nllb", tiny_nllb, "zho_Hans", "zho_Hans", "eng_Latn")],
)
def test_matches_transformers_greedy_with_target_prefix(family, build, src_lang, source_token, target_token):
    """The family's convention (source starts with the source language token and ends with
    </s>, the target prefix is the target language token) gives the same tokens as
    transformers' generate with forced_bos_token_id on the unconverted model."""
    from transformers import AutoTokenizer, M2M100ForConditionalGeneration

    folder = build()
    translate = stage(str(folder / "ct2"), max_decoding_length=10)  # zh -> en, family "auto"
    loaded = translate.translator
    assert loaded.family == family
    assert translate._target_prefix(loaded) == (src_lang, [target_token])
    ours = translate.translate_texts(ZH[:4])
    tok = AutoTokenizer.from_pretrained(folder / "transformers")
    tok.src_lang = src_lang
    assert family_of(tok) == family
    model = M2M100ForConditionalGeneration.from_pretrained(folder / "transformers").eval()
    theirs = []
    for text in ZH[:4]:
        source = tok.convert_ids_to_tokens(tok.encode(text))
        assert source[0] == source_token and source[-1] == "</s>"
        generated = model.generate(
            **tok(text, return_tensors="pt"), forced_bos_token_id=tok.convert_tokens_to_ids(target_token),
            num_beams=1, do_sample=False, max_new_tokens=10,
        )
        assert tok.convert_ids_to_tokens(generated[0])[:2] == ["</s>", target_token]
        theirs.append(tok.decode(generated[0], skip_special_tokens=True).strip())
    assert ours == theirs
    (res,) = translate.process([{"segments": lines(11)}])
    assert [(l["start"], l["end"]) for l in res["segments_en"]] == [(l["start"], l["end"]) for l in lines(11)]


def test_bad_row_does_not_stop_the_batch(tiny_ct2):
    translate = stage(tiny_ct2)
    results = translate.process([{"segments": lines(10)}, {"segments": "not a list"}, {"segments": None}])
    assert len(results[0]["segments_en"]) == 10
    assert isinstance(results[1], ValueError)
    assert results[2] == {"segments_en": []}


def test_other_columns_and_languages(tiny_ct2):
    translate = stage(tiny_ct2, column="asr", output_column="asr_fr", source_language="en", target_language="fr")
    (res,) = translate.process([{"asr": [{"start": 0.0, "end": 1.0, "text": "Today we cook pasta."}]}])
    assert len(res["asr_fr"]) == 1 and res["asr_fr"][0]["text"]


def test_settings_are_checked(tmp_path, tiny_ct2):
    with pytest.raises(SettingError, match="family"):
        Translate(model=tiny_ct2, family="gpt")
    with pytest.raises(SettingError, match="output_column"):
        Translate(model=tiny_ct2, output_column="segments")
    with pytest.raises(SettingError, match="NLLB"):
        Translate(model=tiny_ct2, family="nllb", source_language="xx")
    with pytest.raises(SettingError, match="batch_size"):
        Translate(model=tiny_ct2, batch_size=0)
    # A folder without a converted model fails the run at once (not as a row error per row).
    with pytest.raises(SettingError, match="ct2-transformers-converter"):
        Translate(model=str(tmp_path), device="cpu").process([{"segments": lines(2)}])
    with pytest.raises(SettingError, match="no token"):
        stage(tiny_ct2, target_language="xx").translate_texts(["今天"])


def test_language_codes():
    assert language_code("nllb", "zh") == "zho_Hans" == NLLB_CODES["zh"]
    assert language_code("nllb", "zho_Hant") == "zho_Hant"
    assert language_code("m2m100", "zh") == "zh"


# -- the LLM translation's checks (processors/llm_translate.py), no model -------------------


def test_llm_translation_refuses_untranslated_and_merged_lines():
    import json

    from lomo_datasets.llm.backends import parse_output
    from processors.llm_translate import translation_task

    source = ["今天我们坐火车去北京。", "我们在车上看书。", "我们在车上看书。", "下午我们到了北京。"]
    task = translation_task(source, "en", 160)

    def reply(*lines):
        return json.dumps({"lines": list(lines)}, ensure_ascii=False)

    good = reply("Today we take the train to Beijing.", "We read on the train.", "We read on the train.",
                 "In the afternoon we arrived in Beijing.")
    assert parse_output(good, task)["lines"][3].startswith("In the afternoon")  # same source, same line: fine
    # Chinese left in a line: refused, and the reason does not repeat the untranslated text
    # (shown it again in the retry prompt, small models copy it).
    with pytest.raises(ValueError, match="line 4 still has untranslated words; write every word in English") as info:
        parse_output(reply("Today we take the train.", "We read.", "We read.", "Then 北京."), task)
    assert "北京" not in str(info.value)
    # Lines merged and padded with a repeat: the timestamps would no longer match the text.
    with pytest.raises(ValueError, match="line 4 repeats line 1 although their source lines differ"):
        parse_output(reply("Today we take the train to Beijing.", "We read.", "We read.", "Today we take the train to Beijing."), task)
    with pytest.raises(ValueError, match="exactly 4 wanted"):
        parse_output(reply("One.", "Two.", "Three."), task)


# -- issue 21 item 6: alignment checked, and a failed chunk split (halves, then lines) ------

#: Eight lines of a Mandarin cooking video, and the reply the embedded 1.5B gave for a real human
#: voice: lines 5-6 merged into one, the rest shifted up, an invented last line to keep the count.
SOURCE_8 = ["大家好，今天我们做番茄炒蛋。", "先把两个番茄切成小块。", "再把三个鸡蛋打在碗里。", "锅里放一点油。",
            "油热了以后先炒鸡蛋。", "鸡蛋炒好了盛出来。", "然后炒番茄，加一点盐。", "最后把鸡蛋放回去，就做好了。"]
ALIGNED_8 = ["Hello everyone, today we make tomato and egg stir-fry.", "First cut two tomatoes into small pieces.",
             "Then beat three eggs in a bowl.", "Put a little oil in the pan.", "When the oil is hot, fry the eggs first.",
             "When the eggs are done, take them out.", "Then fry the tomatoes and add a little salt.",
             "Finally put the eggs back, and it is done."]
SHIFTED_8 = ALIGNED_8[:4] + ["When the oil is hot, fry the eggs first, and when they are done, take them out.",
                             "Then fry the tomatoes and add a little salt.", "Finally put the eggs back, and it is done.",
                             "We'll see you again soon"]


def test_llm_translation_detects_merged_and_shifted_lines():
    from processors.llm_translate import alignment_problem

    assert alignment_problem(SOURCE_8, ALIGNED_8) is None
    problem = alignment_problem(SOURCE_8, SHIFTED_8)
    assert problem and "merged or shifted" in problem
    # numbers and Latin names carried over: a line without its number or name is another line's
    assert "number 3" in alignment_problem(["我买了3个苹果。"], ["I bought some bananas."])
    assert "name" in alignment_problem(["我们去看NBA比赛。"], ["We went to see a match."])
    assert alignment_problem(["我们去看NBA比赛。"], ["We went to see an NBA game."]) is None


def test_a_failed_chunk_is_split_in_halves_then_single_lines():
    from processors.llm_translate import split

    assert split(list(range(12)), "chunk") == ([list(range(6)), list(range(6, 12))], "half")
    assert split([6, 7, 8], "half") == ([[6], [7], [8]], "line")
    assert split([4, 5], "chunk") == ([[4], [5]], "line")  # two lines: straight to single lines


@pytest.mark.slow
def test_llm_translation_degrades_chunk_to_halves_to_lines_with_a_real_model(caplog):
    """The embedded SmolLM2-135M (under xgrammar) cannot translate eight Mandarin lines in one
    reply that passes the checks: the chunk is split, then single lines are tried; the row is
    either translated line for line (the levels used are counted in ``generation``) or fails
    naming the single line that could not be translated, never the whole chunk."""
    import logging

    from datasets import Dataset

    from lomo_datasets.core import features as F

    lines = [{"start": float(k), "end": k + 0.9, "text": t} for k, t in enumerate(SOURCE_8)]
    rows = [{"video_id": "zh_cooking", "language": "zh", "segments": lines, "errors": []}]
    ds = Dataset.from_list(rows, features=F.merge(Dataset.from_list(rows).features, {"segments": F.SEGMENTS}))
    stage = TranslateToEnglish(model="embedded:smollm2-135m", llm_backend="transformers", lines_per_request=8, max_tries=1,
                               cpu_threads=1)
    with caplog.at_level(logging.INFO, logger="lomo_datasets.processors.translate"):
        out = apply_stage(ds, stage)[0]
    assert "8-line chunk failed" in caplog.text  # the chunk's reply was refused, and it was split
    if out["errors"]:
        assert out["errors"][-1]["stage"] == "translate"
        assert re.search(r"line [1-8] cannot be translated", out["errors"][-1]["error"])
    else:
        levels = {e["event"]: e["count"] for e in out["generation"]}
        assert levels["chunk"] == 0 and levels["half"] + levels["line"] >= 2 and levels["refused_replies"] >= 1
        assert [(s["start"], s["end"]) for s in out["segments_en"]] == [(s["start"], s["end"]) for s in lines]


def test_engine_llm_translates_through_an_openai_compatible_server():
    """``engine=llm`` with ``llm_backend=openai``: the lines go to a server's model (no local
    file to check); ``engine`` is explicit, not guessed from the model name."""
    import json

    from lomo_datasets.core.stage import SettingError
    from lomo_datasets.models.check import check_model
    from processors.translate import TranslateToEnglish
    from tests.test_llm import ChatServer

    def reply(body):
        text = body["messages"][-1]["content"]
        lines = [SOURCE_8.index(s) for s in SOURCE_8 if s in text]
        return 200, json.dumps({"lines": [ALIGNED_8[i] for i in lines]}), "stop"

    with ChatServer(reply) as server:
        stage = TranslateToEnglish(model="qwen-server", engine="llm", llm_backend="openai", llm_base_url=server.url)
        assert stage.uses_llm and stage.model_is_remote
        check_model(stage)  # the server's model: nothing to find on disk or in the hub cache
        row = {"language": "zh", "segments": [{"start": float(i), "end": i + 1.0, "text": t} for i, t in enumerate(SOURCE_8)]}
        out = stage({k: [v] for k, v in row.items()})
    assert [s["text"] for s in out["segments_en"][0]] == ALIGNED_8 and out["errors"] == [[]]
    assert [s["start"] for s in out["segments_en"][0]] == [float(i) for i in range(8)]
    assert server.requests and server.requests[0]["body"]["model"] == "qwen-server"
    # auto keeps the old rule (a GGUF model is an LLM, another a translation model)
    assert not TranslateToEnglish(model="some/ct2-folder").uses_llm
    with pytest.raises(SettingError, match="translate.engine='nmt': use auto"):
        TranslateToEnglish(model="x", engine="nmt")
