"""Planted defects in the items of a real run (tests/fixtures/audit_items.json: the embedded lomo
recipe on four espeak-ng videos, text only; `clean` lists the items a person read and found sound).

Each kind of defect is planted into copies of clean items (lomo_datasets.audit.planted) and the
audit must flag it; the untouched clean items must get no flag. The lexical checks need no LLM;
the verifier and the blind answerer run the embedded 1.5B (the model files of ``run --embedded``)
with circular evaluation. benchmarks/bench_audit.py --planted gives the rates over every item.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lomo_datasets.audit import checks as A
from lomo_datasets.audit import planted as P

FIXTURE = Path(__file__).parent / "fixtures" / "audit_items.json"


@pytest.fixture(scope="module")
def fixture():
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    videos, clean = P.videos_from_fixture(data)
    return data, videos, clean


def test_fixture_is_a_real_runs_items(fixture):
    data, videos, clean = fixture
    assert [v.video_id for v in videos] == ["city_walk", "football_highlights", "cooking_pasta", "garden_work"]
    assert len(clean) == 15 and not clean & set(data["natural_defects"])
    assert all(v.summary and v.lines and len(v.questions) == 6 for v in videos)


def test_lexical_checks_flag_planted_duplicates_and_invented_facts_and_nothing_clean(fixture):
    data, videos, clean = fixture
    report = A.audit(videos)  # no LLM: the rule checks only
    flags = report.flags_by_item()
    assert not clean & set(flags), {q: flags[q] for q in clean & set(flags)}
    # the natural defects a rule can see: invented colours, a key twice as long as the others
    assert [f.reason for f in flags["football_highlights_01"]] == ["unsupported"]
    assert flags["cooking_pasta_01"][0].detail == "not in the transcript or title: white"
    assert {f.reason for f in flags["garden_work_04"]} == {"answer_longest"}

    near = P.plant(videos, "near_duplicate", clean)
    assert sum(len(v.questions) for v in near) == 15
    dup = A.audit(near).flags_by_item()
    assert all(any(f.reason == "duplicate_options" for f in dup.get(q["question_id"], [])) for v in near for q in v.questions)
    # a moved window with its times rewritten passes every window check: only the verifier sees it
    moved = P.plant(videos, "moved_window", clean)
    assert sum(len(v.questions) for v in moved) == 10
    assert not [f for f in A.audit(moved).flags if f.reason.startswith("window")]
    svqa = next(q for v in moved for q in v.questions if q["question_id"] == "football_highlights_04~moved_window")
    assert svqa["window"] == [10.77, 12.33] and svqa["question"].startswith("From 10.77 seconds to 12.33 seconds")


def test_absurd_distractors_are_caught_without_an_llm(fixture):
    """Every distractor replaced by an absurd sentence: the lexical check sees that no wrong
    option shares a word with the video while the key does (the embedded blind answerer cannot:
    it answers the first shown option). It fires on none of the clean items."""
    data, videos, clean = fixture
    absurd = P.plant(videos, "absurd_distractors", clean)
    items = [q["question_id"] for v in absurd for q in v.questions]
    got = A.audit(absurd).flags_by_item()
    caught = [qid for qid in items if "off_topic_distractors" in {f.reason for f in got.get(qid, [])}]
    assert len(items) >= 10 and len(caught) >= 0.9 * len(items), (len(caught), len(items), sorted(set(items) - set(caught)))
    assert not [f for f in A.audit(videos).flags if f.reason == "off_topic_distractors"]
    # short distractors a video need not mention ("Sushi", "Swimming competition") are not judged
    item = {"question_id": "q", "task": "GVQA", "question": "What is cooked?", "answer": "A",
            "options": ["A: Pasta with tomato", "B: Sushi", "C: Cookies", "D: Bread"]}
    video = A.Video("v", [item], transcript="We cook pasta with tomato sauce today.")
    assert not A.off_topic_distractors(item, video)
    far = {**item, "options": ["A: Pasta with tomato", "B: A purple elephant plays violin", "C: Penguins file tax returns",
                               "D: Submarines park on bakery roofs"]}
    assert A.off_topic_distractors(far, video)


@pytest.mark.slow
def test_embedded_verifier_catches_a_wrong_key_and_a_moved_window_and_a_letter_habit_scores_nothing(fixture):
    """The embedded 1.5B on CTranslate2 int8 (the files of ``run --embedded``)."""
    data, videos, clean = fixture
    video = [v for v in videos if v.video_id == "football_highlights"]
    generate = A.llm_answerer(A.blind_settings({"cpu_threads": 2}, embedded=True), "cpu")
    wrong = P.plant(video, "wrong_key", {"football_highlights_02"})
    moved = P.plant(video, "moved_window", {"football_highlights_03"})
    both = wrong + moved
    got = A.audit(both, verified=A.verify_answers(both, generate)).flags_by_item()
    for qid in ("football_highlights_02~wrong_key", "football_highlights_03~moved_window"):
        assert "unverified_key" in {f.reason for f in got.get(qid, [])}, (qid, got.get(qid))
    # Blind, this model answers the first shown option whatever it is: 4 rotations, 4 options, no pick.
    items = [q for q in video[0].questions if q["question_id"] in {"football_highlights_02", "football_highlights_04"}]
    blind = A.blind_answers(items, generate)
    assert not [f for f in A.audit([dataclasses.replace(video[0], questions=items)], blind).flags if f.reason == "blind_answerable"]


@pytest.mark.slow
def test_embedded_models_meet_the_goal_defects_caught_and_clean_items_unflagged(fixture):
    """The embedded 1.5B as blind answerer and key verifier, on one video of the fixture:
    planted absurd distractors and a planted wrong key are caught, and the clean items get no
    flag. (Before the `against` verify rule, clean keys the 1.5B could not decide, answering the
    first shown option in every rotation, were flagged: 7 of 15 in bench_audit.py --planted.)"""
    data, videos, clean = fixture
    video = [v for v in videos if v.video_id == "football_highlights"]
    mine = {q["question_id"] for q in video[0].questions} & clean
    generate = A.llm_answerer(A.blind_settings({"cpu_threads": 2}, embedded=True), "cpu")
    absurd = P.plant(video, "absurd_distractors", {"football_highlights_02"})
    got = A.audit(absurd, A.blind_answers(absurd[0].questions, generate)).flags_by_item()
    assert "off_topic_distractors" in {f.reason for f in got.get("football_highlights_02~absurd_distractors", [])}
    wrong = P.plant(video, "wrong_key", {"football_highlights_02"})
    got = A.audit(wrong, verified=A.verify_answers(wrong, generate)).flags_by_item()
    assert "unverified_key" in {f.reason for f in got.get("football_highlights_02~wrong_key", [])}, got
    flags = A.audit(video, A.blind_answers(video[0].questions, generate), verified=A.verify_answers(video, generate)).flags_by_item()
    assert not mine & set(flags)
