"""Recorded replies through the LLM layer (no model): the shapes the embedded 1.5B wrote when
whole videos failed at ``compress`` in ``bench_yield`` (issue 21), and what the layer does with
them now.

- four wrong answers for three (en_03, zh_09): the first three valid, distinct ones are kept;
- an unescaped double quote inside a string (zh_01) and a reply that stopped before its closing
  brace (en_09): repaired once, then validated and checked as any reply;
- a value over its length limit (en_07 ``answer``, zh_07 ``conclusion``): the retry's prompt names
  the field, its length and the limit, and the retry samples (a seed per try, so reruns repeat).

The texts are this file's own, in the recorded shapes.
"""

from __future__ import annotations

import re

import pytest

from lomo_datasets.llm.backends import Backend, LLMOutputError, LLMSettings, parse_output
from lomo_datasets.llm.backends.base import Completion, keep_first
from lomo_datasets.llm.json_shape import repair_json, with_feedback
from lomo_datasets.processors.compress import temporal_qa_task
from lomo_datasets.processors.grounding import distractor_request
from lomo_datasets.processors.llm_translate import translation_task
from lomo_datasets.processors.qa import _choice_task
from lomo_datasets.llm import prompts as P

LINE = "Then I scrub the wheels with a brush and rinse the car with the hose."
#: ``--embedded`` runs compress with text_max_chars=100: 100 for conclusion and question, 50 for
#: the answer and each wrong answer.
TASK = temporal_qa_task(LINE, 100)

CONCLUSION = '"conclusion": "The wheels are scrubbed with a brush before the car is rinsed."'
QUESTION = '"question": "What does the speaker scrub the wheels with?"'


def reply(answer: str = "A brush", wrong: str = '["A sponge", "A towel", "A bucket"]',
          conclusion: str = CONCLUSION, end: str = "}") -> str:
    return "{" + f'{conclusion}, {QUESTION}, "answer": "{answer}", "wrong": {wrong}' + end


# --------------------------------------------------------------------------------------------
# Over-supply: more wrong answers than wanted
# --------------------------------------------------------------------------------------------


def test_four_wrong_answers_for_three_keep_the_first_three():
    # en_03 / zh_09: "schema: wrong: 4 items, exactly 3 wanted" on every try.
    four = reply(wrong='["A sponge", "A towel", "A bucket", "A hose"]')
    assert parse_output(four, TASK)["wrong"] == ["A sponge", "A towel", "A bucket"]


def test_surplus_skips_the_answer_repeats_and_invalid_items_then_checks_the_rest():
    # The model listed all four options, the key first: the key is not kept as a wrong answer.
    listed = reply(wrong='["A brush.", "A sponge", "a sponge", "A towel", "A bucket"]')
    assert parse_output(listed, TASK)["wrong"] == ["A sponge", "A towel", "A bucket"]
    too_long = "A very long wrong answer that goes on and on past the limit"
    assert len(too_long) > 50
    assert parse_output(reply(wrong=f'["{too_long}", "A sponge", "A towel", "A bucket"]'), TASK)["wrong"] == [
        "A sponge", "A towel", "A bucket"]
    # Too few usable items: the first three are kept and the checks say what is wrong.
    with pytest.raises(ValueError, match="repeats"):
        parse_output(reply(wrong='["A sponge", "A sponge", "A towel", "A towel"]'), TASK)
    # The task's own check still runs on what is kept (a stop phrase of the lomo recipe).
    with pytest.raises(ValueError, match="mentions"):
        parse_output(reply(wrong='["The subtitle says sponge", "A towel", "A bucket", "A hose"]'), TASK)


def test_under_supply_stays_an_error_and_lists_that_must_line_up_are_never_cut():
    with pytest.raises(ValueError, match="2 items, exactly 3 wanted"):
        parse_output(reply(wrong='["A sponge", "A towel"]'), TASK)
    # Translated lines must match the source lines one to one: 12 for 11 is an error, as before.
    task = translation_task([f"第{k}句" for k in range(11)], "en", 120)
    assert task.surplus == ()
    lines = ", ".join(f'"line {k}"' for k in range(12))
    with pytest.raises(ValueError, match="12 items, exactly 11 wanted"):
        parse_output('{"lines": [' + lines + "]}", task)


