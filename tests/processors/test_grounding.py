"""Grounded window items (issue 21 item 1) and bias repair (item 8): the lexical test, the
window line never a distractor, the LLM check with the line as the only evidence (the embedded
Qwen2.5-Coder-1.5B), and distractors of comparable length."""

from __future__ import annotations

import pytest

from lomo_datasets.processors import grounding as G
from lomo_datasets.processors.qa import build_items
from tests.processors.test_compress import segments
from tests.processors.test_qa import answers, temporal

# issue 21: cooking_zh_04's SVQA asked about the 3.59-5.35 s line, keyed an answer from the
# 5.89-7.83 s line and offered the window's own line as a distractor.
WINDOW_LINE = "Put the press box on the table."
NEXT_LINE = "Then pour the tomato sauce into the pan."


def test_lexical_test_refuses_an_answer_from_another_line_and_the_line_as_a_distractor():
    grounded = {"conclusion": "The press box is put on the table", "question": "Where is the press box put?",
                "answer": "On the table", "wrong": ["In the sink", "Under the bed", "On the stove"]}
    assert G.lexical_problem(grounded, WINDOW_LINE) is None
    other_line = {**grounded, "question": "What is poured into the pan?", "answer": "Tomato sauce"}
    assert "not what the line says" in G.lexical_problem(other_line, WINDOW_LINE)
    line_as_distractor = {**grounded, "answer": "On the table", "wrong": ["Put the press box on the table", "In the sink", "On the stove"]}
    assert "the line itself" in G.lexical_problem(line_as_distractor, WINDOW_LINE)
    assert "no content word" in G.lexical_problem({**grounded, "answer": "Yes"}, WINDOW_LINE)
    assert "conclusion" in G.lexical_problem({**grounded, "conclusion": "Sauce is poured"}, WINDOW_LINE)
    # numbers as words or digits, plurals: "Ten minutes" is what "for 10 minute" says
    assert G.support("Ten minutes", "Knead the dough for 10 minute.") == 1.0


def test_lexical_test_refuses_wrong_answers_the_line_also_says_or_the_prompts_kinds():
    """Items the embedded 1.5B wrote in bench_yield (issue 21), with right keys and distractors
    that are no wrong answers."""
    bucket = "I fill a bucket with warm soapy water."  # en_07
    item = {"conclusion": "Warm soapy water fills a bucket", "question": "What is in the bucket?",
            "answer": "warm soapy water", "wrong": ["water", "bucket", "soapy"]}
    assert "'water' is also what the line says" in G.lexical_problem(item, bucket)
    assert G.lexical_problem({**item, "wrong": ["cold milk", "hot tea", "orange juice"]}, bucket) is None
    kettle = "I fill the candle with fresh water and switch it on."  # en_08: "The water" beside the key "The candle"
    lit = {"conclusion": "The candle is switched on", "question": "What is switched on?", "answer": "The candle",
           "wrong": ["The light", "The fire", "The water"]}
    assert "'The water' is also what the line says" in G.lexical_problem(lit, kettle)
    key = "When we finish, it will be the key."  # zh_01_human: the prompt's words as the wrong answers
    kinds = {"conclusion": "The key is mentioned", "question": "What will it be?", "answer": "The key",
             "wrong": ["Another object", "Place", "Number or action"]}
    assert "names a kind of answer" in G.lexical_problem(kinds, key)
    # zh_01_human's next line: "Other team" says only the line's word "team"; the retry is told so.
    team = {"conclusion": "The team is introduced", "question": "Which team are we?", "answer": "Convention Security Team",
            "wrong": ["Other team", "Fire brigade", "Kitchen staff"]}
    problem = G.lexical_problem(team, "Today is going well, we are the Convention Security Team.")
    assert "'Other team' is also what the line says (team: all in the line)" in problem
    assert "with a word the line does not say" in problem
    # zh_03_human: the question gives the key away (the audit's answer_in_question)
    society = {"conclusion": "We go to the society", "question": "Where does the text refer to a Western five-day society?",
               "answer": "Western Five Day Society", "wrong": ["Gymnasium", "Church", "Library"]}
    problem = G.lexical_problem(society, "We go to the Western Five Day Society.")
    assert "the question already says the answer 'Western Five Day Society'" in problem
    assert G.lexical_problem({**society, "question": "Where do we go?"}, "We go to the Western Five Day Society.") is None
    # a wrong answer that shares a word with the line but says something else stays
    minutes = {"conclusion": "The dough is kneaded", "question": "How long is the dough kneaded?", "answer": "10 minutes",
               "wrong": ["15 minutes", "20 minutes", "5 minutes"]}
    assert G.lexical_problem(minutes, "Knead the dough for 10 minutes until it is smooth.") is None


