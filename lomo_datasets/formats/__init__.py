"""The published file formats, one module each, used by both the exporters and the builders:

- ``lomo_datasets.formats.lomo``: LoMo-Pipe's files (metadata CSV, per-task files, the
  aggregated file) and the Hub rows they map to;
- ``lomo_datasets.formats.livecc``: LiveCC's conversation JSONL (with its byte-offset line), the
  preview JSON and the intermediate clip records.

The names most callers need are importable from here as well.
"""

from lomo_datasets.formats.common import FormatError, read_json_records
from lomo_datasets.formats.livecc import (
    LIVECC_FEATURES,
    export_clips_jsonl,
    export_jsonl,
    parse_conversation,
    read_livecc_file,
    write_livecc_preview,
)
from lomo_datasets.formats.lomo import (
    ALL_TASKS,
    EXTRA_TASKS,
    FILE_STEMS,
    LOMO_FEATURES,
    LOMO_QUESTION_FEATURES,
    QUESTION_FEATURES,
    TASKS,
    WINDOW_TASKS,
    format_resolution,
    read_lomo_file,
    read_lomo_files,
    write_lomo_folder,
    write_lomo_json,
    write_lomo_task_files,
)

__all__ = [
    "ALL_TASKS", "EXTRA_TASKS", "FILE_STEMS", "FormatError", "LIVECC_FEATURES", "LOMO_FEATURES", "LOMO_QUESTION_FEATURES",
    "QUESTION_FEATURES", "TASKS", "WINDOW_TASKS", "export_clips_jsonl", "export_jsonl", "format_resolution",
    "parse_conversation", "read_json_records", "read_livecc_file", "read_lomo_file", "read_lomo_files",
    "write_livecc_preview", "write_lomo_folder", "write_lomo_json", "write_lomo_task_files",
]
