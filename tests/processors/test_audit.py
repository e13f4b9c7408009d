"""The audit steps of the lomo recipe: ``blind`` (an LLM answers each item blind) and ``audit``
(the ``audit_flags`` column, and the ``drop`` setting), on hand-made rows with known answers,
through the loopback OpenAI-compatible server of tests/test_llm.py and with the embedded SmolLM2."""

from __future__ import annotations

import json
import re

import pytest
from datasets import Dataset, Value

from lomo_datasets.core import features as F
from lomo_datasets.processors.audit import AuditQuestions, BlindAnswer, VerifyKeys
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
    # 4 rotations per item: the reader's "A" habit (no shared word) is no consistent pick ("")
    assert out["blind_answers"] == [
        [{"question_id": "v1_01", "answer": "B", "rotations": ["B"] * 4},
         {"question_id": "v1_02", "answer": "", "rotations": list("ABCD")},
         {"question_id": "v1_03", "answer": "", "rotations": list("ABCD")}],
        [{"question_id": "v2_02", "answer": "", "rotations": list("ABCD")},
         {"question_id": "v2_03", "answer": "", "rotations": [""] * 4}],  # no request for the grounding item
        [],  # failed upstream: untouched
    ]
    assert out["errors"][:2] == [[], []]
    prompts = [r["body"]["messages"][-1]["content"] for r in server.requests]
    assert len(prompts) == 5 * 4 and not any("line 0" in p for p in prompts)  # never the subtitles


def test_blind_step_disabled_loads_nothing():
    out = apply_stage(dataset(rows()[:2]), BlindAnswer(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", enabled=False))
    assert out["blind_answers"] == [[], []]


@pytest.mark.slow
def test_blind_step_with_the_embedded_model():
    out = apply_stage(dataset(rows()[:2]), BlindAnswer(model="embedded:smollm2-135m", cpu_threads=1, max_tries=2))
    picks = {a["question_id"]: a["answer"] for per in out["blind_answers"] for a in per}
    # "" where no option won every rotation (circular evaluation), and for the grounding item
    assert set(picks) == {"v1_01", "v1_02", "v1_03", "v2_02", "v2_03"} and set(picks.values()) <= set("ABCD") | {""}
    rotations = {a["question_id"]: a["rotations"] for per in out["blind_answers"] for a in per}
    assert all(len(r) == 4 and set(r) <= set("ABCD") | {""} for r in rotations.values())
    assert any(set(r) <= set("ABCD") for q, r in rotations.items() if q != "v2_03")  # the model answered


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


def evidence_reader(body):
    """The loopback verifier: the option sharing the most words with the evidence (not the
    question); ties go to the first shown, a letter habit circular evaluation must not score."""
    text = body["messages"][-1]["content"]
    proof = set(re.findall(r"\w+", text.split("\n\nQuestion:")[0].split("):", 1)[1].lower()))
    options = re.findall(r"^([A-D]): (.*)$", text.split("\nOptions:")[1], re.M)
    best = max(options, key=lambda o: (len(proof & set(re.findall(r"\w+", o[1].lower()))), -ord(o[0])))
    return 200, json.dumps({"answer": best[0]}), "stop"


def verify_rows():
    lines = [{"start": 0.5, "end": 2.5, "text": "he boils the water"}, {"start": 3.0, "end": 5.0, "text": "he adds the pasta"},
             {"start": 5.5, "end": 8.0, "text": "he drains the pot"}]
    opts = ["he boils water", "he adds pasta", "he drains the pot", "he sings"]
    right = item("v1_01", "SVQA", "From 3 seconds to 5 seconds in the video, what does he do?", opts, "B", (3.0, 5.0))
    wrong = item("v1_02", "SVQA", "From 5.5 seconds to 8 seconds in the video, what does he do?", opts, "B", (5.5, 8.0))
    gvqa = item("v1_03", "GVQA", "What does the man cook?", ["soup", "pasta", "rice", "bread"], "B")
    vague = item("v1_04", "SVS", "What happens between 0.5 and 2.5 seconds in the video?", ["x", "y", "z", "w"], "A", (0.5, 2.5))
    return [{"video_id": "v1", "duration": 9.0, "summary": "A man cooks pasta at home.", "segments": lines,
             "segments_en": lines, "questions": [right, wrong, gvqa, vague, GROUNDING], "errors": []}]


def test_verify_step_answers_with_the_evidence_in_four_rotations_and_the_audit_flags_unverified_keys():
    features = F.merge(FEATURES, {"summary": Value("string"), "segments_en": F.SEGMENTS})
    data = Dataset.from_list(verify_rows(), features=features)
    with ChatServer(evidence_reader) as server:
        out = apply_stage(data, VerifyKeys(backend="openai", model="reader", base_url=server.url, max_tries=1, http_retries=0))
    picks = {p["question_id"]: (p["answer"], p["rotations"]) for p in out["verified_answers"][0]}
    assert picks == {"v1_01": ("B", ["B"] * 4), "v1_02": ("C", ["C"] * 4), "v1_03": ("B", ["B"] * 4), "v1_04": ("", list("ABCD"))}
    assert out.features["verified_answers"] == F.BLIND_ANSWERS
    prompts = [r["body"]["messages"][-1]["content"] for r in server.requests]
    assert len(prompts) == 4 * 4  # the grounding item has no options: not asked
    window = [p for p in prompts if "From 5.5 seconds" in p]
    assert window and all("he drains the pot" in p.split("Question:")[0] and "he adds" not in p.split("Question:")[0] for p in window)
    assert all("A man cooks pasta" in p for p in prompts if "What does the man cook" in p)
    audited = apply_stage(out, AuditQuestions())
    flags = {(f["question_id"], f["reason"]): f["detail"] for f in audited["audit_flags"][0]}
    assert flags[("v1_02", "unverified_key")] == "the verifier picked C in 4 of 4 rotations: 'he drains the pot'; key B"
    # v1_04: the reader answers the first shown option in every rotation, one vote per option:
    # nothing points away from the key, so it is undecided, not flagged (the `against` rule)
    assert not any(qid in ("v1_01", "v1_03", "v1_04") and reason == "unverified_key" for qid, reason in flags)
