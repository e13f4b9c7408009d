"""The LiveCC format module (../shared/formats/LIVECC.md): conversations, the JSONL export with
its byte-offset index line, and the edge cases LiveCC's own loader does not survive (0 clips,
absolute paths, character-count offsets), plus the intermediate clip records."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from datasets import Dataset

import lomo_datasets
from lomo_datasets.formats import FormatError
from lomo_datasets.formats.livecc import (
    clip_record,
    export_clips_jsonl,
    export_jsonl,
    read_jsonl,
    read_line,
    read_livecc_file,
    read_offsets,
    to_conversation,
    write_jsonl,
)
from lomo_datasets.processors.clip import Clip

LIVECC = Path(__file__).parent / "fixtures" / "livecc"


def clip_row(rng: random.Random, index: int) -> dict:
    start = rng.uniform(0, 100)
    content, t = [], start
    for k in range(rng.randint(1, 30)):
        word = rng.choice(["Ball", "goal", "über", "进球", "\"quoted\"", "a\\b", "line\u2028sep", "é"])
        content.append({"start": round(t, 3), "end": round(t + 0.4, 3), "word": word})
        t += 0.5
    return {
        "video": f"/videos/v{index}.mp4",
        "video_start": start,
        "video_end": content[-1]["end"],
        "content": content,
        "previous": rng.choice(["", "earlier words", "前面的话"]),
        "title": f"Title {index} ✓",
        "category": "Sports",
        "query": rng.choice(["", "Please comment on the match."]),
        "errors": [],
    }


def test_conversation_layout():
    row = clip_row(random.Random(0), 7)
    conv = to_conversation(row)
    assert [turn["role"] for turn in conv] == ["user", "assistant"]
    video, text = conv[0]["content"]
    assert video == {"type": "video", "video": "/videos/v7.mp4", "video_start": row["video_start"], "video_end": row["video_end"]}
    assert text == {"type": "text", "text": row["query"], "previous": row["previous"], "title": row["title"], "category": "Sports"}
    (stream,) = conv[1]["content"]
    assert stream["type"] == "text_stream"
    assert stream["text_stream"] == [[w["start"], w["end"], w["word"]] for w in row["content"]]
    # SFT rows carry preasr instead of previous.
    sft = dict(row)
    del sft["previous"]
    sft["preasr"] = "before"
    assert to_conversation(sft)[0]["content"][1]["previous"] == "before"


def test_jsonl_offsets_seek_to_each_line_and_read_back(tmp_path):
    rng = random.Random(5)
    rows = [clip_row(rng, i) for i in range(200)]
    path = tmp_path / "livecc.jsonl"
    n = export_jsonl(rows, path)
    assert n == 200
    data = path.read_bytes()
    offsets = read_offsets(path)
    assert offsets == json.loads(data.rstrip(b"\n").rsplit(b"\n", 1)[-1])
    assert len(offsets) == 200 and offsets[0] == 0
    for i, offset in enumerate(offsets):
        assert offset == 0 or data[offset - 1 : offset] == b"\n"  # each offset is a line start
        assert read_line(path, i, offsets) == to_conversation(rows[i])
    assert read_jsonl(path) == [to_conversation(r) for r in rows]


def test_export_skips_failed_rows_and_empty_file(tmp_path):
    good = clip_row(random.Random(1), 0)
    failed = {**good, "content": [], "errors": [{"stage": "clip", "error": "boom"}]}
    assert export_jsonl([good, failed], tmp_path / "a.jsonl") == 1
    assert write_jsonl([], tmp_path / "empty.jsonl") == []
    assert read_jsonl(tmp_path / "empty.jsonl") == []
    assert read_offsets(tmp_path / "empty.jsonl") == []


def test_export_from_clipped_dataset(tmp_path):
    words = [{"start": t * 0.5, "end": t * 0.5 + 0.4, "word": w, "probability": 0.9} for t, w in enumerate("The ball is in. He scores now. What a goal!".split())]
    stage = Clip(mode="sft", min_clip_sec=0.5, max_clip_sec=2.0, max_silence_sec=1.0)
    rows = stage.process_row({"video_id": "m", "video": "/v/m.mp4", "words": words, "segments": []})
    for row in rows:
        row.update(video="/v/m.mp4", title="Match", category="Sports", errors=[])
    ds = Dataset.from_list(rows)
    export_jsonl(ds, tmp_path / "sft.jsonl")
    back = read_jsonl(tmp_path / "sft.jsonl")
    assert len(back) == len(rows) >= 2
    assert back[1][0]["content"][1]["previous"] == rows[1]["preasr"]
    assert back[1][1]["content"][0]["text_stream"][0][2] in ("He", "What")


# --------------------------------------------------------------------------------------------
# Edge cases LiveCC's loader does not survive
# --------------------------------------------------------------------------------------------


def test_zero_clips_write_no_jsonl_and_say_so(tmp_path, caplog):
    failed = {**clip_row(random.Random(1), 0), "content": [], "errors": [{"stage": "clip", "error": "no words"}]}
    with caplog.at_level(logging.WARNING, logger="lomo_datasets.formats.livecc"):
        assert export_jsonl([failed], tmp_path / "livecc.jsonl") == 0
        assert export_clips_jsonl([], tmp_path / "livecc_clips.jsonl") == 0
    assert not (tmp_path / "livecc.jsonl").exists() and not (tmp_path / "livecc_clips.jsonl").exists()
    assert "no clips to export" in caplog.text and "livecc.jsonl" in caplog.text


def test_video_root_writes_paths_that_move_with_the_data(tmp_path):
    rows = [clip_row(random.Random(2), i) for i in range(3)]
    rows[1]["video"] = "/videos/sport/v1.mp4"
    path = tmp_path / "livecc.jsonl"
    export_jsonl(rows, path, video_root="/videos")
    videos = [conv[0]["content"][0]["video"] for conv in read_jsonl(path)]
    assert videos == ["v0.mp4", "sport/v1.mp4", "v2.mp4"]
    export_jsonl(rows, path)  # by default the paths stay as the rows have them
    assert [conv[0]["content"][0]["video"] for conv in read_jsonl(path)][1] == "/videos/sport/v1.mp4"
    with pytest.raises(FormatError, match="is not under video_root"):
        export_jsonl(rows, path, video_root="/elsewhere")
    assert clip_record(rows[0], video_root="/videos")["video"] == "v0.mp4"


def char_offsets_file(tmp_path: Path) -> Path:
    """``live_sft.jsonl``'s lines, the non-ASCII one first, with an offsets line that counts
    characters, as upstream's append_jsonl_seeks.py writes it for a non-ASCII file."""
    lines = (LIVECC / "live_sft.jsonl").read_text(encoding="utf-8").splitlines()[-2::-1]
    offsets, position = [], 0
    for line in lines:
        offsets.append(position)
        position += len(line) + 1  # characters, not bytes
    assert not lines[0].isascii()  # so the second line's byte and character offsets differ
    path = tmp_path / "char_offsets.jsonl"
    path.write_text("\n".join(lines + [json.dumps(offsets)]) + "\n", encoding="utf-8")
    return path


