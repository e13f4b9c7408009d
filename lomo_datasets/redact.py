"""Keep secrets (Hub tokens, cookies, API keys) out of logs, cards, rows and error messages."""

from __future__ import annotations

import logging
import os
import re

#: Environment variables whose values are secrets wherever they appear.
_SECRET_NAME = re.compile(r"(TOKEN|SESSDATA|COOKIE|SECRET|PASSWORD|API_KEY|APIKEY)", re.I)
#: Tokens that look like secrets even when they did not come from the environment.
_SECRET_SHAPES = [
    re.compile(r"hf_[A-Za-z0-9]{20,}"),
    re.compile(r"(?i)(SESSDATA=)[^;\s&]+"),
    re.compile(r"(?i)(Authorization:\s*Bearer\s+)\S+"),
]
MASK = "***"


def secret_values() -> list[str]:
    """Values of secret-looking environment variables (at least 6 characters long)."""
    return sorted(
        {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and v and len(v) >= 6},
        key=len,
        reverse=True,
    )


def redact(text: str) -> str:
    """``text`` with every known secret replaced by ``***``."""
    if not text:
        return text
    for value in secret_values():
        text = text.replace(value, MASK)
    for shape in _SECRET_SHAPES:
        text = shape.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in records; applications may attach it to handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True
