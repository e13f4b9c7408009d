"""LiveCC conversations and the JSONL export with its byte-offset index line."""

from __future__ import annotations

import json
import random

from datasets import Dataset

from lomo_datasets.processors.clip import Clip
from lomo_datasets.processors.conversation import (
    export_jsonl,
    read_jsonl,
    read_line,
    read_offsets,
    to_conversation,
    write_jsonl,
)


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