def test_the_other_wrong_answer_lists_accept_a_surplus_too():
    qa = _choice_task("GVQA", P.GVQA, True, 50)
    obj = {"question": "What is washed?", "answer": "A car", "wrong": ["A bike", "A dog", "A boat", "A house"]}
    assert keep_first(obj, qa)["wrong"] == ["A bike", "A dog", "A boat"]
    _, repair = distractor_request("What does he scrub the wheels with?", "A stiff brush", 50)
    assert repair.surplus == ("wrong",)
    assert keep_first({"wrong": ["A soft towel", "A red bucket", "A wet sponge", "A long hose"]}, repair)["wrong"] == [
        "A soft towel", "A red bucket", "A wet sponge"]


# --------------------------------------------------------------------------------------------
# Repair: unescaped quotes, a missing closing brace
# --------------------------------------------------------------------------------------------


def test_unescaped_quotes_inside_a_string_are_repaired_then_validated():
    # zh_01: not JSON (Expecting ',' delimiter ..., near 'king about today being "going we')
    quoted = reply(conclusion='"conclusion": "The man is talking about today being "going well" with the car."')
    obj = parse_output(quoted, TASK)
    assert obj["conclusion"] == 'The man is talking about today being "going well" with the car.'
    # Quotes followed by a comma inside the text are text too.
    assert repair_json('{"answer": "A "soft", wet brush"}') == '{"answer": "A \\"soft\\", wet brush"}'
    # The repaired value is checked as any reply: over the limit is still refused.
    long = "The man is talking about today being \"going well\" " + "and more " * 8
    with pytest.raises(ValueError, match=r"conclusion: \d+ characters, at most 100 allowed"):
        parse_output(reply(conclusion=f'"conclusion": "{long}"'), TASK)


def test_a_reply_that_cannot_be_told_apart_is_not_repaired():
    # A quote that could end the string (followed by a comma and a value) is taken as its end:
    # the rest does not parse, so the original error comes back with its hint.
    with pytest.raises(ValueError) as info:
        parse_output('{"conclusion": "He says "no", "then" leaves", "question": "q", "answer": "a", "wrong": []}', TASK)
    assert "not JSON" in str(info.value) and 'written as \\"' in str(info.value)
    assert repair_json('{"a": "cut in the mid') is None  # ends inside a string
    assert repair_json('{"a": ["x", "y"]', close=False) is None  # open brackets: only for an ended reply
    assert repair_json('{"a": ["x",', close=True) is None  # ends after a comma: cut, not ended


def test_a_reply_that_stopped_before_its_closing_brace_is_closed_only_when_it_ended():
    # en_09: not JSON (Expecting ',' delimiter at 336, near 'l is not in the video."]')
    unclosed = reply(wrong='["A sponge", "A towel", "A bucket"]', end="")
    with pytest.raises(ValueError, match="not JSON"):
        parse_output(unclosed, TASK)  # not known to have ended (a cut reply is never repaired)
    assert parse_output(unclosed, TASK, ended=True)["wrong"] == ["A sponge", "A towel", "A bucket"]


# --------------------------------------------------------------------------------------------
# Retries: the next try differs (the violation and its limit in the prompt; sampled)
# --------------------------------------------------------------------------------------------


class Recorded(Backend):
    """Replies from a list per try; records each try's prompts and ``sample``. Not registered."""

    name = "test-recorded"
    feedback = True

    def __init__(self, replies: list[str], max_tries: int = 4):
        super().__init__(LLMSettings(max_tries=max_tries))
        self.replies = list(replies)
        self.prompts: list[str] = []
        self.samples: list[int] = []

    def generate(self, messages_list, task, sample=0):
        self.samples.append(sample)
        self.prompts.append(messages_list[0][-1]["content"])
        return [Completion(self.replies.pop(0), True)]


MESSAGES = [{"role": "user", "content": "Write the item."}]
LONG_ANSWER = "He scrubs the wheels with a stiff brush before rinsing"  # 54 characters


def test_a_length_violation_is_named_with_its_limit_in_the_next_try():
    # en_07: "schema: answer: 53 characters, at most 50 allowed" after 4 tries.
    backend = Recorded([reply(answer=LONG_ANSWER), reply()])
    [obj] = backend.generate_json([MESSAGES], TASK)
    assert obj["answer"] == "A brush"
    assert backend.samples == [0, 1]  # the first try is greedy, the retry samples (seeded per try)
    retry = backend.prompts[1]
    assert f"answer: {len(LONG_ANSWER)} characters, at most 50 allowed" in retry
    assert f'"answer" must be at most 50 characters, and yours had {len(LONG_ANSWER)}' in retry
    assert "at most 40 characters" in retry  # the template's figure (LENGTH_MARGIN)
    # The line's own length: zh_01 wrote 56 characters for a 35-character line, told only "50".
    assert f"the line itself has {len(LINE)} characters: an answer is a few of its words" in retry
    # zh_07: conclusion 123 characters for 100.
    backend = Recorded([reply(conclusion='"conclusion": "' + "x" * 123 + '"'), reply()])
    backend.generate_json([MESSAGES], TASK)
    assert '"conclusion" must be at most 100 characters, and yours had 123' in backend.prompts[1]


