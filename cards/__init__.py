"""Dataset card templates (Markdown with a YAML header), shipped as package data.

Each kind (``lomo``, ``livecc``, ``generic``) has a template with the YAML header and what the
dataset is; ``sections.md`` holds the parts every card shares (how it was made, statistics,
plot, usage). Templates are Jinja2, rendered by huggingface_hub's ``DatasetCard.from_template``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

KINDS = ("lomo", "livecc", "generic")


def template_path(kind: str) -> Path:
    """The template file for ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"no card template for {kind!r}; templates: {', '.join(KINDS)}")
    return Path(str(resources.files(__name__) / f"{kind}.md"))


def template_text(kind: str) -> str:
    """The full template for ``kind``: its own part followed by the shared sections."""
    own = template_path(kind).read_text(encoding="utf-8")
    shared = Path(str(resources.files(__name__) / "sections.md")).read_text(encoding="utf-8")
    return own.rstrip() + "\n\n" + shared
