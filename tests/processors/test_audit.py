"""The audit steps of the lomo recipe: ``blind`` (an LLM answers each item blind) and ``audit``
(the ``audit_flags`` column, and the ``drop`` setting), on hand-made rows with known answers,
through the loopback OpenAI-compatible server of tests/test_llm.py and with the embedded SmolLM2."""

from __future__ import annotations

import pytest
from datasets import Dataset, Value

from lomo_datasets.core import features as F
from lomo_datasets.processors.audit import AuditQuestions, BlindAnswer
from lomo_datasets.core.stage import SettingError, apply_stage
from tests.test_audit import GOOD_WINDOW, HARD, LEAKY, SUBTITLES, item, lexical_reader
from tests.test_llm import ChatServer

GROUNDING = {"question_id": "v2_01", "task": "VTG", "question": "When does he wave?", "options": [],
             "answer": "", "window": [3.0, 5.0], "descriptions": "he waves"}
OFF_WINDOW = item("v2_02", "SVS", "What happens between 3 and 5 seconds in the video?", ["a1", "b1", "c1", "d1"], "B", (6.0, 9.0))
FLAKY = item("v2_03", "GVQA", "Which flaky question fails?", ["x", "y", "z", "w"], "A")


def rows():
    segments = [{"start": s, "end": e, "text": f"line {k}"} for k, (s, e) in enumerate(SUBTITLES)]
    return [
        {"video_id": "v1", "duration": 12.0, "segments": segments, "questions": [LEAKY, HARD, GOOD_WINDOW], "errors": []},
        {"video_id": "v2", "duration": 12.0, "segments": segments, "questions": [GROUNDING, OFF_WINDOW, FLAKY], "errors": []},
        {"video_id": "v3", "duration": None, "segments": [], "questions": [], "errors": [{"stage": "qa", "error": "no lines"}]},
    ]


FEATURES = F.merge({"video_id": Value("string"), "duration": Value("float64")},
                   {"segments": F.SEGMENTS, "questions": F.QUESTIONS, "errors": F.ERRORS})


def dataset(data):
    return Dataset.from_list(data, features=FEATURES)


def reader_failing_one(body):
    if "flaky" in body["messages"][-1]["content"]:
        return 503, "", "stop"
    return lexical_reader(body)


def test_blind_step_answers_each_item_and_a_failed_answer_is_no_row_error():
    with ChatServer(reader_failing_one) as server:
        stage = BlindAnswer(backend="openai", model="reader", base_url=server.url, max_tries=1, http_retries=0)
        out = apply_stage(dataset(rows()), stage)
    assert out["blind_answers"] == [
        [{"question_id": "v1_01", "answer": "B"}, {"question_id": "v1_02", "answer": "A"}, {"question_id": "v1_03", "answer": "A"}],
        [{"question_id": "v2_02", "answer": "A"}, {"question_id": "v2_03", "answer": ""}],  # no request for the grounding item
        [],  # failed upstream: untouched
    ]
    assert out["errors"][:2] == [[], []]
    prompts = [r["body"]["messages"][-1]["content"] for r in server.requests]
    assert len(prompts) == 5 and not any("line 0" in p for p in prompts)  # never the subtitles


def test_blind_step_disabled_loads_nothing():
    out = apply_stage(dataset(rows()[:2]), BlindAnswer(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", enabled=False))
    assert out["blind_answers"] == [[], []]


@pytest.mark.slow
def test_blind_step_with_the_embedded_model():
    out = apply_stage(dataset(rows()[:2]), BlindAnswer(model="embedded:smollm2-135m", cpu_threads=1, max_tries=2))
    picks = {a["question_id"]: a["answer"] for per in out["blind_answers"] for a in per}
    assert set(picks) == {"v1_01", "v1_02", "v1_03", "v2_02", "v2_03"} and set(picks.values()) <= set("ABCD")


def with_blind(data):
    picks = {"v1_01": "B", "v1_02": "A", "v1_03": "A", "v2_02": "A", "v2_03": ""}
    for row in data:
        row["blind_answers"] = [{"question_id": q["question_id"], "answer": picks[q["question_id"]]}
                                for q in row["questions"] if q["question_id"] in picks]
    features = F.merge(FEATURES, {"blind_answers": F.BLIND_ANSWERS})
    return Dataset.from_list(data, features=features)


def test_audit_step_flags_items_and_keeps_them():
    out = apply_stage(with_blind(rows()), AuditQuestions())
    flags = [[(f["question_id"], f["reason"]) for f in per] for per in out["audit_flags"]]
    assert flags[0] == [("v1_01", "blind_answerable")]
    assert flags[1] == [("v2_02", "window_off_subtitles"), ("v2_02", "window_text_mismatch")]
    assert flags[2] == []
    assert [len(q) for q in out["questions"]] == [3, 3, 0] and out["audit_dropped"][:2] == [[], []]
    detail = out["audit_flags"][1][1]["detail"]
    assert detail == "text 3-5 s, window [6, 9]"


def test_audit_step_drop_setting_moves_flagged_items_aside():
    out = apply_stage(with_blind(rows()), AuditQuestions(drop=["blind_answerable", "window_text_mismatch"]))
    assert [[q["question_id"] for q in per] for per in out["questions"]][:2] == [["v1_02", "v1_03"], ["v2_01", "v2_03"]]
    assert [[q["question_id"] for q in per] for per in out["audit_dropped"]][:2] == [["v1_01"], ["v2_02"]]
    assert len(out["audit_flags"][1]) == 2  # the flags of dropped items stay, with their reasons
    with pytest.raises(SettingError, match="unknown reason.*blind_answerble.*reasons: blind_answerable"):
        AuditQuestions(drop=["blind_answerble"])
    with pytest.raises(SettingError, match="audit.drop must be a list"):
        AuditQuestions(drop="blind_answerable")


def test_audit_step_without_the_blind_column():
    out = apply_stage(dataset(rows()[:2]), AuditQuestions())
    assert [f["reason"] for per in out["audit_flags"] for f in per] == ["window_off_subtitles", "window_text_mismatch"]
    assert out.features["audit_flags"] == F.AUDIT_FLAGS and out.features["audit_dropped"] == F.QUESTIONS
