"""Quality control, the keep_qc filter, and the LoMo export (aggregated + per-task files)."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from lomo_datasets.core import features as F
from lomo_datasets import formats
from lomo_datasets.execution.pipeline import Runner
from lomo_datasets.formats.lomo import export_lomo
from lomo_datasets.processors.aggregate import KeepQC, QualityControl, contains_phrase
from lomo_datasets.core.stage import SettingError, apply_stage
from tests.processors.test_qa import answers


def video(video_id, duration=16.0, width=320, height=240, items=None):
    return dict(video_id=video_id, duration=duration, width=width, height=height,
                questions=answers(video_id) if items is None else items, errors=[])


def qc_dataset(rows):
    base = Dataset.from_list(rows).features
    return Dataset.from_list(rows, features=F.merge(base, {"questions": F.QUESTIONS}))


def test_stop_phrases_match_whole_words_only():
    phrases = [["subtitle"], ["as", "an", "ai"]]
    assert contains_phrase("What does the Subtitle say?", phrases) == "subtitle"
    assert contains_phrase("As an AI, I think", phrases) == "as an ai"
    assert contains_phrase("subtitled films and a chair", phrases) is None


def test_qc_keeps_complete_videos_and_says_why_others_go():
    leaky = answers("leaky")
    leaky[0] = {**leaky[0], "question": "What does the transcript say about the pot?"}
    rows = [
        video("good"),
        video("long_90min", duration=5400.0),  # 60-120 min: kept by the default buckets
        video("small", width=160, height=120),
        video("leaky", items=leaky),
        video("no_items", items=[]),
    ]
    out = apply_stage(qc_dataset(rows), QualityControl())
    r = {row["video_id"]: row for row in out}
    assert r["good"]["qc_pass"] == 1.0 and r["good"]["resolution"] == "[240, 320]" and r["good"]["duration_bucket"] == "0-1min"
    assert r["long_90min"]["qc_pass"] == 1.0 and r["long_90min"]["duration_bucket"] == "60-120min"
    assert r["small"]["qc_pass"] == 0.0 and "resolution 160x120" in r["small"]["qc_reason"]
    assert r["leaky"]["qc_pass"] == 0.0 and "GVQA" in r["leaky"]["qc_reason"] and "transcript" in r["leaky"]["qc_reason"]
    assert len(r["leaky"]["questions"]) == 5
    assert r["no_items"]["qc_pass"] == 0.0 and "missing tasks" in r["no_items"]["qc_reason"]


def test_buckets_and_sampling_are_settings():
    only_short = QualityControl(buckets=[["short", 0, 60]])
    (row,) = apply_stage(qc_dataset([video("long", duration=5400.0)]), only_short)
    assert row["qc_pass"] == 0.0 and "in no bucket" in row["qc_reason"]  # explicit, not silent
    half = QualityControl(sample={"0-1min": 0.5})
    out = apply_stage(qc_dataset([video(f"v{i}") for i in range(40)]), half)
    kept = [r["video_id"] for r in out if r["qc_pass"] == 1.0]
    assert 8 <= len(kept) <= 32
    again = [r["video_id"] for r in apply_stage(qc_dataset([video(f"v{i}") for i in range(40)]), half) if r["qc_pass"] == 1.0]
    assert kept == again  # seeded by video id
    with pytest.raises(SettingError, match="buckets"):
        QualityControl(buckets=[["bad", 60, 10]])
    with pytest.raises(SettingError, match="sample"):
        QualityControl(sample={"nope": 0.5})


def test_keep_qc_and_export(tmp_path):
    rows = [video("good"), video("other"), video("small", width=100, height=80)]
    runner = Runner(tmp_path / "work")
    result = runner.run(qc_dataset(rows), [QualityControl(), KeepQC()])
    assert sorted(result.dataset["video_id"]) == ["good", "other"]
    assert result.dropped["video_id"] == ["small"]
    written = export_lomo(result.dataset, tmp_path / "out")
    assert sorted(written) == sorted(["lomo", "metadata", "buckets", "GVQA", "GVS", "SVS", "SVQA", "VVQA", "VTG"])
    videos = json.loads((tmp_path / "out" / "lomo" / "lomo.json").read_text())
    assert [v["video_id"] for v in videos] == ["good", "other"]
    assert videos[0]["resolution"] == "[240, 320]" and len(videos[0]["questions"]) == 6
    svs = json.loads((tmp_path / "out" / "lomo" / "SVS_format.json").read_text())  # LoMo-Pipe's file name
    assert len(svs) == 2 and all(len(v["questions"]) == 1 and len(v["questions"][0]["window"]) == 2 for v in svs)
    # the builders' reader takes both shapes back
    assert len(formats.read_lomo_file(tmp_path / "out" / "lomo" / "lomo.json")) == 2
    assert json.loads((tmp_path / "out" / "buckets.json").read_text()) == {"0-1min": {"videos": 2, "items": 12}}


def test_qc_needs_no_what_and_how_in_an_item():
    """LoMo-Pipe's QC kept only items containing both "what" and "how"; this QC has no such rule."""
    items = [{**q, "question": q["question"].replace("What", "Which").replace("what", "which")} for q in answers("plain")]
    assert not any("what" in q["question"].lower() or "how" in q["question"].lower() for q in items)
    (row,) = apply_stage(qc_dataset([video("plain", items=items)]), QualityControl())
    assert row["qc_pass"] == 1.0 and len(row["questions"]) == 6
