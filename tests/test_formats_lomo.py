"""The LoMo format module against LoMo-Pipe's file shapes (../shared/formats/LOMO-PIPE.md).

Fixtures in ``tests/fixtures/lomo_pipe/`` are written by hand from that spec: the metadata CSV,
the six per-task files (every task's item is ``<stem>_01``; ``SVS_format.json``; VTG as
``relevant_windows``) and the aggregated file; ``tests/fixtures/lomo_qc/`` is a
quality-controlled file with ``resolution`` as ``"h,w"`` and a ``video_id`` without extension.
Round trips go both ways: LoMo-Pipe's files -> builder -> our exporter -> the same files, and our
records -> exporter -> builder -> the same rows.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

import lomo_datasets
from lomo_datasets import formats
from lomo_datasets.formats import FormatError
from lomo_datasets.formats.lomo import FILE_STEMS, read_lomo_files, write_lomo_folder

PIPE = Path(__file__).parent / "fixtures" / "lomo_pipe"
QC = Path(__file__).parent / "fixtures" / "lomo_qc" / "lomo_qc.json"
TASK_FILES = ["GVQA.json", "GVS.json", "SVS_format.json", "SVQA.json", "VVQA.json", "VTG.json"]


def load(tmp_path: Path, data_files, **kwargs):
    return lomo_datasets.load("lomo", data_files=data_files, cache_dir=tmp_path / "cache", split="train", **kwargs)


def pipe_files(folder: Path = PIPE) -> list[str]:
    return [str(folder / name) for name in TASK_FILES]


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def spec_aggregation(folder: Path, names: list[str]) -> list[dict]:
    """LoMo-Pipe's aggregation as the spec describes it (written here from the spec): one object
    per video present in every per-task file, each item plus ``"task": <file stem>``; objects
    with neither ``questions`` nor ``relevant_windows`` add nothing."""
    files = {Path(n).stem: read_json(folder / n) for n in names}
    by_file = {stem: {v["video_id"]: v for v in videos} for stem, videos in files.items()}
    out = []
    for video in files[Path(names[0]).stem]:
        if not all(video["video_id"] in videos for videos in by_file.values()):
            continue
        questions = []
        for stem, videos in by_file.items():
            v = videos[video["video_id"]]
            questions += [{**item, "task": stem} for item in v.get("questions", v.get("relevant_windows", []))]
        out.append({"video_id": video["video_id"], "duration": video["duration"], "resolution": video["resolution"],
                    "questions": questions})
    return out


# --------------------------------------------------------------------------------------------
# Our records (the pipeline's rows: ids without extension, the video path, height and width)
# --------------------------------------------------------------------------------------------


def q(qid, task, question="", options=(), answer="", window=(), descriptions=""):
    return {"question_id": qid, "task": task, "question": question, "options": list(options), "answer": answer,
            "window": list(window), "descriptions": descriptions}


def records() -> list[dict]:
    """The same two videos as the fixtures, as the pipeline holds them, plus a failed row."""
    oil = ["A: Soy sauce", "B: Sugar", "C: Vinegar", "D: Chili bean paste (豆瓣酱)"]
    coat = ["A: A trench coat", "B: A red dress", "C: A tuxedo", "D: A hoodie"]
    return [
        {"video_id": "BV1GJ411x7h7", "video": "/data/videos/BV1GJ411x7h7.mp4", "duration": 187.36, "height": 1080,
         "width": 1920, "summary": "A cook makes mapo tofu.", "errors": [], "questions": [
             q("BV1GJ411x7h7_01", "GVQA", "What dish does the cook prepare in the video?",
               ["A: Mapo tofu", "B: Fried rice", "C: Dumplings", "D: Hot pot"], "A"),
             q("BV1GJ411x7h7_02", "GVS", "What is the video mainly about?",
               ["A: A football match", "B: A cooking tutorial for a Sichuan dish", "C: A travel vlog",
                "D: A product review"], "B"),
             q("BV1GJ411x7h7_03", "SVS", "What happens in the video between 35.0 and 52.5 seconds?",
               ["A: The cook washes the wok", "B: The cook tastes the sauce", "C: The cook cuts the tofu into cubes",
                "D: The cook plates the dish"], "C", [35.0, 52.5]),
             q("BV1GJ411x7h7_04", "SVQA",
               "From 61.2 seconds to 74.8 seconds in the video, what does the cook add to the hot oil?", oil, "D",
               [61.2, 74.8]),
             q("BV1GJ411x7h7_05", "VVQA", "What does the cook add to the hot oil?", oil, "D", [61.2, 74.8]),
             q("BV1GJ411x7h7_06", "VTG", window=[61.2, 74.8],
               descriptions="The cook spoons chili bean paste into the hot oil and stirs it until it turns red."),
         ]},
        {"video_id": "yt_dQw4w9WgXcQ", "video": "/data/videos/yt_dQw4w9WgXcQ.mp4", "duration": 212.0, "height": 720,
         "width": 1280, "summary": "A music video.", "errors": [], "questions": [
             q("yt_dQw4w9WgXcQ_01", "GVQA", "What does the singer promise in the song?",
               ["A: To visit every city", "B: To never give the listener up", "C: To stop singing",
                "D: To write a letter"], "B"),
             q("yt_dQw4w9WgXcQ_02", "GVS", "What is the main content of this video?",
               ["A: A cooking show", "B: A news report", "C: A music video of a pop song", "D: A lecture on physics"],
               "C"),
             q("yt_dQw4w9WgXcQ_03", "SVS", "Which event takes place between 9.58 and 10.58 seconds of the video?",
               ["A: The singer starts to dance", "B: The band leaves the stage", "C: The lights go out",
                "D: The crowd sits down"], "A", [9.58, 10.58]),
             q("yt_dQw4w9WgXcQ_04", "SVQA",
               "From 12.0 seconds to 30.0 seconds in the video, what is the singer wearing?", coat, "A", [12.0, 30.0]),
             q("yt_dQw4w9WgXcQ_05", "VVQA", "What is the singer wearing?", coat, "A", [12.0, 30.0]),
             q("yt_dQw4w9WgXcQ_06", "VTG", window=[12.0, 30.0],
               descriptions="The singer in a trench coat dances in front of a brick wall."),
         ]},
        {"video_id": "broken", "video": "/data/videos/broken.mp4", "duration": None, "height": None, "width": None,
         "summary": None, "questions": [], "errors": [{"stage": "asr", "error": "NoAudioError: no audio stream"}]},
    ]


# --------------------------------------------------------------------------------------------
# Export: our records -> LoMo-Pipe's files
# --------------------------------------------------------------------------------------------


def test_export_writes_lomo_pipes_files_exactly(tmp_path):
    written = write_lomo_folder(records(), tmp_path / "lomo")
    assert sorted(p.name for p in (tmp_path / "lomo").iterdir()) == sorted(TASK_FILES + ["lomo.json", "metadata.csv"])
    assert set(written) == {"metadata", "lomo", *formats.TASKS}
    for name in TASK_FILES:  # file for file, field for field (key order and whitespace aside)
        assert read_json(tmp_path / "lomo" / name) == read_json(PIPE / name), name
    assert read_json(tmp_path / "lomo" / "lomo.json") == read_json(PIPE / "lomo.json")
    assert read_csv(tmp_path / "lomo" / "metadata.csv") == read_csv(PIPE / "metadata.csv")
    assert "SVS.json" not in {p.name for p in (tmp_path / "lomo").iterdir()}


def test_lomo_pipes_aggregation_reads_our_per_task_files(tmp_path):
    write_lomo_folder(records(), tmp_path / "lomo")
    aggregated = spec_aggregation(tmp_path / "lomo", TASK_FILES)
    assert [len(v["questions"]) for v in aggregated] == [6, 6]  # not nothing: video objects with items
    assert aggregated == read_json(tmp_path / "lomo" / "lomo.json")
    tasks = [item["task"] for item in aggregated[0]["questions"]]
    assert tasks == ["GVQA", "GVS", "SVS_format", "SVQA", "VVQA", "VTG"]


def test_exported_items_have_lomos_ids_names_and_shapes(tmp_path):
    write_lomo_folder(records(), tmp_path / "lomo")
    gvqa = read_json(tmp_path / "lomo" / "GVQA.json")
    assert [v["video_id"] for v in gvqa] == ["BV1GJ411x7h7.mp4", "yt_dQw4w9WgXcQ.mp4"]  # file names; failed row out
    assert gvqa[0]["resolution"] == "[1080, 1920]" and gvqa[0]["duration"] == 187.36
    item = gvqa[0]["questions"][0]
    assert set(item) == {"question_id", "question", "options", "answer"} and item["question_id"] == "BV1GJ411x7h7_01"
    assert [o[:3] for o in item["options"]] == ["A: ", "B: ", "C: ", "D: "] and item["answer"] == "A"
    for name in ("SVS_format.json", "SVQA.json", "VVQA.json"):
        entry = read_json(tmp_path / "lomo" / name)[1]["questions"][0]
        assert set(entry) == {"question_id", "question", "options", "answer", "window"}
        assert entry["question_id"] == "yt_dQw4w9WgXcQ_01"  # every task uses <stem>_01, as LoMo-Pipe does
    svs = read_json(tmp_path / "lomo" / "SVS_format.json")[1]["questions"][0]
    start, end = svs["window"]
    assert f"between {start} and {end} seconds" in svs["question"]  # text and window agree
    vtg = read_json(tmp_path / "lomo" / "VTG.json")
    assert "questions" not in vtg[0]
    (window,) = vtg[0]["relevant_windows"]
    assert window == {"window_id": "BV1GJ411x7h7_01", "window": [61.2, 74.8],
                      "descriptions": "The cook spoons chili bean paste into the hot oil and stirs it until it turns red."}


def test_records_round_trip_through_the_files_and_the_builder(tmp_path):
    write_lomo_folder(records(), tmp_path / "lomo")
    back = load(tmp_path, pipe_files(tmp_path / "lomo"))
    expected = [{"video_id": r["video_id"] + ".mp4", "duration": r["duration"],
                 "resolution": f"[{r['height']}, {r['width']}]", "questions": r["questions"]}
                for r in records() if not r["errors"]]
    assert back.to_list() == expected  # the Hub names: SVS, ids <stem>_01.._06, VTG as a grounding item
    assert load(tmp_path, str(tmp_path / "lomo" / "lomo.json")).to_list() == expected


def test_a_video_without_some_task_stays_in_the_task_files_and_is_reported(tmp_path, caplog):
    rows = records()[:2]
    rows[1]["questions"] = [x for x in rows[1]["questions"] if x["task"] != "VTG"]
    with caplog.at_level(logging.WARNING, logger="lomo_datasets.formats.lomo"):
        write_lomo_folder(rows, tmp_path / "lomo")
    assert [v["video_id"] for v in read_json(tmp_path / "lomo" / "lomo.json")] == ["BV1GJ411x7h7.mp4"]
    assert len(read_json(tmp_path / "lomo" / "GVQA.json")) == 2
    assert "1 of 2 videos lack an item of some task" in caplog.text


def test_old_multiple_choice_vtg_is_written_as_a_window_and_reported(tmp_path, caplog):
    rows = records()[:1]
    rows[0]["questions"][5] = {**rows[0]["questions"][5], "question": "When does the cook add the paste?",
                               "options": ["A: [1.0, 2.0]", "B: [61.2, 74.8]", "C: [3.0, 4.0]", "D: [5.0, 6.0]"],
                               "answer": "B"}
    with caplog.at_level(logging.WARNING, logger="lomo_datasets.formats.lomo"):
        write_lomo_folder(rows, tmp_path / "lomo")
    (entry,) = read_json(tmp_path / "lomo" / "VTG.json")[0]["relevant_windows"]
    assert set(entry) == {"window_id", "window", "descriptions"}
    assert "1 VTG items have options" in caplog.text


def test_vtg_mc_extra_task_has_its_own_file(tmp_path):
    rows = records()[:1]
    rows[0]["questions"].append(q("BV1GJ411x7h7_07", "VTG_MC", "When does the cook add the chili bean paste?",
                                  ["A: from 1 to 2 seconds", "B: from 61.2 to 74.8 seconds", "C: from 3 to 4 seconds",
                                   "D: from 5 to 6 seconds"], "B", [61.2, 74.8], "The cook adds the paste."))
    written = write_lomo_folder(rows, tmp_path / "lomo")
    assert written["VTG_MC"].name == "VTG_MC.json"
    (item,) = read_json(written["VTG_MC"])[0]["questions"]
    assert item["answer"] == "B" and item["window"] == [61.2, 74.8] and item["descriptions"] == "The cook adds the paste."
    assert read_json(written["lomo"])[0]["questions"][-1]["task"] == "VTG_MC"
    back = load(tmp_path, [str(p) for k, p in written.items() if k not in ("lomo", "metadata")])
    assert [x["task"] for x in back[0]["questions"]] == [*formats.TASKS, "VTG_MC"]
    assert back[0]["questions"][-1] == rows[0]["questions"][-1]


# --------------------------------------------------------------------------------------------
# Reading: LoMo-Pipe's files -> the builder, without silent loss
# --------------------------------------------------------------------------------------------


def test_six_per_task_files_keep_all_six_tasks_of_every_video(tmp_path):
    rows = load(tmp_path, pipe_files())
    assert rows.features == formats.LOMO_FEATURES
    assert rows["video_id"] == ["BV1GJ411x7h7.mp4", "yt_dQw4w9WgXcQ.mp4"]
    for row in rows:
        assert [x["task"] for x in row["questions"]] == list(formats.TASKS)  # SVS_format -> SVS
        ids = [x["question_id"] for x in row["questions"]]
        stem = row["video_id"].removesuffix(".mp4")
        assert ids == [f"{stem}_{k:02d}" for k in range(1, 7)]  # LoMo-Pipe's <stem>_01 everywhere -> unique
    cook = rows[0]
    vtg = cook["questions"][5]
    assert vtg["window"] == [61.2, 74.8] and vtg["descriptions"].startswith("The cook spoons")
    assert vtg["question"] == "" and vtg["options"] == [] and vtg["answer"] == ""
    assert cook["questions"][2]["window"] == [35.0, 52.5] and cook["questions"][0]["window"] == []
    per_question = load(tmp_path, pipe_files(), layout="question")
    assert len(per_question) == 12 and len(set(zip(per_question["video_id"], per_question["question_id"]))) == 12


def test_the_aggregated_file_with_svs_format_and_vtg_windows(tmp_path):
    aggregated = load(tmp_path, str(PIPE / "lomo.json"))
    assert aggregated.to_list() == load(tmp_path, pipe_files()).to_list()
    svs = aggregated[1]["questions"][2]
    assert svs["task"] == "SVS" and svs["window"] == [9.58, 10.58]
    assert "between 9.58 and 10.58 seconds" in svs["question"]
    assert aggregated[1]["questions"][5]["window"] == [12.0, 30.0]
    only_vtg = load(tmp_path, str(PIPE / "lomo.json"), tasks=["VTG"], layout="question")
    assert only_vtg["task"] == ["VTG", "VTG"] and only_vtg["window"] == [[61.2, 74.8], [12.0, 30.0]]
    assert load(tmp_path, str(PIPE / "lomo.json"), tasks=["SVS_format"], layout="question")["task"] == ["SVS"] * 2


def test_vtg_file_alone_and_the_metadata_csv(tmp_path):
    vtg = load(tmp_path, str(PIPE / "VTG.json"))
    assert [[x["task"] for x in r["questions"]] for r in vtg] == [["VTG"], ["VTG"]]
    assert vtg[0]["questions"][0]["question_id"] == "BV1GJ411x7h7_01"
    metadata = load(tmp_path, str(PIPE / "metadata.csv"))
    assert metadata.to_list() == [
        {"video_id": "BV1GJ411x7h7.mp4", "duration": 187.36, "resolution": "[1080, 1920]", "questions": []},
        {"video_id": "yt_dQw4w9WgXcQ.mp4", "duration": 212.0, "resolution": "[720, 1280]", "questions": []},
    ]


def test_whole_export_folder_reads_once_per_item(tmp_path, caplog):
    """The aggregated file beside the per-task files (``lomo/*``): each item once, and it says so."""
    everything = sorted(str(p) for p in PIPE.iterdir())
    with caplog.at_level(logging.INFO, logger="lomo_datasets.formats.lomo"):
        rows = read_lomo_files(everything)
    assert [len(r["questions"]) for r in rows] == [6, 6]
    assert "12 items were already read from another file; kept once" in caplog.text
    assert load(tmp_path, str(PIPE / "*")).to_list() == load(tmp_path, pipe_files()).to_list()


def test_qc_output_with_h_comma_w_resolution_and_id_without_extension(tmp_path):
    (row,) = load(tmp_path, str(QC)).to_list()
    assert row["video_id"] == "BV1GJ411x7h7" and row["resolution"] == "[1080, 1920]"
    assert [x["task"] for x in row["questions"]] == ["GVQA", "SVS", "VTG"]
    assert [x["question_id"] for x in row["questions"]] == ["BV1GJ411x7h7_01", "BV1GJ411x7h7_02", "BV1GJ411x7h7_03"]
    assert formats.format_resolution("1080,1920") == formats.format_resolution(" [1080, 1920] ") == "[1080, 1920]"
    write_lomo_folder([row], tmp_path / "again")
    (video,) = read_json(tmp_path / "again" / "lomo.json")
    assert video["video_id"] == "BV1GJ411x7h7" and video["resolution"] == "[1080, 1920]"  # no extension to add
    assert [x["task"] for x in video["questions"]] == ["GVQA", "SVS_format", "VTG"]
    assert video["questions"] == read_json(QC)[0]["questions"]


def test_a_duplicate_inside_one_task_is_kept_and_reported(tmp_path, caplog):
    videos = read_json(PIPE / "GVQA.json")
    videos[0]["questions"].append(dict(videos[0]["questions"][0]))  # the same item twice in one file
    videos.append(read_json(PIPE / "GVQA.json")[1])  # and one video object twice
    path = tmp_path / "GVQA.json"
    path.write_text(json.dumps(videos, ensure_ascii=False), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="lomo_datasets.formats.lomo"):
        rows = read_lomo_files([path])
    assert [len(r["questions"]) for r in rows] == [2, 2]
    assert [x["question_id"] for x in rows[0]["questions"]] == ["BV1GJ411x7h7_01", "BV1GJ411x7h7_02"]
    assert "video BV1GJ411x7h7.mp4: 2 identical GVQA items (all kept)" in caplog.text
    assert "video yt_dQw4w9WgXcQ.mp4: 2 identical GVQA items (all kept)" in caplog.text


# --------------------------------------------------------------------------------------------
# Round trip: LoMo-Pipe's files -> builder -> our exporter -> the same files
# --------------------------------------------------------------------------------------------


def test_lomo_pipe_files_round_trip_through_builder_and_exporter(tmp_path):
    rows = load(tmp_path, pipe_files()).to_list()
    written = write_lomo_folder(rows, tmp_path / "out")
    for task, path in written.items():
        if task not in ("lomo", "metadata"):
            assert path.name == f"{FILE_STEMS[task]}.json"
    for name in [*TASK_FILES, "lomo.json"]:
        assert read_json(tmp_path / "out" / name) == read_json(PIPE / name), name
    assert read_csv(tmp_path / "out" / "metadata.csv") == read_csv(PIPE / "metadata.csv")
    aggregated = load(tmp_path, str(PIPE / "lomo.json")).to_list()
    write_lomo_folder(aggregated, tmp_path / "from_aggregated")
    for name in [*TASK_FILES, "lomo.json"]:
        assert read_json(tmp_path / "from_aggregated" / name) == read_json(PIPE / name), name


# --------------------------------------------------------------------------------------------
# Errors name the file and the item
# --------------------------------------------------------------------------------------------


def test_bad_items_are_errors_that_name_file_and_item(tmp_path):
    vtg = read_json(PIPE / "VTG.json")
    del vtg[1]["relevant_windows"][0]["window"]
    bad = tmp_path / "VTG.json"
    bad.write_text(json.dumps(vtg), encoding="utf-8")
    with pytest.raises(FormatError, match=r"VTG.json item 1 relevant_windows 0: .*window"):
        load(tmp_path, str(bad))
    agg = read_json(PIPE / "lomo.json")
    agg[0]["questions"][0]["task"] = "GVQA2"
    bad = tmp_path / "lomo.json"
    bad.write_text(json.dumps(agg), encoding="utf-8")
    with pytest.raises(FormatError, match=r"lomo.json item 0 questions 0: task must be one of"):
        load(tmp_path, str(bad))
    meta = tmp_path / "metadata.csv"
    meta.write_text("video_id,duration,resolution\nx.mp4,12.5,720p\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"metadata.csv line 2: resolution '720p'"):
        load(tmp_path, str(meta))
    window_in_gvqa = tmp_path / "GVQA.json"
    window_in_gvqa.write_text(json.dumps([{"video_id": "x.mp4", "questions": [{"window_id": "x_01", "window": [1, 2]}]}]))
    with pytest.raises(FormatError, match="window entry .* is a VTG item, but this is GVQA"):
        load(tmp_path, str(window_in_gvqa))
