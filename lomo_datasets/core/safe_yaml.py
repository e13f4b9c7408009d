"""YAML for settings (``--config`` files, ``--set`` values): plain data only.

``load`` is ``yaml.safe_load`` that also refuses anchors, aliases and tags (``!!python/...``,
``!!binary``, ``!custom``): settings never need them, an alias bomb cannot expand, and a
config file cannot ask for an object. Errors are ``SettingError`` lines that name the source
and the position, never the offending text.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent

from lomo_datasets.core.stage import SettingError

#: Settings are short: a config file or a value longer than this is refused before parsing.
MAX_CHARS = 1_000_000


class PlainLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses aliases, anchors and explicit tags."""

    def compose_node(self, parent, index):  # type: ignore[override]
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            raise _Refused("an alias (*name)", event)
        if isinstance(event, (ScalarEvent, CollectionStartEvent)):
            if event.anchor is not None:
                raise _Refused("an anchor (&name)", event)
            if event.tag is not None and not (isinstance(event, ScalarEvent) and event.tag == "!"):
                raise _Refused("a tag (!...)", event)
        return super().compose_node(parent, index)


class _Refused(yaml.YAMLError):
    def __init__(self, what: str, event) -> None:
        mark = event.start_mark
        super().__init__(f"{what} at line {mark.line + 1}, column {mark.column + 1}")


def load(text: str, source: str) -> Any:
    """The plain data in YAML ``text``; ``source`` names it in errors ("--config x.yaml")."""
    if len(text) > MAX_CHARS:
        raise SettingError(f"{source}: {len(text)} characters is too long for settings (at most {MAX_CHARS})")
    try:
        return yaml.load(text, Loader=PlainLoader)  # noqa: S506 - PlainLoader is a SafeLoader
    except _Refused as exc:
        raise SettingError(
            f"{source}: {exc}: settings are plain YAML (numbers, strings, lists, mappings); "
            "write the value out instead of using anchors, aliases or tags"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SettingError(f"{source}: not valid YAML{where} ({exc.problem or exc.context}); fix the file or the value") from None
    except yaml.YAMLError as exc:
        raise SettingError(f"{source}: not valid YAML ({type(exc).__name__}); fix the file or the value") from None
    except RecursionError:
        raise SettingError(
            f"{source}: nested too deeply to be settings (lists or mappings inside each other thousands of "
            "levels deep); settings are a few levels deep: fix the file or the value"
        ) from None
