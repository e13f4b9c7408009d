"""Builders: hand-written fixtures give the same rows as the files our own exporters write
(``lomo_datasets.formats.lomo`` and ``lomo_datasets.formats.livecc``), through
``lomo_datasets.load``. ``tests/fixtures/lomo/`` holds the flat shapes earlier versions of this
project wrote (still read); LoMo-Pipe's own shapes are tested in ``tests/test_formats_lomo.py``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

import lomo_datasets
from lomo_datasets import formats
from lomo_datasets.formats import FormatError, livecc
from lomo_datasets.processors.ingest import ingest
from lomo_datasets.core.stage import SettingError
from tests.test_formats_lomo import records as lomo_records

FIXTURES = Path(__file__).parent / "fixtures"
LOMO = FIXTURES / "lomo"
LOMO_PIPE = FIXTURES / "lomo_pipe"
LIVECC = FIXTURES / "livecc"


def load(tmp_path: Path, name: str, data_files, **kwargs):
    return lomo_datasets.load(name, data_files=data_files, cache_dir=tmp_path / "cache", split="train", **kwargs)


def _by_qid(rows: list[dict]) -> list[dict]:
    return [{**r, "questions": sorted(r["questions"], key=lambda q: q["question_id"])} for r in rows]


# --------------------------------------------------------------------------------------------
# Our clip records, as the pipeline holds them (extra columns, a failed row)
# --------------------------------------------------------------------------------------------

def clip_records() -> list[dict]:
    def words(triples):
        return [{"start": s, "end": e, "word": w, "probability": 0.9} for s, e, w in triples]

    return [
        {"video_id": "nba_finals_g7", "video": "videos/nba_finals_g7.mp4", "video_start": 12.4, "video_end": 44.9,
         "content": words([(12.4, 12.7, "Curry"), (12.7, 13.1, "brings"), (13.1, 13.3, "it"), (13.3, 13.9, "up."),
                           (15.2, 15.6, "Three"), (15.6, 15.9, "from"), (15.9, 16.5, "downtown!")]),
         "query": "Please provide live commentary for this basketball game.", "preasr": "",
         "title": "NBA Finals Game 7 highlights", "category": "Sports", "lm_loss": 2.1, "errors": []},
        {"video_id": "dropped", "video": "videos/x.mp4", "video_start": None, "video_end": None, "content": [],
         "query": None, "preasr": None, "title": "x", "category": None, "lm_loss": None,
         "errors": [{"stage": "clip", "error": "no words"}]},
        {"video_id": "cooking_mapo", "video": "videos/cooking_mapo.mp4", "video_start": 61.0, "video_end": 95.5,
         "content": words([(61.2, 61.6, "Now"), (61.6, 61.8, "the"), (61.8, 62.3, "chili"), (62.3, 62.6, "bean"),
                           (62.6, 63.2, "paste.")]),
         "query": "Describe what the cook is doing as it happens.", "preasr": "",
         "title": "麻婆豆腐 Mapo tofu at home", "category": "Howto & Style", "lm_loss": 2.5, "errors": []},
    ]


# --------------------------------------------------------------------------------------------
# LoMo
# --------------------------------------------------------------------------------------------


def test_lomo_fixture_aggregated_and_per_task_files_give_the_same_typed_rows(tmp_path):
    aggregated = load(tmp_path, "lomo", str(LOMO / "lomo_benchmark.json"))
    per_task = load(tmp_path, "lomo", sorted(str(p) for p in (LOMO / "per_task").glob("*.json")))
    assert aggregated.features == formats.LOMO_FEATURES == per_task.features
    assert _by_qid(per_task.to_list()) == _by_qid(aggregated.to_list())

    rows = {r["video_id"]: r for r in aggregated}
    assert list(rows) == ["BV1GJ411x7h7.mp4", "yt_dQw4w9WgXcQ.mp4"]
    cook = rows["BV1GJ411x7h7.mp4"]
    assert cook["duration"] == 187.36 and cook["resolution"] == "[1080, 1920]"
    assert [q["task"] for q in cook["questions"]] == ["GVQA", "GVS", "SVS", "VTG"]
    vtg = cook["questions"][3]
    assert vtg["window"] == [61.2, 74.8] and vtg["answer"] == "B" and vtg["options"][1] == "B: [61.2, 74.8]"
    assert "豆瓣酱" in vtg["question"] and vtg["descriptions"].startswith("The cook spoons")
    assert cook["questions"][0]["window"] == [] and cook["questions"][0]["descriptions"] == ""


def test_lomo_exporter_files_equal_the_fixture_rows(tmp_path):
    records = lomo_records()  # the pipeline's rows; LoMo-Pipe's files for them are the fixtures in lomo_pipe/
    formats.write_lomo_json(records, tmp_path / "export" / "lomo.json")
    task_files = formats.write_lomo_task_files(records, tmp_path / "export" / "tasks")
    assert sorted(task_files) == sorted(formats.TASKS)
    exported = json.loads((tmp_path / "export" / "lomo.json").read_text())
    assert [v["video_id"] for v in exported] == ["BV1GJ411x7h7.mp4", "yt_dQw4w9WgXcQ.mp4"]  # the failed row is left out
    gvqa = exported[0]["questions"][0]
    assert "window" not in gvqa and "descriptions" not in gvqa  # window tasks only / VTG only

    fixture = _by_qid(load(tmp_path, "lomo", str(LOMO_PIPE / "lomo.json")).to_list())
    ours_aggregated = load(tmp_path, "lomo", str(tmp_path / "export" / "lomo.json"))
    ours_per_task = load(tmp_path, "lomo", [str(p) for p in task_files.values()])
    assert _by_qid(ours_aggregated.to_list()) == fixture
    assert _by_qid(ours_per_task.to_list()) == fixture


def test_lomo_question_layout_and_task_filter(tmp_path):
    per_question = load(tmp_path, "lomo", str(LOMO / "lomo_benchmark.json"), layout="question")
    assert per_question.features == formats.LOMO_QUESTION_FEATURES
    assert len(per_question) == 6
    assert sorted(per_question["task"]) == sorted(formats.TASKS)
    vvqa = next(r for r in per_question if r["task"] == "VVQA")
    assert vvqa["video_id"] == "yt_dQw4w9WgXcQ.mp4" and vvqa["resolution"] == "[720, 1280]"

    only_vtg = load(tmp_path, "lomo", sorted(str(p) for p in (LOMO / "per_task").glob("*.json")), tasks=["vtg"])
    assert [[q["task"] for q in r["questions"]] for r in only_vtg] == [["VTG"], []]

    both = lomo_datasets.load("lomo", data_files={"test": str(LOMO / "lomo_benchmark.json")}, cache_dir=tmp_path / "c")
    assert isinstance(both, DatasetDict) and list(both) == ["test"]


def test_lomo_bad_files_and_settings_fail_clearly(tmp_path):
    bad = tmp_path / "SVS.json"
    bad.write_text(json.dumps([{"video_id": "a.mp4", "question": "q", "options": ["A: x", "B: y"], "answer": "C",
                                "window": [1, 2]}]))
    with pytest.raises(Exception, match="answer must be one of"):
        load(tmp_path, "lomo", str(bad))
    no_task = tmp_path / "questions.json"
    no_task.write_text(json.dumps([{"video_id": "a.mp4", "question": "q"}]))
    with pytest.raises(Exception, match="task must be one of"):
        load(tmp_path, "lomo", str(no_task))
    with pytest.raises(SettingError, match="layout"):
        load(tmp_path, "lomo", str(LOMO / "lomo_benchmark.json"), layout="clip")
    with pytest.raises(SettingError, match="unknown task"):
        load(tmp_path, "lomo", str(LOMO / "lomo_benchmark.json"), tasks=["QA"])
    with pytest.raises(SettingError, match="unknown builder"):
        lomo_datasets.load("lomo-v2", data_files=str(bad))
    with pytest.raises(SettingError, match="needs data_files"):
        lomo_datasets.load("lomo")
    with pytest.raises(FormatError, match="resolution"):
        formats.format_resolution("720p")


# --------------------------------------------------------------------------------------------
# LiveCC
# --------------------------------------------------------------------------------------------


def test_livecc_fixture_jsonl_with_offsets_and_preview_json_give_the_same_typed_rows(tmp_path):
    jsonl = load(tmp_path, "livecc", str(LIVECC / "live_sft.jsonl"))
    preview = load(tmp_path, "livecc", str(LIVECC / "live_sft_preview.json"))
    assert jsonl.features == formats.LIVECC_FEATURES == preview.features
    assert jsonl.to_list() == preview.to_list()
    assert len(jsonl) == 2  # the offsets line is an index, not a row
    first = jsonl[0]
    assert first["video"] == "videos/nba_finals_g7.mp4"
    assert (first["video_start"], first["video_end"]) == (12.4, 44.9)
    assert first["query"].startswith("Please provide live commentary")
    assert first["text_stream"][0] == {"start": 12.4, "end": 12.7, "word": "Curry"}
    assert len(first["text_stream"]) == 7 and jsonl[1]["title"] == "麻婆豆腐 Mapo tofu at home"


def test_livecc_jsonl_without_offsets_line(tmp_path):
    rows = load(tmp_path, "livecc", str(LIVECC / "live_pretrain_no_offsets.jsonl"))
    assert len(rows) == 1
    assert rows[0]["previous"] == "and the safety car is coming in this lap" and rows[0]["query"] == ""
    with pytest.raises(Exception, match="byte offset"):
        load(tmp_path, "livecc", str(LIVECC / "live_pretrain_no_offsets.jsonl"), offsets="require")
    # an index that does not match the lines is an error, not silently trusted
    broken = tmp_path / "broken.jsonl"
    lines = (LIVECC / "live_sft.jsonl").read_bytes().splitlines()
    broken.write_bytes(b"\n".join(lines[:-1] + [b"[0, 17]"]) + b"\n")
    with pytest.raises(Exception, match="offsets"):
        load(tmp_path, "livecc", str(broken))
    with pytest.raises(SettingError, match="offsets"):
        load(tmp_path, "livecc", str(broken), offsets="maybe")


def test_livecc_exporter_files_equal_the_fixture_rows(tmp_path):
    records = clip_records()
    out = tmp_path / "export" / "live_sft.jsonl"
    assert livecc.export_jsonl(records, out) == 2  # the failed clip is skipped
    assert formats.read_livecc_file(out, offsets="require")  # our file carries a valid index line
    formats.write_livecc_preview(
        livecc.conversations(r for r in records if not r["errors"]), tmp_path / "export" / "preview.json"
    )
    fixture = load(tmp_path, "livecc", str(LIVECC / "live_sft.jsonl")).to_list()
    assert load(tmp_path, "livecc", str(out)).to_list() == fixture
    assert load(tmp_path, "livecc", str(tmp_path / "export" / "preview.json")).to_list() == fixture
    assert load(tmp_path, "livecc", str(out), min_words=6).to_list() == fixture[:1]


# --------------------------------------------------------------------------------------------
# Video folders
# --------------------------------------------------------------------------------------------


def test_videofolder_rows_match_ingest_and_probe(tmp_path, test_media):
    folder = tmp_path / "videos"
    folder.mkdir()
    for path in (test_media.english, test_media.corrupt):
        shutil.copy(path, folder / path.name)
    rows = lomo_datasets.load("videofolder", data_files=str(folder / "*"), probe=True, cache_dir=tmp_path / "c",
                              split="train")
    ingested = ingest(folder)
    assert sorted(rows["video_id"]) == sorted(ingested["video_id"])
    by_id = {r["video_id"]: r for r in rows}
    good = by_id[test_media.english.stem]
    assert good["duration"] > 0 and good["has_audio"] and not good["errors"]
    bad = by_id[test_media.corrupt.stem]
    assert bad["duration"] is None and bad["errors"][0]["stage"] == "probe"
    assert isinstance(rows, Dataset)