def test_character_offsets_are_ignored_with_a_warning(tmp_path, caplog):
    path = char_offsets_file(tmp_path)
    expected = read_livecc_file(LIVECC / "live_sft.jsonl", offsets="require")[::-1]
    with caplog.at_level(logging.WARNING, logger="lomo_datasets.formats.livecc"):
        assert read_livecc_file(path) == expected
    assert "counts characters, not bytes" in caplog.text and "ignored the offsets" in caplog.text
    assert read_livecc_file(path, offsets="none") == expected  # the offsets line is skipped, not parsed
    rows = lomo_datasets.load("livecc", data_files=str(path), cache_dir=tmp_path / "c", split="train")
    assert rows.to_list() == lomo_datasets.load("livecc", data_files=str(LIVECC / "live_sft.jsonl"),
                                                cache_dir=tmp_path / "c", split="train").to_list()[::-1]
    none = lomo_datasets.load("livecc", data_files=str(path), offsets="none", cache_dir=tmp_path / "c2", split="train")
    assert len(none) == 2


def test_our_jsonl_offsets_are_bytes_for_non_ascii_text(tmp_path):
    rows = [clip_row(random.Random(3), i) for i in range(20)]
    path = tmp_path / "livecc.jsonl"
    export_jsonl(rows, path)
    raw = path.read_bytes()
    assert not raw.isascii()
    for offset, conv in zip(read_offsets(path), read_jsonl(path)):
        with open(path, encoding="utf-8") as fh:  # the loader seeks a text-mode file to the offset
            fh.seek(offset)
            assert json.loads(fh.readline()) == conv


