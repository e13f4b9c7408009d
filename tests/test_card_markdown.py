"""The card as a real Markdown renderer (markdown-it-py, CommonMark + GFM tables, as the Hub
renders cards) shows it: every list label is a paragraph of its own, outside the tables, and
every setting is shown whole."""

from __future__ import annotations

from datasets import Dataset
from markdown_it import MarkdownIt

from lomo_datasets.execution.pipeline import Filter
from lomo_datasets.processors.aggregate import QualityControl
from lomo_datasets.processors.ingest import Probe
from lomo_datasets.publish import layout as publish
from lomo_datasets.publish.card import Provenance
from tests.test_publish import lomo_records

LABELS = ("Questions per task:", "Rows dropped, per reason:", "Errors per stage")


def _blocks(text: str) -> tuple[list[str], list[list[str]]]:
    """The card's paragraphs (their text) and its tables (each a list of its cells' text)."""
    body = text.split("\n---\n", 1)[1]  # after the YAML header
    tokens = MarkdownIt("commonmark").enable("table").parse(body)
    paragraphs, tables, depth = [], [], 0
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            depth += 1
            tables.append([])
        elif token.type == "table_close":
            depth -= 1
        elif token.type == "inline":
            if depth:
                tables[-1].append(token.content)
            elif tokens[i - 1].type == "paragraph_open":
                paragraphs.append(token.content)
    return paragraphs, tables


def test_card_lists_are_paragraphs_outside_the_tables_and_settings_are_whole(tmp_path):
    dropped = Dataset.from_dict({"video_id": ["a", "b", "c"], "drop_reason": ["resolution", "resolution", "stop_words"]})
    stop_words = ["i can't", "as an ai", "subtitle", "transcript", "i'm sorry", "cannot answer", "`quoted`", "the video shows"]
    steps = [Probe(), QualityControl(stop_words=stop_words), Filter("min_resolution", column="height", low=480)]
    provenance = Provenance.from_recipe(type("R", (), {"name": "lomo", "description": "LoMo benchmark"})(), steps)
    out = publish.write_folder(lomo_records(), tmp_path / "ds", provenance=provenance, dropped=dropped)
    text = (out / "README.md").read_text()
    paragraphs, tables = _blocks(text)
    cells = [cell for table in tables for cell in table]
    for label in LABELS:
        assert any(p.startswith(label) for p in paragraphs), (label, paragraphs)
        assert not any(label in cell for cell in cells), label
    # each list label is followed by its own table: task | questions, reason | rows, stage | errors
    heads = [table[:2] for table in tables]
    assert ["task", "questions"] in heads and ["reason", "rows"] in heads and ["stage", "errors"] in heads
    # tasks in LoMo's order, the order of the audit table and of every panel of stats.png
    assert tables[heads.index(["task", "questions"])][2::2] == ["GVQA", "GVS", "SVS", "SVQA", "VVQA", "VTG"]

    # the settings, whole: the stop-word list is not cut, and a backtick inside stays in its code span
    tokens = MarkdownIt("commonmark").enable("table").parse(text.split("\n---\n", 1)[1])
    spans = [child.content for token in tokens if token.type == "inline" for child in token.children or [] if child.type == "code_inline"]
    assert f"stop_words={stop_words}" in spans, [s for s in spans if s.startswith("stop_words")]
    assert "column=height" in spans and "low=480" in spans
