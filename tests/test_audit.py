"""The QA audit on hand-made items whose answers are known.

The blind answerer runs through the LLM layer: against the loopback OpenAI-compatible server of
``tests/test_llm.py`` (its "model" here picks the option sharing the most words with the question,
the shortcut a leaky item allows) and with the embedded SmolLM2.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from lomo_datasets.audit import checks as A
from lomo_datasets.core import features as F
from lomo_datasets.core.stage import SettingError
from tests.test_llm import ChatServer


def item(qid, task, question, options, answer, window=(), descriptions=""):
    return {
        "question_id": qid, "task": task, "question": question,
        "options": [f"{letter}: {text}" for letter, text in zip("ABCD", options)],
        "answer": answer, "window": list(window), "descriptions": descriptions,
    }


SUBTITLES = [(0.5, 2.5), (3.0, 5.0), (5.5, 8.0), (8.5, 11.0)]
SUBTITLE_TEXT = "the chef slices three ripe tomatoes"

LEAKY = item("v1_01", "GVQA", "Which yellow curved fruit, a banana, does the cook peel?",
             ["an apple", "a banana", "a cherry", "a grape"], "B")
HARD = item("v1_02", "GVS", "What is the video about?",
            ["gardening", "a concert", "cooking dinner", "a bike repair"], "C")
GOOD_WINDOW = item("v1_03", "SVS", "What happens between 3 and 5 seconds in the video?",
                   ["he waves", "he sits", "he cooks", "he runs"], "D", window=(3.0, 5.0))


def video(vid, questions, duration=12.0, subtitles=SUBTITLES):
    return A.Video(vid, questions, duration=duration, subtitles=list(subtitles))


def lexical_reader(body):
    """The loopback "LLM": the option with the most words in common with the question."""
    text = body["messages"][-1]["content"]
    question = set(re.findall(r"\w+", text.split("\nOptions:")[0].lower()))
    options = re.findall(r"^([A-D]): (.*)$", text.split("\nOptions:")[1], re.M)
    best = max(options, key=lambda o: (len(question & set(re.findall(r"\w+", o[1].lower()))), -ord(o[0])))
    return 200, json.dumps({"answer": best[0]}), "stop"


# --------------------------------------------------------------------------------------------
# Blind answerability
# --------------------------------------------------------------------------------------------


def test_leaky_item_is_answered_blind_through_the_http_backend():
    from lomo_datasets.llm.stage import LLMSettings

    grounding = {**GOOD_WINDOW, "question_id": "v1_04", "task": "VTG", "options": [], "answer": ""}
    videos = [video("v1", [LEAKY, HARD, GOOD_WINDOW, grounding])]
    with ChatServer(lexical_reader) as server:
        generate = A.llm_answerer(LLMSettings(backend="openai", model="reader", base_url=server.url))
        answers = A.blind_answers([q for v in videos for q in v.questions], generate)
    report = A.audit(videos, answers, blind_model="openai:reader")

    # Circular evaluation: 4 rotations per item. The reader's tie-break always says "A" when no
    # option shares a word with the question: a letter habit, so no consistent pick ("").
    assert answers == {"v1_01": "B", "v1_02": "", "v1_03": ""}  # no request for the grounding item
    assert answers.rotations == {"v1_01": ["B"] * 4, "v1_02": list("ABCD"), "v1_03": list("ABCD")}
    overall = report.overall.blind
    assert (overall.asked, overall.answered, overall.correct) == (3, 3, 1)
    assert overall.picks == {"B": 1} and overall.inconsistent == 2
    assert overall.correct_ids == ["v1_01"]
    assert math.isclose(overall.accuracy, 1 / 3) and overall.chance == 0.25
    assert (overall.ci_low, overall.ci_high) == pytest.approx(A.wilson_interval(1, 3))
    assert report.tasks["GVQA"].blind.correct_ids == ["v1_01"] and report.tasks["GVS"].blind.correct == 0
    assert [f for f in report.flags if f.reason == "blind_answerable"] == [
        A.Flag("v1_01", "blind_answerable", "blind pick B in 4 of 4 rotations")]
    # The answerer saw the question and the options, never the subtitles; answers were constrained.
    bodies = [r["body"] for r in server.requests]
    assert len(bodies) == 12
    shown = [re.findall(r"^[A-D]: (.*)$", b["messages"][-1]["content"], re.M) for b in bodies if "banana" in b["messages"][-1]["content"]]
    assert sorted(s.index("a banana") for s in shown) == [0, 1, 2, 3]  # the key in every position once
    assert "banana" in bodies[0]["messages"][-1]["content"] or any("banana" in b["messages"][-1]["content"] for b in bodies)
    assert all(SUBTITLE_TEXT not in json.dumps(b) for b in bodies)
    schema = bodies[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["answer"]["enum"] == ["A", "B", "C", "D"]
    md = report.markdown()
    assert "33% [6%, 79%] of 3" in md and "`v1_01`" in md.split("got right")[1]


def test_many_leaky_items_are_above_chance_and_marked():
    leaky = [item(f"v{i}_01", "GVQA", f"Which tool, a hammer number {i}, drives the nail?",
                  ["a spoon", "a hammer", "a towel", "a pillow"], "B") for i in range(12)]
    answers = {q["question_id"]: "B" for q in leaky}
    report = A.audit([video(f"v{i}", [q]) for i, q in enumerate(leaky)], answers)
    blind = report.tasks["GVQA"].blind
    assert blind.accuracy == 1.0 and blind.ci_low > 0.25 and blind.above_chance
    assert "▲" in A.audit_table(report)
    assert report.to_dict()["tasks"]["GVQA"]["blind"]["above_chance"] is True


def test_failed_blind_answers_are_not_counted_as_wrong():
    answers = {"v1_01": "B", "v1_02": None}
    report = A.audit([video("v1", [LEAKY, HARD])], answers)
    blind = report.overall.blind
    assert (blind.asked, blind.answered, blind.correct) == (2, 1, 1)


@pytest.mark.slow
def test_embedded_model_answers_every_item_with_an_offered_letter():
    three = item("v2_01", "GVQA", "Which colour is the sky on a clear day?", ["blue", "green", "red"], "A")
    items = [LEAKY, HARD, three]
    generate = A.llm_answerer(A.blind_settings({"cpu_threads": 1, "max_tries": 2}, embedded=True), "cpu")
    answers = A.blind_answers(items, generate)
    assert set(answers) == {"v1_01", "v1_02", "v2_01"}
    assert answers["v1_01"] in "ABCD" and answers["v1_02"] in "ABCD" and answers["v2_01"] in "ABC"


def test_blind_settings_fail_at_once():
    with pytest.raises(SettingError, match="unknown setting.*modle.*valid: backend"):
        A.blind_settings({"modle": "x"})
    with pytest.raises(SettingError, match="base_url"):
        A.blind_settings({"backend": "openai", "model": "m"})
    assert A.blind_settings({}, embedded=True).model.startswith("embedded:")


# --------------------------------------------------------------------------------------------
# Option checks
# --------------------------------------------------------------------------------------------


def test_answer_is_longest_rate_and_flags():
    items = [
        item("v1_01", "GVQA", "q1?", ["no", "yes, the man cooks pasta in a big pot", "maybe", "never"], "B"),  # longest by far
        item("v1_02", "GVQA", "q2?", ["red car", "blue car", "green cars", "black car"], "C"),  # longest by one letter
        item("v1_03", "GVQA", "q3?", ["a dog runs", "a cat", "a bird", "a fish"], "A"),  # longest, 1.43x
        item("v1_04", "GVQA", "q4?", ["one", "two", "three", "four"], "A"),  # not the longest
    ]
    report = A.audit([video("v1", items)])
    assert report.tasks["GVQA"].longest_rate == 0.75
    assert [A.answer_is_longest(i) for i in items] == [True, True, True, False]
    flagged = [f.question_id for f in report.flags if f.reason == "answer_longest"]
    assert flagged == ["v1_01", "v1_03"]  # the margin (1.3x) spares the one-letter case


def test_letter_balance():
    skewed = [item(f"v{i}_01", "GVS", "q?", ["w", "x", "y", "z"], "A") for i in range(8)]
    counts = A.letter_counts(skewed)
    assert counts == {"A": 8, "B": 0, "C": 0, "D": 0}
    assert A.balance_p_value(counts) < 0.001
    balanced = [item(f"v{i}_01", "GVS", "q?", ["w", "x", "y", "z"], "ABCD"[i % 4]) for i in range(8)]
    assert A.letter_counts(balanced) == {"A": 2, "B": 2, "C": 2, "D": 2}
    assert A.balance_p_value(A.letter_counts(balanced)) == pytest.approx(1.0)
    assert A.balance_p_value({}) is None


def test_statistics_match_known_values():
    assert A.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert A.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert A.wilson_interval(0, 0) == (0.0, 1.0)
    # chi-square critical values at 5% for df 1..4
    for df, x in ((1, 3.841), (2, 5.991), (3, 7.815), (4, 9.488)):
        assert A.chi2_sf(x, df) == pytest.approx(0.05, abs=2e-4)


def test_near_duplicate_options_within_an_item():
    dup = item("v1_01", "GVQA", "What does he do?", ["The cat sleeps.", "a dog barks", "the cat sleeps", "a bird sings"], "B")
    near = item("v1_02", "GVQA", "What does he do?", ["he boils the water", "he boils the waters", "he sits", "he runs"], "C")
    clean = item("v1_03", "GVQA", "What does he do?", ["he boils water", "he sits down", "he runs away", "he sings"], "A")
    assert A.near_duplicate_options(dup) == [("A", "C")]
    assert A.near_duplicate_options(near) == [("A", "B")]
    assert A.near_duplicate_options(clean) == []
    report = A.audit([video("v1", [dup, near, clean])])
    assert [(f.question_id, f.detail) for f in report.flags if f.reason == "duplicate_options"] == [
        ("v1_01", "A ~ C"), ("v1_02", "A ~ B")]
    assert report.tasks["GVQA"].duplicate_option_items == 2


def test_near_duplicate_options_by_containment_and_repetition():
    press = item("v1_01", "SVQA", "Where is the press box placed?", ["Press box", "on the table", "Press box press box", "in the sink"], "A")
    twice = item("v1_02", "GVQA", "What does he hold?", ["a knife", "a spoon", "a fork", "a fork a fork"], "A")
    most = item("v1_03", "GVQA", "What does he do?", ["boil the water", "boil the water now", "cut onions", "sing"], "A")
    distinct = item("v1_04", "GVQA", "Who is there?", ["the man", "the man and the woman", "a dog", "a child"], "A")
    assert A.near_duplicate_options(press) == [("A", "C")]
    assert A.near_duplicate_options(twice) == [("C", "D")]
    assert A.near_duplicate_options(most) == [("A", "B")]  # 3 of 4 words: the same option
    assert A.near_duplicate_options(distinct) == []  # "man" is half of "man and woman": another answer


def test_unsupported_facts_in_the_key():
    transcript = "Football match highlights\nThe home team starts with the ball.\nThe church tower was built 500 years ago."
    assert A.key_facts("Real Madrid") == ["Real", "Madrid"]
    assert A.key_facts("The red shirt of Jack") == ["red", "Jack"]
    assert A.key_facts("Five hundred years ago") == ["Five", "hundred"]
    asked = "What is the name of the football team playing?"  # the demo's invented team
    assert A.unsupported_facts("Real Madrid", transcript, asked) == ["Real", "Madrid"]
    assert A.unsupported_facts("Real Madrid", transcript, "Which team is playing?") == ["Real", "Madrid"]
    assert A.unsupported_facts("Old Town Walkthrough", transcript, "Which option summarizes the video best?") == []  # style
    assert A.unsupported_facts("white", transcript) == ["white"]
    assert A.unsupported_facts("The home team", transcript) == []  # a capital that opens a sentence names nothing
    assert A.unsupported_facts("built 500 years ago", transcript) == [] and A.unsupported_facts("300 years", transcript) == ["300"]
    assert A.unsupported_facts("three goals", "he scored 3 goals") == []  # number words are numbers
    colour = item("v1_01", "GVQA", "What is the color of the pasta?", ["red", "white", "green", "blue"], "B")
    v = A.Video("v1", [colour], 12.0, [], transcript="we cook pasta with tomato sauce")
    assert [(f.reason, f.detail) for f in A.audit([v]).flags] == [("unsupported", "not in the transcript or title: white")]
    assert A.audit([A.Video("v1", [colour], 12.0, [])]).flags == []  # no transcript: not checked


def test_options_repeated_across_items_but_not_the_svqa_vvqa_pair():
    opts = ["he cuts onions", "he boils pasta", "he washes plates", "he sets the table"]
    svqa = item("v1_04", "SVQA", "From 3 seconds to 5 seconds in the video, what does he do?", opts, "B", (3.0, 5.0))
    vvqa = item("v1_05", "VVQA", "What does he do?", list(reversed(opts)), "C", (3.0, 5.0))
    copied = item("v2_01", "GVQA", "What does the man do?", opts, "B")
    report = A.audit([video("v1", [svqa, vvqa]), video("v2", [copied])])
    repeats = {f.question_id: f.detail for f in report.flags if f.reason == "options_repeat"}
    assert set(repeats) == {"v1_04", "v1_05", "v2_01"}
    assert repeats["v2_01"] in ("same options as v1_04", "same options as v1_05")
    alone = A.audit([video("v1", [svqa, vvqa])])
    assert not [f for f in alone.flags if f.reason == "options_repeat"]  # the pair by design


def test_answer_written_in_the_question():
    leak = item("v1_01", "SVQA", "From 3 seconds to 5 seconds in the video, the foam team starts with a ball",
                ["the foam team starts with a ball", "narf", "a nerf", "finesse"], "A", (3.0, 5.0))
    report = A.audit([video("v1", [leak, LEAKY])])
    assert [f.question_id for f in report.flags if f.reason == "answer_in_question"] == ["v1_01"]


def test_bad_answer_letter():
    bad = item("v1_01", "GVQA", "q?", ["a", "b", "c", "d"], "E")
    assert [f.reason for f in A.audit([video("v1", [bad])]).flags] == ["bad_answer"]


# --------------------------------------------------------------------------------------------
# Windows and coverage
# --------------------------------------------------------------------------------------------


def test_windows():
    cases = {
        "ok": item("v1_01", "SVS", "What happens between 3 and 5 seconds in the video?", ["a", "b", "c", "d"], "A", (3.0, 5.0)),
        "outside": item("v1_02", "SVQA", "From 8.5 seconds to 14 seconds in the video, what?", ["a", "b", "c", "d"], "A", (8.5, 14.0)),
        "off": item("v1_03", "VVQA", "What does he do?", ["a", "b", "c", "d"], "A", (3.4, 5.0)),
        "text": item("v1_04", "SVS", "What happens between 5.5 and 8 seconds in the video?", ["a", "b", "c", "d"], "A", (3.0, 5.0)),
        "vtg": item("v1_05", "VTG", "When does the following happen in the video: he waves",
                    ["from 3 to 5 seconds", "from 0.5 to 2.5 seconds", "from 5.5 to 8 seconds", "from 8.5 to 11 seconds"],
                    "C", (3.0, 5.0)),
        "rounded": item("v1_06", "SVS", "What happens between 5.5 and 8 seconds in the video?", ["a", "b", "c", "d"], "A", (5.47, 8.04)),
        "no_window": item("v1_07", "GVQA", "What happens from 3 to 5 seconds?", ["a", "b", "c", "d"], "A"),
        "years": item("v1_08", "GVQA", "What changed from 2019 to 2020?", ["a", "b", "c", "d"], "A"),
        "grounding": {"question_id": "v1_09", "task": "VTG", "question": "When does he wave?", "options": [],
                      "answer": "from 3 to 5 seconds", "window": [5.5, 8.0], "descriptions": "he waves"},
    }
    subtitles = SUBTITLES + [(5.47, 8.04)]
    v = video("v1", list(cases.values()), duration=12.0, subtitles=subtitles)
    got = {name: sorted(f.reason for f in A.window_problems(q, v)) for name, q in cases.items()}
    assert got == {
        "ok": [],
        "outside": ["window_off_subtitles", "window_outside_video"],
        "off": ["window_off_subtitles"],
        "text": ["window_text_mismatch"],
        "vtg": ["window_text_mismatch"],  # the correct option (C) says 5.5-8, the window is 3-5
        "rounded": [],  # one decimal in the text, as questions write times
        "no_window": ["window_text_mismatch"],
        "years": [],  # no unit: not a window
        "grounding": ["window_text_mismatch"],  # no options: the answer text against the window
    }
    report = A.audit([v])
    assert report.overall.windows == 7
    assert (report.overall.window_outside_video, report.overall.window_off_subtitles) == (1, 2)
    assert report.overall.multiple_choice == 8  # the grounding item is not multiple choice
    assert report.tasks["VTG"].letters == {"A": 0, "B": 0, "C": 1, "D": 0}


def test_coverage_lists_videos_missing_a_task():
    full = [item(f"v1_0{k}", t, "q?", ["a", "b", "c", "d"], "A") for k, t in enumerate(A.LOMO_TASKS)]
    partial = [item("v2_01", "GVQA", "q?", ["a", "b", "c", "d"], "A"), item("v2_02", "GVQA", "q2?", ["e", "f", "g", "h"], "B")]
    cov = A.coverage([video("v1", full), video("v2", partial), video("v3", [])])
    assert cov["videos"] == 3 and cov["videos_without_items"] == ["v3"]
    assert cov["missing"]["VTG"] == ["v2", "v3"] and cov["missing"]["GVQA"] == ["v3"]
    assert cov["items_per_task_per_video"]["GVQA"] == {"0": 1, "1": 1, "2": 1}
    assert A.coverage([video("v2", partial)])["missing"] == {}
    assert A.coverage([video("v2", partial)], tasks=A.LOMO_TASKS)["missing"]["SVS"] == ["v2"]


# --------------------------------------------------------------------------------------------
# The command line on a published folder
# --------------------------------------------------------------------------------------------


def write_folder(folder: Path, rows: list[dict]) -> Path:
    features = F.merge(
        {"video_id": F.Value("string"), "video": F.Value("string"), "duration": F.Value("float64")},
        {"segments": F.SEGMENTS, "questions": F.QUESTIONS},
    )
    (folder / "data").mkdir(parents=True)
    Dataset.from_list(rows, features=features).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def folder_rows():
    segments = [{"start": s, "end": e, "text": f"{SUBTITLE_TEXT} {k}"} for k, (s, e) in enumerate(SUBTITLES)]
    wrong = item("v2_01", "SVS", "What happens between 3 and 5 seconds in the video?", ["a1", "b1", "c1", "d1"], "B", (6.0, 9.0))
    return [
        {"video_id": "v1", "video": "v1.mp4", "duration": 12.0, "segments": segments, "questions": [LEAKY, HARD, GOOD_WINDOW]},
        {"video_id": "v2", "video": "v2.mp4", "duration": 12.0, "segments": segments, "questions": [wrong]},
    ]


def cli(*args, check=True, **kwargs):
    res = subprocess.run([sys.executable, "-m", "lomo_datasets.cli", *args], capture_output=True, text=True, timeout=600, **kwargs)
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_cli_audit_writes_the_table_and_flags(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "bench", folder_rows())
    monkeypatch.setenv("READER_KEY", "sk-audit-secret-424242")
    with ChatServer(lexical_reader) as server:
        res = cli("audit", str(folder), "--llm", "backend=openai", "--llm", f"base_url={server.url}",
                  "--llm", "model=reader", "--llm", "api_key_env=READER_KEY", env={**os.environ})
    assert server.requests and all(r["auth"] == "Bearer sk-audit-secret-424242" for r in server.requests)
    assert "| **all** | 4 | 25% [5%, 70%] of 4 |" in res.stdout
    data = json.loads((folder / "audit.json").read_text())
    assert data["blind_model"] == "openai:reader"
    assert data["blind_answers"] == {"v1_01": "B", "v1_02": "", "v1_03": "", "v2_01": ""}  # "": no consistent pick
    # The key verifier asks the window items with their subtitle lines (no summary here: GVQA and
    # GVS are not asked); the reader finds no shared word, says "A" every time: no consistent pick,
    # and one vote per option, which says nothing against the key: not flagged by default.
    assert data["verifier_model"] == "openai:reader" and data["verified_answers"] == {"v1_03": "", "v2_01": ""}
    assert data["verify_rule"] == "against"
    flags = {(f["question_id"], f["reason"]) for f in data["flags"]}
    assert flags == {("v1_01", "blind_answerable"), ("v2_01", "window_off_subtitles"), ("v2_01", "window_text_mismatch")}
    assert "(rule `against`)" in (folder / "audit.md").read_text()
    assert len(server.requests) == 4 * 4 + 2 * 4
    evidence = [r["body"]["messages"][-1]["content"] for r in server.requests if "Evidence" in r["body"]["messages"][-1]["content"]]
    assert len(evidence) == 8
    # --verify-rule strict: every key the verifier did not pick in all rotations is flagged
    with ChatServer(lexical_reader) as server:
        strict = cli("audit", str(folder), "--verify-rule", "strict", "--llm", "backend=openai", "--llm", f"base_url={server.url}",
                     "--llm", "model=reader", "--llm", "api_key_env=READER_KEY", env={**os.environ})
    data = json.loads((folder / "audit.json").read_text())
    assert data["verify_rule"] == "strict" and "flagged items: 3" in strict.stdout
    assert {(f["question_id"], f["reason"]) for f in data["flags"]} == flags | {("v1_03", "unverified_key"), ("v2_01", "unverified_key")}
    for e in evidence:  # only the lines overlapping the item's window: 3-5 s is line 1; 6-9 s lines 2 and 3
        lines = set(re.findall(f"{SUBTITLE_TEXT} (\\d)", e))
        assert lines == ({"1"} if "he waves" in e else {"2", "3"})
    assert data["coverage"]["missing"] == {"GVQA": ["v2"], "GVS": ["v2"]}
    md = (folder / "audit.md").read_text()
    assert md.startswith("<!-- written by lomo-datasets audit -->") and "| `v2_01` | unverified_key (no consistent pick" in md
    assert "window_off_subtitles" in md.split("| `v2_01` |")[1].splitlines()[0]
    assert "Blind accuracy: the share" in md and "Verified keys: the share" in md
    assert "blind accuracy 25% [5%, 70%] of 4 (95% Wilson interval). Blind accuracy:" in res.stdout
    assert "verified keys 0% [0%, 66%] of 2 (95% Wilson interval). Verified keys:" in res.stdout
    assert "sk-audit-secret" not in md + json.dumps(data) + res.stdout + res.stderr
    # a rerun rewrites its own files; a file it did not write is never overwritten
    cli("audit", str(folder), "--no-blind")
    assert json.loads((folder / "audit.json").read_text())["blind_answers"] is None
    (folder / "audit.md").write_text("my notes\n")
    res = cli("audit", str(folder), "--no-blind", check=False)
    assert res.returncode == 2 and "audit.md exists and was not written by lomo-datasets" in res.stderr
    assert (folder / "audit.md").read_text() == "my notes\n"


def test_cli_audit_bad_input_is_one_line(tmp_path):
    res = cli("audit", str(tmp_path), "--no-blind", check=False)
    assert res.returncode == 2 and "no data/*.parquet" in res.stderr and "Traceback" not in res.stderr
    folder = write_folder(tmp_path / "bench", folder_rows())
    res = cli("audit", str(folder), "--llm", "modle=x", check=False)
    assert res.returncode == 2 and "unknown setting(s) modle" in res.stderr and len(res.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# The card of a QA dataset
# --------------------------------------------------------------------------------------------


def test_card_shows_the_audit_links_the_table_and_plots_blind_accuracy(tmp_path):
    from datasets import DatasetDict
    from PIL import Image

    from lomo_datasets.publish.layout import PUBLISHED_PATTERNS, write_folder as publish_folder

    rows = folder_rows()
    leaky = [item(f"v{i}_01", "GVQA", f"Which tool, a hammer number {i}, drives the nail?",
                  ["a spoon", "a hammer", "a towel", "a pillow"], "B") for i in range(3, 13)]
    rows += [{"video_id": q["question_id"][:-3], "video": "x.mp4", "duration": 12.0, "segments": [], "questions": [q]} for q in leaky]
    picks = {"v1_01": "B", "v1_02": "A", "v1_03": "", "v2_01": "A", **{q["question_id"]: "B" for q in leaky}}
    for row in rows:
        row["blind_answers"] = [{"question_id": q["question_id"], "answer": picks[q["question_id"]]} for q in row["questions"]]
    features = F.merge(
        {"video_id": F.Value("string"), "video": F.Value("string"), "duration": F.Value("float64")},
        {"segments": F.SEGMENTS, "questions": F.QUESTIONS, "blind_answers": F.BLIND_ANSWERS},
    )
    out = publish_folder(DatasetDict({"train": Dataset.from_list(rows, features=features)}), tmp_path / "bench")
    card = (out / "README.md").read_text()
    section = card.split("## Quality audit")[1].split("##")[0]
    assert "| GVQA | 11 | 100% [74%, 100%] of 11 ▲ |" in section  # 11 leaky GVQA items, all answered blind
    assert "| SVS | 2 | 0% [0%, 79%] of 1 |" in section  # v1_03 got no answer: not counted
    assert "[audit.md](audit.md)" in section and "12 of 14 questions are flagged by the audit (blind_answerable: 11," in section
    assert "- **blind accuracy 85% [58%, 96%] of 13** (95% Wilson interval). Blind accuracy: the share" in section
    assert "- Verified keys: not run. Verified keys: the share" in section  # no verified_answers column here
    md = (out / "audit.md").read_text()
    assert md.startswith("<!-- written by lomo-datasets audit -->") and "| `v2_01` | window_off_subtitles" in md
    assert "audit.md" in PUBLISHED_PATTERNS
    plot = Image.open(out / "stats.png")
    assert plot.size == (1200, 288)  # three panels: durations, questions per task, blind accuracy
    if os.environ.get("LOMO_TEST_SCREENSHOTS"):
        plot.save(Path(os.environ["LOMO_TEST_SCREENSHOTS"]) / "stats-audit.png")


def test_verify_rules_on_the_rotations_the_embedded_verifier_gave():
    """Rotations as bench_audit.py --planted recorded them (key in the item's own letters)."""
    cases = {  # rotations, key -> flagged under against / strict / refuted
        "wrong key, evidence points elsewhere": (["C", "C", "C", "C"], "D", (True, True, True)),
        "moved window, mostly elsewhere": (["A", "B", "A", "A"], "C", (True, True, False)),
        "letter habit: one vote each": (["A", "B", "C", "D"], "A", (False, True, False)),
        "key ahead, not unanimous": (["D", "B", "D", "D"], "D", (False, True, False)),
        "tie with another option": (["A", "B", "C", "C"], "C", (False, True, False)),
        "verified": (["B", "B", "B", "B"], "B", (False, False, False)),
        "a rotation without an answer: not measured": (["C", "", "C", "C"], "D", (False, False, False)),
    }
    for name, (rotations, key, want) in cases.items():
        picks = A.Picks({"q": A.circular_pick(rotations)}, {"q": rotations})
        got = tuple(A.key_unverified(picks, "q", key, rule) for rule in ("against", "strict", "refuted"))
        assert got == want, name
    assert A.VERIFY_RULE == "against" and set(A.VERIFY_RULES) == {"against", "strict", "refuted"}
    with pytest.raises(ValueError, match="verify rule 'lenient'"):
        A.audit([], verify_rule="lenient")
