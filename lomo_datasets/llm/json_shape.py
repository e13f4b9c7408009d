"""What a JSON reply must look like, in words a small model follows: for backends without a
grammar (CTranslate2), the task's schema is shown as a filled-in template instead of being
enforced, and a retry tells the model what was wrong with its last reply.

``shape(schema)`` renders the subset of JSON schema the tasks use as a template::

    {"answer": "<text, at most 48 characters>", "wrong": ["<text, at most 48 characters>", ...3 items]}

(a ``maxLength`` of 60 is shown as 48: see ``LENGTH_MARGIN``).

``with_shape(messages, schema)`` appends it to the first user message; ``with_feedback(messages,
error)`` adds why the last reply was refused, for the retry.
"""

from __future__ import annotations

import json
from typing import Any

Messages = list[dict[str, str]]

#: Arrays with at most this many fixed items are written out item by item.
_SPELL_OUT = 6
#: The template asks for this share of a string's ``maxLength``: small models overshoot a
#: character limit they are given by a few percent (the 1.5B wrote 103 characters for "at most
#: 100"), so the enforced limit keeps a margin. The check itself is unchanged.
LENGTH_MARGIN = 0.8


def shape(schema: dict[str, Any]) -> str:
    """A JSON template of ``schema`` with ``<...>`` placeholders that say what goes where."""
    kind = schema.get("type")
    if "enum" in schema:
        return " or ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    if kind == "object":
        props = schema.get("properties") or {}
        order = list(schema.get("required") or []) + [k for k in props if k not in (schema.get("required") or [])]
        body = ", ".join(f"{json.dumps(k)}: {shape(props.get(k, {}))}" for k in order)
        return "{" + body + "}"
    if kind == "array":
        item = shape(schema.get("items") or {})
        low, high = schema.get("minItems"), schema.get("maxItems")
        if low is not None and low == high:
            if low <= _SPELL_OUT:
                return "[" + ", ".join([item] * low) + "]"
            return f"[{item}, ... exactly {low} items]"
        if high is not None:
            return f"[{item}, ... {low or 0} to {high} items]"
        return f"[{item}, ...]"
    if kind == "string":
        low, high = schema.get("minLength"), schema.get("maxLength")
        if high is not None:
            return f'"<text, at most {max(low or 1, int(high * LENGTH_MARGIN))} characters>"'
        if low:
            return '"<text>"'
        return '"<text or empty>"'
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        word = "whole number" if kind == "integer" else "number"
        if low is not None and high is not None:
            return f"<{word} from {low} to {high}>"
        return f"<{word}>"
    if kind == "boolean":
        return "true or false"
    return "<value>"


def with_shape(messages: Messages, schema: dict[str, Any]) -> Messages:
    """``messages`` with the reply template appended to the first user message (the task's
    statement; retry feedback comes after it)."""
    note = "\n\nReply with this JSON object only, filled in:\n" + shape(schema)
    out = [dict(m) for m in messages]
    for m in out:
        if m.get("role") == "user":
            m["content"] = m["content"] + note
            return out
    out.append({"role": "user", "content": note.strip()})
    return out


def with_feedback(messages: Messages, error: str) -> Messages:
    """``messages`` with a note, after the first user message's text, saying why the last reply
    was refused. The refused reply itself is not shown: small models tend to repeat it."""
    note = f"\n\nA previous reply was refused ({error}). Write a new reply that avoids this."
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m.get("role") == "user":
            m["content"] = m["content"] + note
            return out
    out.append({"role": "user", "content": note.strip()})
    return out