# --------------------------------------------------------------------------------------------
# Intermediate clip records (what LiveCC's clipping writes and its filters read)
# --------------------------------------------------------------------------------------------


def test_clip_records_are_livecc_shaped_and_its_filters_can_read_them(tmp_path):
    pre = clip_row(random.Random(4), 0)
    sft = {**clip_row(random.Random(5), 1), "preasr": "earlier", "query": None}
    del sft["previous"]
    failed = {**pre, "errors": [{"stage": "lm_loss", "error": "boom"}]}
    path = tmp_path / "livecc_clips.jsonl"
    assert export_clips_jsonl([pre, failed, sft], path) == 2
    with open(path, encoding="utf-8") as fh:  # read as upstream reads a JSONL: line by line
        lines = list(fh)
    assert len(lines) == 2  # one record per line, no offsets line
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"video", "content", "previous", "title", "category", "query"}
    assert set(second) == {"video", "content", "preasr", "title", "category"} and second["preasr"] == "earlier"
    assert first["content"] == [[w["start"], w["end"], w["word"]] for w in pre["content"]]
    # the way LiveCC's filters read content: triples unpacked as ``for s, e, t in content``
    text = " ".join(t for s, e, t in first["content"])
    assert text == " ".join(w["word"] for w in pre["content"])
    assert all(s <= e for s, e, _ in first["content"])
    assert first["title"] == pre["title"] and first["query"] == pre["query"]


def test_clip_records_match_the_hand_written_fixture(tmp_path):
    words = [(240.3, 240.6, "Green"), (240.6, 241.0, "flag,"), (241.0, 241.4, "green"), (241.4, 241.9, "flag!")]
    row = {"video": "videos/f1_monaco.mp4", "content": [{"start": s, "end": e, "word": w} for s, e, w in words],
           "previous": "and the safety car is coming in this lap", "title": "Monaco Grand Prix onboard",
           "category": "Autos & Vehicles", "errors": []}
    export_clips_jsonl([row], tmp_path / "clips.jsonl")
    ours = [json.loads(line) for line in (tmp_path / "clips.jsonl").read_text().splitlines()]
    fixture = [json.loads(line) for line in (LIVECC / "pretrain_clips.jsonl").read_text().splitlines()]
    assert ours == fixture


def test_export_settings_are_checked_before_the_run(tmp_path):
    from lomo_datasets.execution.pipeline import build_exports, build_steps
    from lomo_datasets.execution.recipes import get_recipe
    from lomo_datasets.core.stage import SettingError

    recipe = get_recipe("livecc-pretrain")
    assert "export" in recipe.setting_sections()
    build_steps(recipe, None, {"export": {"video_root": str(tmp_path)}})  # a known section
    (export,) = build_exports(recipe, None, {"export": {"video_root": str(tmp_path)}})
    assert export.video_root == str(tmp_path) and build_exports(recipe)[0].video_root is None
    with pytest.raises(SettingError, match=r"step 'export': .*valid settings: \['video_root'\]"):
        build_exports(recipe, None, {"export": {"video_rot": str(tmp_path)}})
    with pytest.raises(SettingError, match="export.video_root=.*name an existing folder"):
        build_exports(recipe, {"export": {"video_root": str(tmp_path / "missing")}})
    with pytest.raises(SettingError, match=r"unknown step\(s\) \['export'\] for recipe 'lomo'"):
        build_steps(get_recipe("lomo"), None, {"export": {"video_root": str(tmp_path)}})
