"""The reply templates and retry feedback that schema-less backends (CTranslate2) put in prompts."""

from __future__ import annotations

from lomo_datasets.llm.json_shape import shape, with_feedback, with_shape
from lomo_datasets.processors.compress import temporal_qa_task, temporal_task
from lomo_datasets.processors.commentary import SCHEMA as COMMENTARY


def test_shape_spells_out_fields_limits_and_enums():
    # The pick and the item are two requests since issue 21 (the item sees the picked line only).
    assert shape(temporal_task([0, 2, 5]).schema) == '{"index": 0 or 2 or 5}'
    task = temporal_qa_task("Add the pasta to the pot.", max_chars=100)
    text = shape(task.schema)
    assert text.startswith('{"conclusion": "<text, at most 80 characters>"')
    assert '"wrong": ["<text, at most 40 characters>", "<text, at most 40 characters>", "<text, at most 40 characters>"]' in text
    assert shape(COMMENTARY) == '{"result": "YES" or "NO", "query": "<text, at most 240 characters>"}'
    many = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 9, "maxItems": 9}
    assert shape(many) == '["<text>", ... exactly 9 items]'


def test_template_goes_to_the_first_user_message_and_feedback_follows():
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Summarize."}]
    schema = {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 80}}, "required": ["summary"]}
    shaped = with_shape(messages, schema)
    assert messages[1]["content"] == "Summarize."  # not modified in place
    assert shaped[1]["content"].endswith('filled in:\n{"summary": "<text, at most 64 characters>"}')
    retry = with_feedback(shaped, "summary: 0 characters, at least 10 allowed")
    assert [m["role"] for m in retry] == ["system", "user"]
    assert retry[1]["content"].startswith(shaped[1]["content"]) and "at least 10 allowed" in retry[1]["content"]
    assert shaped[1]["content"] != retry[1]["content"]  # not modified in place