def test_the_final_error_keeps_the_last_reason_and_lists_the_earlier_ones():
    backend = Recorded([reply(answer=LONG_ANSWER), reply(wrong='["A sponge"]'), reply(answer=LONG_ANSWER),
                        reply(answer=LONG_ANSWER)])
    [error] = backend.generate_json([MESSAGES], TASK)
    assert isinstance(error, LLMOutputError)
    text = str(error)
    assert text.startswith(f"temporal_qa: no valid output after 4 tries (schema: answer: {len(LONG_ANSWER)} characters, at most 50 allowed)")
    assert "earlier tries: schema: wrong: 1 items, exactly 3 wanted" in text
    assert "1 items, exactly 3 wanted" in backend.prompts[2] and backend.samples == [0, 1, 2, 3]


def test_recorded_failure_shapes_now_pass_in_one_try():
    shapes = [
        reply(wrong='["A sponge", "A towel", "A bucket", "A hose"]'),  # en_03, zh_09
        reply(conclusion='"conclusion": "The man is talking about today being "going well" with the car."'),  # zh_01
        reply(wrong='["A sponge", "A towel", "The bucket is not in the video."]', end=""),  # en_09
    ]
    for shape in shapes:
        backend = Recorded([shape])
        [obj] = backend.generate_json([MESSAGES], TASK)
        assert isinstance(obj, dict) and len(obj["wrong"]) == 3 and backend.samples == [0]


def test_feedback_without_advice_reads_as_before():
    note = with_feedback(MESSAGES, "temporal: empty question")[-1]["content"]
    assert note.endswith("A previous reply was refused (temporal: empty question). Write a new reply that avoids this.")
    note = with_feedback(MESSAGES, "schema: answer: 53 characters, at most 50 allowed", '"answer" must be short')[-1]["content"]
    assert note.endswith('(schema: answer: 53 characters, at most 50 allowed). "answer" must be short.')


def test_a_copied_template_placeholder_is_refused():
    # zh_07 (translate): line 2 came back as "<text, at most 409 characters>", the template's words.
    from lomo_datasets.processors.llm_translate import translation_task

    task = translation_task(["美，今天他是说话。", "来，是说话。"], "en", 512)
    with pytest.raises(ValueError, match="lines/1 is the template's placeholder"):
        parse_output('{"lines": ["The United States is speaking today.", "<text, at most 409 characters>"]}', task)
    with pytest.raises(ValueError, match="answer is the template's placeholder"):
        parse_output(reply(answer="<text>"), TASK)
    assert parse_output('{"lines": ["He says <hello> to us.", "Come, speak."]}', task)["lines"][0] == "He says <hello> to us."


def test_a_translation_that_is_the_models_note_is_refused():
    # zh_07_human (bench_yield, a Whisper loop "鸡 鸡 鸡"): three of six lines came back as notes,
    # and the row went on with them as subtitles (its items said "Chinese input").
    from lomo_datasets.processors.llm_translate import translation_task

    task = translation_task(["鸡 鸡 鸡", "鸡 鸡"], "en", 512)

    def lines(second: str) -> str:
        return '{"lines": ["Chicken, chicken, chicken", "%s"]}' % second

    for note, why in [
        ("<The chicken is still waiting for the reply.>", "line 2 is written in <...>"),
        ("<A previous reply was refused. I will not repeat it.>", "line 2 is written in <...>"),
        ("A previous reply was refused (lines/0 is the template's placeholder, not a value)", "line 2 says 'previous reply'"),
        ("I am unable to respond to your previous request due to the errors in the Chinese input.", "line 2 says 'previous request'"),
        ("Please write a new reply that avoids this, thank you", "line 2 repeats the instructions"),
    ]:
        with pytest.raises(ValueError, match=re.escape(why)):
            parse_output(lines(note), task)
    # What a speaker says stays: sorry, cannot, a request, angle brackets inside a line.
    for said in ["I'm sorry, I cannot eat chicken.", "As you requested, chicken", "He says <hello> to the chicken"]:
        assert parse_output(lines(said), task)["lines"][1] == said
