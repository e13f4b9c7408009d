"""Builder for LiveCC conversation files: JSONL (with or without the trailing offsets line) and
the preview JSON, into one typed row per clip.

    from lomo_datasets import load
    ds = load("livecc", data_files={"train": "live_sft.jsonl"})

Each conversation (user turn: a video item with ``video_start``/``video_end`` and a text item
with the query, ``previous``, ``title``, ``category``; assistant turn: one ``text_stream`` of
``[start, end, word]``) becomes a row of ``lomo_datasets.formats.livecc.LIVECC_FEATURES``, read
by ``lomo_datasets.formats.livecc`` (the module the exporter writes with).
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets

from lomo_datasets import formats

_OFFSETS = ("auto", "require", "none")


@dataclass
class LiveCCConfig(datasets.BuilderConfig):
    """``offsets``: "auto" (a trailing list-of-ints line is the index and must match the lines'
    byte offsets; an index of character offsets is ignored with a warning), "require" (fail
    without it) or "none" (skip such a line unchecked). ``min_words``: drop clips with fewer words."""

    offsets: str = "auto"
    min_words: int = 0

    def __post_init__(self):
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Checked at construction and again by the builder: ``datasets`` sets settings passed
        to ``load(...)`` on a copy of the default config without running ``__post_init__``."""
        if self.offsets not in _OFFSETS:
            raise ValueError(f"LiveCCConfig.offsets={self.offsets!r}: use one of {_OFFSETS}")
        if not isinstance(self.min_words, int) or self.min_words < 0:
            raise ValueError(f"LiveCCConfig.min_words={self.min_words!r}: use an integer >= 0")


class LiveCC(datasets.GeneratorBasedBuilder):
    """LiveCC real-time commentary conversations into typed features."""

    BUILDER_CONFIG_CLASS = LiveCCConfig
    BUILDER_CONFIGS = [LiveCCConfig(name="default")]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> datasets.DatasetInfo:
        self.config.validate()
        return datasets.DatasetInfo(
            description="LiveCC-style commentary clips: video span, query, context and timed words.",
            features=formats.LIVECC_FEATURES,
        )

    def _split_generators(self, dl_manager):
        if not self.config.data_files:
            raise ValueError("load('livecc') needs data_files: LiveCC JSONL files or preview JSON files")
        files = dl_manager.download(self.config.data_files)
        return [datasets.SplitGenerator(name=split, gen_kwargs={"files": list(paths)}) for split, paths in files.items()]

    def _generate_examples(self, files):
        for file_index, path in enumerate(files):
            for line, conversation in enumerate(formats.read_livecc_file(path, offsets=self.config.offsets)):
                row = formats.parse_conversation(conversation, where=f"{path} conversation {line}")
                if len(row["text_stream"]) < self.config.min_words:
                    continue
                yield f"{file_index}-{line}", row
