"""Builder for LoMo files: LoMo-Pipe's per-task files, its aggregated and QC files, the metadata
CSV, and the files earlier versions of this project wrote.

    from lomo_datasets import load
    ds = load("lomo", data_files={"test": ["GVQA.json", "SVS_format.json", ..., "VTG.json"]})  # per video
    ds = load("lomo", data_files="lomo.json", layout="question")                 # one row per question

Reads every shape ``lomo_datasets.formats.lomo.read_lomo_file`` knows; the items of a video
spread over several files are merged into one row (items of different tasks never collapse; an
item two files both hold, such as the aggregated file beside the per-task files, is kept once).
Rows have the Hub's names: task ``SVS`` for LoMo-Pipe's ``SVS_format``, question ids unique in
the video (LoMo-Pipe's ``<stem>_01`` in every task becomes ``<stem>_01`` .. ``<stem>_06``).
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets

from lomo_datasets import formats

_LAYOUTS = ("video", "question")


@dataclass
class LomoConfig(datasets.BuilderConfig):
    """``layout``: "video" (one row per video with its questions) or "question" (one row per
    question with its video's fields). ``tasks``: keep only these tasks (None keeps all)."""

    layout: str = "video"
    tasks: tuple[str, ...] | None = None

    def __post_init__(self):
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Checked at construction and again by the builder: ``datasets`` sets settings passed
        to ``load(...)`` on a copy of the default config without running ``__post_init__``."""
        if self.layout not in _LAYOUTS:
            raise ValueError(f"LomoConfig.layout={self.layout!r}: use one of {_LAYOUTS}")
        if self.tasks is not None:
            if isinstance(self.tasks, str):
                self.tasks = (self.tasks,)
            self.tasks = tuple(formats.lomo.hub_task(t) or str(t).upper() for t in self.tasks)  # SVS_format = SVS
            unknown = sorted(set(self.tasks) - set(formats.ALL_TASKS))
            if unknown:
                raise ValueError(f"LomoConfig.tasks: unknown task(s) {unknown}; tasks are {formats.ALL_TASKS}")


class Lomo(datasets.GeneratorBasedBuilder):
    """LoMo video QA benchmark files into typed features."""

    BUILDER_CONFIG_CLASS = LomoConfig
    BUILDER_CONFIGS = [LomoConfig(name="default")]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> datasets.DatasetInfo:
        self.config.validate()
        features = formats.LOMO_QUESTION_FEATURES if self.config.layout == "question" else formats.LOMO_FEATURES
        return datasets.DatasetInfo(
            description="LoMo-style video QA: videos with GVQA/GVS/SVS/SVQA/VVQA/VTG questions.",
            features=features,
        )

    def _split_generators(self, dl_manager):
        if not self.config.data_files:
            raise ValueError("load('lomo') needs data_files: LoMo-Pipe's per-task files, the aggregated JSON or the metadata CSV")
        files = dl_manager.download(self.config.data_files)
        return [datasets.SplitGenerator(name=split, gen_kwargs={"files": list(paths)}) for split, paths in files.items()]

    def _generate_examples(self, files):
        for video in formats.read_lomo_files(files):
            questions = [q for q in video["questions"] if self.config.tasks is None or q["task"] in self.config.tasks]
            if self.config.layout == "video":
                yield video["video_id"], {**video, "questions": questions}
                continue
            head = {k: video[k] for k in ("video_id", "duration", "resolution")}
            for q in questions:
                yield f"{video['video_id']}/{q['question_id']}", {**head, **q}
