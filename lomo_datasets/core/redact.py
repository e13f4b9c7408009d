"""Keep secrets (Hub tokens, cookies, API keys) out of logs, cards, rows and error messages."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

#: Environment variables whose values are secrets wherever they appear.
_SECRET_NAME = re.compile(r"(TOKEN|SESSDATA|COOKIE|SECRET|PASSWORD|API_KEY|APIKEY)", re.I)
#: Tokens that look like secrets even when they did not come from the environment.
_SECRET_SHAPES = [
    re.compile(r"hf_[A-Za-z0-9]{20,}"),
    re.compile(r"(?i)(SESSDATA=)[^;\s&]+"),
    re.compile(r"(?i)(Authorization:\s*Bearer\s+)\S+"),
]
MASK = "***"
#: The longest rendering of one value inside a message.
MAX_VALUE = 80
#: Credentials inside URLs: ``scheme://user:password@host`` and secret-looking query
#: parameters (``?token=``, ``access_token``, ``api_key``, ``sig``, ``X-Amz-Signature`` ...).
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#\s@]+@")
_URL_SECRET_PARAM = re.compile(
    r"(?i)([?&;][\w.\-]*?(?:token|key|secret|passw(?:or)?d|pwd|sig|signature|auth|credential|session|sessdata)"
    r"[\w.\-]*=)[^&#\s\"']+"
)
#: Secrets met at run time (cookie values read from a cookies file).
_KNOWN: set[str] = set()


def add_secret(value: str) -> None:
    """Mask ``value`` wherever it appears from now on (values under 6 characters are ignored)."""
    if isinstance(value, str) and len(value) >= 6:
        _KNOWN.add(value)


def secret_values() -> list[str]:
    """Values of secret-looking environment variables and of ``add_secret`` (at least 6 characters)."""
    return sorted(
        {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and v and len(v) >= 6} | _KNOWN,
        key=len,
        reverse=True,
    )


def mask_url_credentials(text: str) -> str:
    """``text`` with the credentials of the URLs in it masked, the rest unchanged:
    ``https://u:p@host/v.mp4?token=abc&x=1`` -> ``https://***@host/v.mp4?token=***&x=1``."""
    if not text or "://" not in text and "=" not in text:
        return text
    text = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    return _URL_SECRET_PARAM.sub(lambda m: m.group(1) + MASK, text)


def redact(text: str) -> str:
    """``text`` with every known secret replaced by ``***``."""
    if not text:
        return text
    for value in secret_values():
        text = text.replace(value, MASK)
    for shape in _SECRET_SHAPES:
        text = shape.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return mask_url_credentials(text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in records; applications may attach it to handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


def shorten(value: Any, limit: int = MAX_VALUE) -> str:
    """``repr(value)`` cut to ``limit`` characters, without ever building a huge repr:
    containers are rendered element by element until the limit is reached."""
    text = _bounded_repr(value, limit + 1)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded_repr(value: Any, limit: int, depth: int = 0) -> str:
    if isinstance(value, str):
        return repr(value[:limit])
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value[:limit]))
    if depth > 3:
        return "..."
    if isinstance(value, dict):
        pairs = (f"{_bounded_repr(k, limit, depth + 1)}: {_bounded_repr(v, limit, depth + 1)}" for k, v in value.items())
        return "{" + _join(pairs, limit) + "}"
    if isinstance(value, (list, tuple, set, frozenset)):
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")") if isinstance(value, tuple) else ("{", "}")
        return opening + _join((_bounded_repr(v, limit, depth + 1) for v in value), limit) + closing
    text = repr(value)
    return text[:limit]


def _join(parts, limit: int) -> str:
    out: list[str] = []
    size = 0
    for part in parts:
        out.append(part)
        size += len(part) + 2
        if size > limit:
            out.append("...")
            break
    return ", ".join(out)
