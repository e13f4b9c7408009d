"""Builder for a folder of videos: one typed record per video (the pipeline's ingest schema).

    from lomo_datasets import load
    videos = load("videofolder", data_files="raw/**/*.mp4", probe=True)

Ids come from ``processors.ingest.records`` (stable, filesystem-safe, collisions resolved), so
the rows equal what ``lomo-datasets run`` ingests from the same files. ``probe=True`` adds
duration, fps, size and audio from PyAV; a video that cannot be read keeps its row with empty
probe fields and an ``errors`` entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets

from lomo_datasets.core import features as F


@dataclass
class VideoFolderConfig(datasets.BuilderConfig):
    """``probe``: also read duration/fps/width/height/has_audio with PyAV (no frame decoding)."""

    probe: bool = False

    def __post_init__(self):
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.probe, bool):
            raise ValueError(f"VideoFolderConfig.probe={self.probe!r}: use true or false")


class VideoFolder(datasets.GeneratorBasedBuilder):
    """Video files into the ingest record schema (optionally probed)."""

    BUILDER_CONFIG_CLASS = VideoFolderConfig
    BUILDER_CONFIGS = [VideoFolderConfig(name="default")]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> datasets.DatasetInfo:
        self.config.validate()
        features = F.merge(F.VIDEO, F.PROBE) if self.config.probe else F.VIDEO
        return datasets.DatasetInfo(description="Video files as lomo-datasets records.", features=features)

    def _split_generators(self, dl_manager):
        if not self.config.data_files:
            raise ValueError("load('videofolder') needs data_files: video paths or globs")
        files = dl_manager.download(self.config.data_files)
        return [datasets.SplitGenerator(name=split, gen_kwargs={"files": list(paths)}) for split, paths in files.items()]

    def _generate_examples(self, files):
        from lomo_datasets.media import decode as media
        from lomo_datasets.processors.ingest import VIDEO_EXTENSIONS, records
        from lomo_datasets.core.stage import format_error

        videos = [f for f in files if str(f).lower().endswith(tuple(VIDEO_EXTENSIONS))]
        for row in records({"video": str(f)} for f in videos):
            if self.config.probe:
                empty = {k: None for k in F.PROBE}
                try:
                    info = media.probe(row["video"]).to_dict()
                    row.update({k: info.get(k) for k in F.PROBE})
                except Exception as exc:  # a bad video keeps its row with an error entry
                    row.update(empty)
                    row["errors"] = row["errors"] + [{"stage": "probe", "error": format_error(exc)}]
            yield row["video_id"], row
