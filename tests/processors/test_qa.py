"""QA generation: six items per video, windows on subtitle boundaries inside [0, duration],
seeded option order with balanced letters; with the embedded SmolLM2 (xgrammar) and with the
OpenAI-compatible client against the loopback chat server of tests/test_llm.py."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from datasets import Dataset

from lomo_datasets.core import features as F
from lomo_datasets.llm import prompts as P
from lomo_datasets.processors.qa import LETTERS, TASKS, GenerateQA, build_items
from lomo_datasets.core.stage import SettingError, apply_stage
from tests.processors.test_compress import segments
from tests.test_llm import ChatServer, user_text

DURATION = 16.0


def temporal(index=2):
    seg = segments()[index]
    return {"index": index, "subtitle": seg["text"], "start": seg["start"], "end": seg["end"],
            "conclusion": "Pasta is added to the pot", "question": "What is added to the pot?",
            "answer": "Pasta", "wrong": ["Rice", "Salt", "Potatoes"]}


def record(video_id, index=2):
    return dict(video_id=video_id, language="en", duration=DURATION, segments=segments(), segments_en=[],
                summary=f"A cook boils water and cooks pasta with tomato sauce ({video_id}).",
                temporal=temporal(index), prompts=[P.SUMMARY.provenance(), P.TEMPORAL.provenance()], errors=[])


def dataset(rows):
    base = Dataset.from_list(rows).features
    return Dataset.from_list(rows, features=F.merge(base, {"segments_en": F.SEGMENTS, "temporal": F.TEMPORAL, "prompts": F.PROMPTS}))


def check_items(video_id, items, duration=DURATION, segs=None):
    """Structure every item must have (never its wording)."""
    segs = segs or segments()
    bounds = {(s["start"], s["end"]) for s in segs}
    assert [q["task"] for q in items] == list(TASKS)
    assert [q["question_id"] for q in items] == [f"{video_id}_{k:02d}" for k in range(1, 7)]
    for q in items:
        if q["task"] == "VTG":  # LoMo's grounding item: a window and its description, no choices
            start, end = q["window"]
            assert 0 <= start < end <= duration and (start, end) in bounds
            assert q["descriptions"].strip() and q["question"] == "" and q["options"] == [] and q["answer"] == ""
            continue
        assert q["question"].strip()
        assert [o[:3] for o in q["options"]] == ["A: ", "B: ", "C: ", "D: "]
        texts = [o[3:].strip().lower() for o in q["options"]]
        assert all(texts) and len(set(texts)) == 4
        assert q["answer"] in LETTERS
        if q["task"] in ("SVS", "SVQA", "VVQA"):
            start, end = q["window"]
            assert 0 <= start < end <= duration and (start, end) in bounds
            if q["task"] != "VVQA":  # the numbers in the text are the window's own
                assert re.findall(r"\d+(?:\.\d+)?", q["question"])[:2] == [str(start), str(end)]
            if q["task"] == "SVS":  # LoMo-Pipe's wording
                assert f"between {start} and {end} seconds" in q["question"]
        else:
            assert q["window"] == []
    return [q["answer"] for q in items if q["options"]]


def answers(video_id, extra_tasks=()):
    gvqa = {"question": "What is cooked?", "answer": "Pasta", "wrong": ["Soup", "Bread", "Fish"]}
    gvs = {"answer": "Cooking pasta at home", "wrong": ["Fixing a car", "A football match", "A walk in town"]}
    return build_items(video_id, temporal(), list(enumerate(segments())), gvqa, gvs, extra_tasks)


def test_items_are_structured_and_correct_answers_point_at_the_right_text():
    items = answers("vid")
    check_items("vid", items)
    with_mc = answers("vid", extra_tasks=("VTG_MC",))
    assert with_mc[:6] == items and [q["task"] for q in with_mc[6:]] == ["VTG_MC"]
    assert with_mc[6]["question_id"] == "vid_07"
    option = {q["task"]: dict(o.split(": ", 1) for o in q["options"])[q["answer"]] for q in with_mc if q["options"]}
    t = temporal()
    assert option["GVQA"] == "Pasta" and option["GVS"] == "Cooking pasta at home"
    assert option["SVS"] == t["subtitle"] and option["SVQA"] == option["VVQA"] == "Pasta"
    assert option["VTG_MC"] == "from 6.5 to 9.3 seconds"
    assert with_mc[6]["window"] == [6.5, 9.3] and with_mc[6]["descriptions"] == t["conclusion"]
    by_task = {q["task"]: q for q in items}
    assert by_task["VTG"]["window"] == [6.5, 9.3] and by_task["VTG"]["options"] == []
    assert by_task["SVQA"]["question"] == "From 6.5 seconds to 9.3 seconds in the video, what is added to the pot?"
    assert by_task["VVQA"]["question"] == t["question"]
    assert by_task["VTG"]["descriptions"] == t["conclusion"]
    assert answers("vid") == items  # seeded from the row id: reproducible
    assert [q["options"] for q in answers("other")] != [q["options"] for q in items]


def test_too_few_lines_is_an_error():
    three = list(enumerate(segments()[:3]))
    with pytest.raises(ValueError, match="at least 4"):
        build_items("v", temporal(1), three, {"question": "q", "answer": "a", "wrong": ["b", "c", "d"]},
                    {"answer": "a", "wrong": ["b", "c", "d"]})


def fake_reply(body):
    """Chat server answers: distinct options per prompt; a garbage answer for 'broken' videos."""
    text = user_text(body)
    tag = text.split("(")[1].split(")")[0]  # the video id in the summary
    if tag.startswith("broken"):
        return 200, "Sure, here you go: the question is about pasta.", "stop"
    # In letters: a key's number that the speech never says is refused as unsupported ("video000").
    tag = tag.translate(str.maketrans("0123456789", "abcdefghij"))
    if "question" in body["response_format"]["json_schema"]["schema"]["properties"]:
        return 200, json.dumps({"question": f"What happens in {tag}?", "answer": f"right {tag}",
                                "wrong": [f"wrong one {tag}", f"wrong two {tag}", f"wrong three {tag}"]}), "stop"
    return 200, json.dumps({"answer": f"topic {tag}", "wrong": [f"other a {tag}", f"other b {tag}", f"other c {tag}"]}), "stop"


def test_letters_balanced_over_200_items_via_http_backend():
    ids = [f"video{n:03d}" for n in range(40)] + ["broken1"]  # five multiple-choice items each
    rows = [record(v, index=n % 5) for n, v in enumerate(ids)]
    with ChatServer(fake_reply) as server:
        stage = GenerateQA(backend="openai", model="served", base_url=server.url, max_tries=2, concurrency=4)
        out = apply_stage(dataset(rows), stage)
    letters = Counter()
    for r in out:
        if r["video_id"] == "broken1":  # garbage after bounded retries: an error, the rest complete
            assert r["questions"] == [] and "2 tries" in r["errors"][-1]["error"]
            continue
        assert r["errors"] == []
        letters.update(check_items(r["video_id"], r["questions"]))
        assert [p["name"] for p in r["prompts"]] == ["summary", "temporal", "gvqa", "gvs"]
    total = sum(letters.values())
    assert total >= 200
    for letter in LETTERS:
        assert 0.20 <= letters[letter] / total <= 0.30, letters
    broken_requests = [r for r in server.requests if "(broken1)" in user_text(r["body"])]
    assert len(broken_requests) == 2 * 2  # GVQA and GVS, two tries each


@pytest.mark.slow
def test_qa_with_smollm2_every_item_validates():
    rows = [record("pasta_a", 1), record("pasta_b", 3)]
    stage = GenerateQA(model="embedded:smollm2-135m", option_max_chars=40, max_tries=3, cpu_threads=1)
    out = apply_stage(dataset(rows), stage)
    assert out.features["questions"] == F.QUESTIONS
    done = 0
    for r in out:
        if r["errors"]:  # only the LLM layer's bounded-retry error is acceptable
            assert "no valid output after 3 tries" in r["errors"][-1]["error"] and r["questions"] == []
            continue
        check_items(r["video_id"], r["questions"])
        done += 1
    assert done >= 1


def test_extra_tasks_is_a_checked_setting_off_by_default():
    assert GenerateQA(model="embedded:smollm2-135m").extra_tasks == []
    assert GenerateQA(model="embedded:smollm2-135m", extra_tasks=["VTG_MC"]).extra_tasks == ["VTG_MC"]
    with pytest.raises(SettingError, match=r"qa.extra_tasks=\['VTG'\]: use a list of \['VTG_MC'\]"):
        GenerateQA(model="embedded:smollm2-135m", extra_tasks=["VTG"])
    with pytest.raises(ValueError, match="VTG_MC distractors"):
        few = [(k, s) for k, s in enumerate(segments()) if k in (1, 2, 3)]
        few.append((4, {**few[0][1], "text": "Another line entirely"}))  # a fourth text, but a repeated window
        build_items("v", temporal(2), few, {"question": "q", "answer": "a", "wrong": ["b", "c", "d"]},
                    {"answer": "a", "wrong": ["b", "c", "d"]}, ("VTG_MC",))
    six = build_items("v", temporal(2), few, {"question": "q", "answer": "a", "wrong": ["b", "c", "d"]},
                      {"answer": "a", "wrong": ["b", "c", "d"]})
    assert [q["task"] for q in six] == list(TASKS)  # only the multiple-choice VTG needs four windows


def test_a_gvqa_option_about_the_summary_is_refused():
    """bench_yield's en_09, as the embedded 1.5B wrote it from the summary: "What is the name of
    the cat?" keyed "The cat's name is not specified in the summary." is retried. (An invented
    name, "The woman is named Sarah.", is the audit's ``unsupported`` flag, not a refusal.)"""
    from lomo_datasets.processors.qa import _choice_task

    task = _choice_task("GVQA", P.GVQA, True, 60)
    with pytest.raises(ValueError, match="says 'the summary', which is about the text you were given"):
        task.check({"question": "What is the name of the cat?", "answer": "The cat's name is not specified in the summary.",
                    "wrong": ["Fluffy", "Buddy", "Mittens"]})
    with pytest.raises(ValueError, match="says 'not specified'"):
        task.check({"question": "What is the name of the cat?", "answer": "Not specified", "wrong": ["Fluffy", "Buddy", "Mittens"]})
    task.check({"question": "What does the person fill?", "answer": "The kettle", "wrong": ["A cup", "A bowl", "A pot"]})
