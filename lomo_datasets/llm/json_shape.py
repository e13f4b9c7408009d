"""What a JSON reply must look like, in words a small model follows: for backends without a
grammar (CTranslate2), the task's schema is shown as a filled-in template instead of being
enforced, and a retry tells the model what was wrong with its last reply.

``shape(schema)`` renders the subset of JSON schema the tasks use as a template::

    {"answer": "<text, at most 48 characters>", "wrong": ["<text, at most 48 characters>", ...3 items]}

(a ``maxLength`` of 60 is shown as 48: see ``LENGTH_MARGIN``).

``with_shape(messages, schema)`` appends it to the first user message; ``with_feedback(messages,
error, advice)`` adds why the last reply was refused and what to do instead, for the retry.
``repair_json(text)`` is the one repair tried on a reply that is not JSON.
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


def with_feedback(messages: Messages, error: str, advice: str = "") -> Messages:
    """``messages`` with a note, after the last user message's text, saying why the last reply
    was refused and, with ``advice``, what to do instead (the field and its limit). The refused
    reply itself is not shown: small models tend to repeat it."""
    note = f"\n\nA previous reply was refused ({error})."
    note += f" {advice[0].upper()}{advice[1:]}." if advice else " Write a new reply that avoids this."
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m.get("role") == "user":
            m["content"] = m["content"] + note
            return out
    out.append({"role": "user", "content": note.strip()})
    return out


#: After a string's closing quote: what may follow in JSON (a key's colon, the next member or
#: item, the container's end).
_AFTER_STRING = ",:}]"
#: After ``",`` the next value or key starts with one of these (or true/false/null).
_VALUE_START = '"{[-0123456789'


def _closes_string(text: str, i: int, stack: list[str]) -> bool:
    """Whether the double quote at ``text[i]``, inside a string, ends it: what follows is
    structure that fits (``,`` then a value or key, ``:`` in an object, the bracket that closes
    the open container, or the end of the text)."""
    j = i + 1
    while j < len(text) and text[j] in " \t\r\n":
        j += 1
    if j == len(text):
        return True
    c = text[j]
    if c not in _AFTER_STRING:
        return False
    if c == ":":
        return bool(stack) and stack[-1] == "{"
    if c in "}]":
        return bool(stack) and stack[-1] == {"}": "{", "]": "["}[c]
    k = j + 1
    while k < len(text) and text[k] in " \t\r\n":
        k += 1
    rest = text[k:]
    return bool(rest) and (rest[0] in _VALUE_START or rest.startswith(("true", "false", "null")))


def repair_json(text: str, close: bool = False) -> str | None:
    """A conservative repair of a reply that is not JSON, or None when it cannot tell how.

    - A double quote inside a string that is not followed by JSON structure (``"he said "go" now"``)
      is escaped: only a quote followed by ``,`` + a value, ``:`` (in an object), the bracket that
      closes the open container, or the end of the text ends a string.
    - With ``close`` (the model ended the reply itself), brackets left open at the end are closed
      (``{"wrong": ["a", "b"]`` gets its ``}``); a reply that ends inside a string is not repaired.

    The caller parses the result and validates it as any reply (``backends.base.parse_output``)."""
    out: list[str] = []
    stack: list[str] = []
    in_string = False
    i = 0
    while i < len(text):
        c = text[i]
        if in_string:
            if c == "\\":
                out.append(text[i:i + 2])
                i += 2
                continue
            if c == '"':
                if _closes_string(text, i, stack):
                    in_string = False
                    out.append(c)
                else:
                    out.append('\\"')
            elif c == "\n":
                out.append("\\n")
            else:
                out.append(c)
        else:
            if c == '"':
                in_string = True
            elif c in "{[":
                stack.append(c)
            elif c in "}]":
                if not stack or stack[-1] != {"}": "{", "]": "["}[c]:
                    return None
                stack.pop()
            out.append(c)
        i += 1
    if in_string:
        return None
    if stack:
        if not close:
            return None
        tail = "".join(out).rstrip()
        if tail.endswith((",", ":")):
            return None
        out = [tail] + ["}" if b == "{" else "]" for b in reversed(stack)]
    return "".join(out)