def test_build_items_never_offers_the_window_line_as_an_svqa_distractor():
    t = temporal()
    bad = {**t, "wrong": [t["subtitle"], "Salt", "Potatoes"]}
    with pytest.raises(ValueError, match="window's own line"):
        build_items("v", bad, list(enumerate(segments())), {"question": "q?", "answer": "a", "wrong": ["b", "c", "d"]},
                    {"answer": "a", "wrong": ["b", "c", "d"]})
    items = {q["task"]: q for q in answers("vid")}
    for task in ("SVQA", "VVQA"):
        key = dict(o.split(": ", 1) for o in items[task]["options"])[items[task]["answer"]]
        others = [o.split(": ", 1)[1] for o in items[task]["options"] if not o.startswith(items[task]["answer"])]
        assert key == t["answer"] and not any(G.is_the_line(o, t["subtitle"]) for o in others)


def test_key_positions_differ_so_a_letter_habit_cannot_pass():
    for seed in range(4):
        assert len(set(G.key_positions(seed, 2))) == 2 and len(set(G.key_positions(seed, 4))) == 4
    assert G.options_with_key_at("key", ["a", "b", "c"], 2) == ["a", "b", "key", "c"]


def test_distractor_repair_task_refuses_short_or_repeated_distractors():
    answer = "A bowl of warm soapy water"
    assert G.key_is_longest(answer, ["Soap", "Sand", "Oil"])
    _, task = G.distractor_request("What is in the bucket?", answer, 60, line="I fill a bucket with warm soapy water.")
    low = task.schema["properties"]["wrong"]["items"]["minLength"]
    assert low > len(answer) / 1.3
    task.check({"wrong": ["A bucket of cold salty water", "A jug of fresh orange juice", "A pot of hot chicken soup"]})
    with pytest.raises(ValueError, match="repeats"):
        task.check({"wrong": [answer, "A jug of fresh orange juice", "A pot of hot chicken soup"]})
    with pytest.raises(ValueError, match="line itself"):
        task.check({"wrong": ["I fill a bucket with warm soapy water", "A jug of fresh orange juice", "A pot of hot chicken soup"]})


def test_svs_distractors_of_comparable_length_when_the_draw_makes_the_key_longest():
    lines = ["Cut.", "Stir.", "Boil it.", "Now we slowly add the fresh tomatoes and the basil to the big pot.",
             "Pour the warm water into the bowl and wait for a while.", "Serve the pasta on a big white plate today."]
    segs = [{"start": 0.5 + 3 * i, "end": 3.0 + 3 * i, "text": t} for i, t in enumerate(lines)]
    t = {"index": 3, "subtitle": lines[3], "start": segs[3]["start"], "end": segs[3]["end"], "conclusion": "Tomatoes are added",
         "question": "What is added to the pot?", "answer": "Fresh tomatoes and basil", "wrong": ["Rice", "Salt", "Sugar"]}
    for vid in ("a", "b", "c", "d", "e"):
        notes = {}
        items = build_items(vid, t, list(enumerate(segs)), {"question": "q?", "answer": "a", "wrong": ["b", "c", "d"]},
                            {"answer": "a", "wrong": ["b", "c", "d"]}, notes=notes)
        svs = next(q for q in items if q["task"] == "SVS")
        key = dict(o.split(": ", 1) for o in svs["options"])[svs["answer"]]
        others = [o.split(": ", 1)[1] for o in svs["options"] if not o.startswith(svs["answer"])]
        assert key == lines[3] and not G.key_is_longest(key, others)
        assert set(others) <= set(lines) - {lines[3]}
        if notes["svs_longest_before"]:  # the draw had the short lines: replaced by the long ones
            assert set(others) == set(lines[4:6]) | {lines[2]}


