"""Settings with bounds: every step's settings are checked for type and range when it is built.

``check_settings(step)`` runs for every stage and filter of the contract (their dataclass
fields are the settings). From each field's declared type:

- ``bool`` takes only true/false; ``int`` only whole numbers; ``float`` any finite number
  (``nan``/``inf`` are refused, also when YAML hands them over as the strings ``'nan'`` or
  ``'1e-3'``, which become numbers here); ``str`` only text; lists and tuples at most
  ``MAX_ITEMS`` items;
- numbers then meet the range declared on their field (``setting(default, low, high, what)``),
  else the range of their name (one table, ``RANGES``: tries, retries, timeouts,
  backoff, batch sizes, workers and threads, temperatures, probabilities and thresholds, counts
  of frames, beams, characters, seconds, pixels); any other number is at most ``MAX_NUMBER``.

A value that fails is named with a bounded rendering (``redact.shorten``), with the range to
use, in the ``error`` class the caller gives (the contract passes ``SettingError``; this module
imports nothing of the contract, which imports it). A stage's own ``validate()`` checks what
only it knows (choices, paths), never a range again.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from typing import Any

from lomo_datasets.core.redact import shorten

#: The most items a list or tuple setting may hold.
MAX_ITEMS = 10_000
#: The largest magnitude of a number whose name has no range of its own.
MAX_NUMBER = 1e9
#: The longest text setting (prompts, questions).
MAX_TEXT = 100_000


@dataclass(frozen=True)
class Range:
    pattern: str
    low: float
    high: float
    what: str
    low_open: bool = False  # low itself is not allowed (timeouts: above 0)

    def matches(self, name: str) -> bool:
        return re.search(self.pattern, name) is not None

    def holds(self, value: float) -> bool:
        return (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def describe(self) -> str:
        if self.low_open:
            return f"{self.what} above {self.low:g} and at most {self.high:g}"
        return f"{self.what} from {self.low:g} to {self.high:g}"


#: Ranges by setting name (the first match wins).
RANGES: tuple[Range, ...] = (
    Range(r"(^|_)tries$|^attempts$", 1, 50, "a whole number of tries"),
    Range(r"retries$", 0, 20, "a whole number of retries"),
    Range(r"timeout$", 0, 3600, "seconds", low_open=True),
    Range(r"backoff$", 0, 300, "seconds"),
    Range(r"batch_size$", 1, 4096, "rows per batch"),
    Range(r"^concurrency$|^num_workers$|^models_per_gpu$", 1, 256, "a whole number"),
    Range(r"threads$", 1, 1024, "a whole number of CPU threads per model (the output depends on it)"),
    Range(r"^temperature$", 0, 2, "a temperature"),
    Range(r"^top_p$|(^|_)prob$|probability$|^threshold$|_threshold$|^min_face_ratio$", 0, 1, "a share"),
    Range(r"^top_k$|^beam_size$|^num_frames$|^repetition$|^max_repetition$", 1, 1000, "a whole number"),
    Range(r"(_chars|_words|_tokens|_lines)$", 1, 10_000_000, "a count"),
    Range(r"(_sec|_seconds)$|^line_pause$|^pause$", 0, 86_400, "seconds"),
    Range(r"^(min_)?(width|height)$", 0, 16_384, "pixels"),
)


def setting(default: Any, low: float, high: float, what: str, low_open: bool = False) -> Any:
    """A dataclass field for a number setting whose range is declared on it (it takes the
    place of the name table's range), e.g. ``min_face_ratio: float = setting(0.2, 0, 1, "a share
    of the frame height", low_open=True)``; ``check_settings`` checks it with the others."""
    return dataclasses.field(default=default, metadata={"range": Range("", low, high, what, low_open)})


class _Bad(ValueError):
    """A setting outside its type or range (re-raised as the caller's error class)."""


def range_for(name: str) -> Range | None:
    return next((r for r in RANGES if r.matches(name)), None)


def check_settings(step: Any, prefix: str | None = None, ranges: bool = True, error: type[Exception] = ValueError) -> None:
    """Check (and normalise: numeric strings become numbers) every dataclass field of ``step``.

    ``ranges=False`` checks types and finiteness only: the contract does that before a stage's
    own ``validate()`` and the ranges after it, so a stage's narrower range speaks first."""
    prefix = prefix or getattr(step, "name", type(step).__name__)
    hints = _hints(type(step))
    for f in dataclasses.fields(step):
        if f.name == "name" and prefix == getattr(step, "name", None):
            continue
        value = getattr(step, f.name)
        try:
            checked = check_value(f"{prefix}.{f.name}", f.name, value, hints.get(f.name, Any), ranges=ranges,
                                  bound=f.metadata.get("range"))
        except _Bad as exc:
            raise error(str(exc)) from None
        if checked is not value:
            object.__setattr__(step, f.name, checked)


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: check ranges only
        return {}


def _kinds(hint: Any) -> tuple[set, bool]:
    """The base types a hint allows, and whether None is allowed."""
    if hint is Any or hint is None:
        return {Any}, True
    origin = typing.get_origin(hint)
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        kinds: set = set()
        optional = False
        for arg in typing.get_args(hint):
            if arg is type(None):
                optional = True
            else:
                sub, sub_optional = _kinds(arg)
                kinds |= sub
                optional |= sub_optional
        return kinds, optional
    if type(hint).__name__ == "UnionType":  # int | None in Python 3.10+
        return _kinds(typing.Union[typing.get_args(hint)])  # type: ignore[arg-type]
    base = origin or hint
    if base in (typing.Literal,):
        return {Any}, False
    if isinstance(base, type):
        if issubclass(base, (list, tuple, set, frozenset)) or base in (typing.Sequence,):
            return {list}, False
        return {base}, False
    if base in (typing.Sequence, typing.List, typing.Tuple):  # noqa: UP006
        return {list}, False
    return {Any}, False


def _kind_name(kinds: set, optional: bool) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text", list: "a list", dict: "a mapping"}
    parts = [names.get(k, getattr(k, "__name__", str(k))) for k in kinds]
    return " or ".join(sorted(parts)) + (" or null" if optional else "")


def check_value(where: str, name: str, value: Any, hint: Any = Any, ranges: bool = True, bound: Range | None = None) -> Any:
    """``value`` checked against ``hint`` and ``bound`` (the range declared on the field, else
    the table's range of ``name``); numeric strings for a number setting become numbers.
    Raises ``ValueError`` saying what to use."""
    kinds, optional = _kinds(hint)
    if value is None:
        if optional or Any in kinds:
            return value
        raise _Bad(f"{where} must be {_kind_name(kinds, optional)}, got null")
    if Any not in kinds:
        value = _check_type(where, value, kinds, optional)
    return _check_range(where, name, value, ranges, bound)


def _check_type(where: str, value: Any, kinds: set, optional: bool) -> Any:
    wanted = _kind_name(kinds, optional)
    if isinstance(value, bool):
        if bool in kinds:
            return value
        raise _Bad(f"{where} must be {wanted}, got {shorten(value)}")
    if isinstance(value, int) and (int in kinds or float in kinds):
        return value
    if isinstance(value, float) and float in kinds:
        return value
    if isinstance(value, float) and int in kinds:
        raise _Bad(f"{where} must be a whole number, got {shorten(value)}")
    if isinstance(value, str):
        if (float in kinds or int in kinds) and str not in kinds:
            number = _number_text(value)
            if number is None:
                raise _Bad(f"{where} must be {wanted}, got {shorten(value)}")
            if int in kinds and float not in kinds:
                if not (math.isfinite(number) and number.is_integer()):
                    raise _Bad(f"{where} must be a whole number, got {shorten(value)}")
                return int(number)
            return number
        if str in kinds:
            if len(value) > MAX_TEXT:
                raise _Bad(f"{where}: {len(value)} characters is too long (at most {MAX_TEXT})")
            return value
        raise _Bad(f"{where} must be {wanted}, got {shorten(value)}")
    if isinstance(value, (list, tuple)):
        if list in kinds:
            if len(value) > MAX_ITEMS:
                raise _Bad(f"{where}: {len(value)} items is too many (at most {MAX_ITEMS})")
            return value
        raise _Bad(f"{where} must be {wanted}, got {shorten(value)}")
    if isinstance(value, dict):
        if dict in kinds:
            if len(value) > MAX_ITEMS:
                raise _Bad(f"{where}: {len(value)} entries is too many (at most {MAX_ITEMS})")
            return value
        raise _Bad(f"{where} must be {wanted}, got {shorten(value)}")
    if any(isinstance(value, k) for k in kinds if isinstance(k, type)):
        return value
    raise _Bad(f"{where} must be {wanted}, got {shorten(value)}")


def _number_text(text: str) -> float | None:
    """``'1e-3'`` -> 0.001, ``'nan'`` -> nan; None for text that is not a number."""
    try:
        return float(text.strip())
    except ValueError:
        return None


def _check_range(where: str, name: str, value: Any, ranges: bool = True, bound: Range | None = None) -> Any:
    """Finite numbers always; with ``ranges`` also within ``bound`` (else the range of ``name``)."""
    numbers = value if isinstance(value, (list, tuple)) else [value]
    bound = bound or range_for(name)
    for number in numbers:
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            continue
        if not math.isfinite(number):
            raise _Bad(f"{where}={shorten(value)}: use a finite number" + (f" ({bound.describe()})" if bound else ""))
        if not ranges:
            continue
        if bound is not None and not bound.holds(number):
            raise _Bad(f"{where}={shorten(value)}: use {bound.describe()}")
        if bound is None and abs(number) > MAX_NUMBER:
            raise _Bad(f"{where}={shorten(value)}: use a number of at most {MAX_NUMBER:g} in size")
    return value


def did_you_mean(name: str, valid: list[str]) -> str:
    """`` (did you mean 'model'?)`` for a near miss, else ``""``."""
    import difflib

    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
