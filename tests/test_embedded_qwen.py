"""The embedded Qwen2.5-Coder-1.5B-Instruct (``embedded:qwen2.5-coder-1.5b``): joined from its 22
packages, verified, converted once to CTranslate2 int8, and every LLM task of the recipes gets
valid JSON from it within its tries (no row error), through the real stages: the summary and
temporal view, GVQA and GVS, the LiveCC commentary prompt, and line-for-line translation.

The model is the one ``--embedded`` uses for LLM steps; the SmolLM2 tests stay for speed.
The first run converts the GGUF once into the cache (about 2.5 minutes, ~9 GB of memory);
after that one run of this file is about a minute on 2 cores.
"""

from __future__ import annotations

import re

import pytest
from datasets import Dataset

from lomo_datasets.core import features as F
from lomo_datasets.models import zoo as models
from lomo_datasets.processors.compress import Compress
from lomo_datasets.processors.commentary import MakePrompt
from lomo_datasets.processors.qa import GenerateQA
from lomo_datasets.processors.translate import TranslateToEnglish
from lomo_datasets.core.stage import apply_stage
from tests.processors.test_compress import row, segments
from tests.processors.test_commentary import ROWS as CLIP_ROWS
from tests.processors.test_qa import check_items

pytestmark = pytest.mark.slow

QWEN = "embedded:qwen2.5-coder-1.5b"
SETTINGS = dict(model=QWEN, backend="ctranslate2", max_tries=3)


def test_every_lomo_task_gets_valid_json_from_the_joined_model():
    path = models.resolve_model(QWEN)
    assert models._sha256(models.Path(path)) == models.QWEN_CODER_SHA256  # the join is the pinned file
    rows = [row("pasta")]
    ds = Dataset.from_list(rows, features=F.merge(Dataset.from_list(rows).features, {"segments_en": F.SEGMENTS}))
    compressed = apply_stage(ds, Compress(**SETTINGS), load_from_cache_file=False)
    r = compressed[0]
    assert r["errors"] == [], r["errors"]  # summary and temporal view: valid on the first tries
    assert len(r["summary"].split()) >= 3
    t = r["temporal"]
    assert (t["subtitle"], t["start"], t["end"]) == tuple(segments()[t["index"]][k] for k in ("text", "start", "end"))
    assert len({w.lower() for w in t["wrong"] + [t["answer"]]}) == 4

    out = apply_stage(compressed, GenerateQA(**SETTINGS), load_from_cache_file=False)[0]
    assert out["errors"] == [], out["errors"]  # GVQA and GVS
    check_items("pasta", out["questions"])
    gvqa = out["questions"][0]
    assert gvqa["question"].rstrip().endswith("?") and len(gvqa["question"].split()) >= 4


def test_commentary_prompt_task_gets_valid_json():
    ds = Dataset.from_list([{**r, "errors": []} for r in CLIP_ROWS[:2]])
    out = apply_stage(ds, MakePrompt(**SETTINGS), load_from_cache_file=False)
    for r in out:
        assert r["errors"] == [], r["errors"]
        assert isinstance(r["commentary"], bool) and (r["query"] is None) != r["commentary"]


ZH_LINES = ["今天我们在家里做意大利面。", "首先，烧一大锅盐水。", "然后加入面条，好好搅拌。", "十分钟后，把水倒掉，拌入番茄酱。", "最后，放上新鲜的罗勒。"]


def test_translation_is_line_for_line_with_the_same_timestamps():
    zh = [{"start": s["start"], "end": s["end"], "text": t} for s, t in zip(segments(), ZH_LINES)]
    rows = [row("zh", language="zh", segments=zh), row("en")]
    ds = Dataset.from_list(rows, features=F.merge(Dataset.from_list(rows).features, {"segments_en": F.SEGMENTS}))
    stage = TranslateToEnglish(model=QWEN, lines_per_request=3)  # two requests for five lines
    out = apply_stage(ds, stage, load_from_cache_file=False)
    zh_row, en_row = out[0], out[1]
    assert zh_row["errors"] == [], zh_row["errors"]
    assert [(s["start"], s["end"]) for s in zh_row["segments_en"]] == [(s["start"], s["end"]) for s in zh]
    text = " ".join(s["text"] for s in zh_row["segments_en"]).lower()
    assert all(re.search(r"[a-z]{2,}", s["text"].lower()) for s in zh_row["segments_en"]) and not re.search(r"[\u4e00-\u9fff]", text)
    assert {"pasta", "water"} <= set(re.findall(r"[a-z]+", text)), text
    assert en_row["segments_en"] == segments()  # English passes through


def test_human_mandarin_voice_is_transcribed_and_translated_line_for_line(test_media):
    """A real human voice (gcin-voice's recorded syllables, eight sentences) through the lomo
    recipe's ASR (Whisper base, the lomo preset) and the embedded model's translation: every
    line gets English of its own, with its own start and end, checked for alignment (a shifted
    reply is refused and retried: issue 21 item 6), and the row records which level (chunk,
    half, line) translated its parts."""
    from lomo_datasets.processors.asr import LomoTranscribe

    (heard,) = LomoTranscribe(model="embedded:whisper-base", device="cpu", temperature=0).process(
        [{"video": str(test_media.mandarin_human), "language": "zh"}])
    assert not isinstance(heard, Exception) and len(heard["segments"]) >= 4, heard
    rows = [row("human", language="zh", segments=heard["segments"])]
    ds = Dataset.from_list(rows, features=F.merge(Dataset.from_list(rows).features, {"segments_en": F.SEGMENTS}))
    out = apply_stage(ds, TranslateToEnglish(model=QWEN), load_from_cache_file=False)[0]
    assert out["errors"] == [], out["errors"]
    source, english = heard["segments"], out["segments_en"]
    assert [(s["start"], s["end"]) for s in english] == [(s["start"], s["end"]) for s in source]
    assert all(re.search(r"[A-Za-z]{2,}", s["text"]) and not re.search(r"[\u4e00-\u9fff]", s["text"]) for s in english), english
    # No line repeats another whose source line differs (a Whisper loop may repeat a source line:
    # on some CPUs the base model hears this voice as "烧烧烧..." more than once).
    sources: dict[str, set[str]] = {}
    for src, out_line in zip(source, english):
        sources.setdefault(out_line["text"].strip().lower(), set()).add(" ".join(src["text"].split()))
    assert all(len(said) == 1 for said in sources.values()), english
    assert not any(s["text"].strip().startswith("<") for s in english), english  # no model's note as a line
    levels = {e["event"]: e["count"] for e in out["generation"] if e["stage"] == "translate"}
    assert sum(levels.get(k, 0) for k in ("chunk", "half", "line")) >= 1, out["generation"]