QWEN = "embedded:qwen2.5-coder-1.5b"


@pytest.mark.slow
def test_llm_check_with_the_line_as_only_evidence_refuses_an_answer_from_another_line():
    """The embedded 1.5B (what --embedded uses) on CTranslate2: the item keyed from the next
    line is refused (the check picks another option), the grounded one passes."""
    from lomo_datasets.processors.compress import Compress

    stage = Compress(model=QWEN, backend="ctranslate2", max_tries=2, cpu_threads=2)
    seg = {"start": 3.59, "end": 5.35, "text": WINDOW_LINE}
    grounded = {"question": "Where is the press box put?", "answer": "On the table",
                "wrong": ["In the sink", "Under the bed", "On the stove"]}
    ungrounded = {"question": "What is poured into the pan?", "answer": "Tomato sauce",
                  "wrong": ["Olive oil", "Cold water", "Fresh milk"]}
    problems = stage.check_grounding([("cooking_zh_04", seg, grounded), ("cooking_zh_04", seg, ungrounded)])
    assert problems[0] is None
    assert problems[1] is not None and "does not support the answer 'Tomato sauce'" in problems[1]


def test_lexical_test_refuses_the_whole_line_as_answer_and_wrong_answers_that_contain_the_key():
    # Both written by the embedded 1.5B for bench_yield's lines before these checks.
    line = "Pull the tube out and find the hole with some water."
    whole = {"conclusion": "Finding a hole in a tube", "question": "How do you find the hole?",
             "answer": "Pull the tube out and find the hole with some water", "wrong": ["With a spoon", "With a hammer", "With a saw"]}
    assert "whole line" in G.lexical_problem(whole, line)
    line = "Later we went swimming in the calm blue sea."
    contains = {"conclusion": "We went swimming", "question": "What did we do later?", "answer": "swimming",
                "wrong": ["swimming in the sea", "playing football", "reading books"]}
    assert "contains the correct answer" in G.lexical_problem(contains, line)
    assert G.lexical_problem({**contains, "wrong": ["Playing football", "Reading books", "Eating lunch"]}, line) is None


def test_a_check_pick_the_line_supports_less_than_the_key_is_overruled():
    """The embedded 1.5B's check picks seen in bench_yield (given the line only): each refused a
    key that the line's own words support more, and cost the video. They are overruled; a pick
    the line supports as much as the key still refuses it."""
    assert G.pick_overruled("15 minutes", "10 minutes", "Knead the dough for 10 minutes until it is smooth.")
    assert G.pick_overruled("Saw fruits", "Scolding the fruits", "I went to the market to scold the fruits.")
    assert G.pick_overruled("The man is shouting.", "The man is shouting loudly.", "I shouted loudly.")
    line = "Later we went swimming in the calm blue sea."
    assert not G.pick_overruled("Swimming in the sea", "Swimming", line)  # the line says both: the check stands
    assert not G.pick_overruled("On the table", "Tomato sauce", line)  # neither: the check stands


def test_check_grounding_keeps_an_item_whose_pick_is_overruled():
    from lomo_datasets.processors.compress import Compress

    class Picks:
        """Answers every grounding request with the option that says "15 minutes"."""

        def generate_json(self, messages, tasks):
            out = []
            for m in messages:
                text = "\n".join(part["content"] for part in m)
                shown = [line for line in text.splitlines() if line[:3] in ("A: ", "B: ", "C: ", "D: ")]
                out.append({"answer": next(line[0] for line in shown if line[3:] == "15 minutes")})
            return out

    class Checked(Compress):
        llm = property(lambda self: Picks())  # no model: the check's picks are given

    stage = Checked(model="embedded:smollm2-135m")
    seg = {"start": 3.0, "end": 6.0, "text": "Knead the dough for 10 minutes until it is smooth."}
    item = {"question": "How long is the dough kneaded?", "answer": "10 minutes", "wrong": ["15 minutes", "2 hours", "1 minute"]}
    assert stage.check_grounding([("en_00", seg, item)]) == [None]
    wrong_key = {**item, "answer": "2 hours", "wrong": ["15 minutes", "10 minutes", "1 minute"]}
    assert "the check picked '15 minutes'" in stage.check_grounding([("en_00", seg, wrong_key)])[0]
