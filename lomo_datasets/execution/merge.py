"""``lomo-datasets merge``: join the output folders of ``--shard`` runs into one folder.

Each part's recorded run (``.lomo-provenance.json``: recipe, settings, input fingerprint, shard,
input rows) is checked before anything is written: the same part twice, parts of other
settings or input, overlapping shards and a missing shard are refused in one line
(``allow_missing`` merges what exists, and the card says so). The merged folder gets what one
run writes: data, ``failed.jsonl``/``dropped.jsonl`` in one run's order, the recipe's exports and
the card with the union's statistics.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, concatenate_datasets

from lomo_datasets.core.stage import SettingError
from lomo_datasets.execution.pipeline import _read_parquet, _split_files, build_exports, write_failed_report
from lomo_datasets.execution.recipes import RECIPES
from lomo_datasets.publish import layout as publish
from lomo_datasets.publish import outputs

logger = logging.getLogger(__name__)


def _part_record(folder: Path) -> tuple[Any, dict[str, Any]]:
    """The provenance of a part and its run record (a SettingError when it has none)."""
    provenance = publish.read_provenance(folder)
    record = provenance.run if provenance is not None else {}
    if not record.get("fingerprint") or not isinstance(record.get("rows"), list):
        raise SettingError(
            f"merge: {folder} has no record of how it was made (written by an older version, or not by "
            "`lomo-datasets run`); rerun that part with this version"
        )
    return provenance, record


def _what_differs(a: Any, b: Any) -> str:
    """The first recorded difference between two parts' provenance, in words."""
    ra, rb = a.run, b.run
    if a.recipe != b.recipe:
        return f"recipe '{b.recipe}' vs '{a.recipe}'"
    if ra.get("group_size") != rb.get("group_size"):
        return f"--group-size {rb.get('group_size')} vs {ra.get('group_size')}"
    if ra.get("exports") != rb.get("exports"):
        return f"export settings {rb.get('exports')} vs {ra.get('exports')}"
    steps_a, steps_b = {s.name: s for s in a.steps}, {s.name: s for s in b.steps}
    if list(steps_a) != list(steps_b):
        return f"steps {list(steps_b)} vs {list(steps_a)}"
    for name, step in steps_a.items():
        other = steps_b[name]
        for key in sorted(set(step.settings) | set(other.settings)):
            if step.settings.get(key) != other.settings.get(key):
                return f"{name}.{key}={other.settings.get(key)!r} vs {step.settings.get(key)!r}"
        if step.version != other.version:
            return f"step '{name}' version {other.version} vs {step.version}"
    versions = (b.packages.get("lomo-datasets"), a.packages.get("lomo-datasets"))
    return f"the steps' code differs (lomo-datasets {versions[0]} vs {versions[1]})"


def _check_parts(folders: list[Path], allow_missing: bool) -> tuple[list[int], Any, list[list[int]]]:
    """The order of the parts by input rows, the first part's provenance and the input rows no
    part holds; a SettingError (one line) for a part given twice, parts of another recipe,
    settings or input, overlapping parts, and (without ``allow_missing``) missing ones."""
    records = [_part_record(f) for f in folders]
    seen: dict[Path, Path] = {}
    for folder in folders:
        real = folder.resolve()
        if real in seen:
            raise SettingError(f"merge: {folder} is given twice; give each part once")
        seen[real] = folder
    (first_prov, first), first_folder = records[0], folders[0]
    for folder, (prov, record) in zip(folders[1:], records[1:]):
        if record.get("input") != first.get("input"):
            raise SettingError(
                f"merge: {folder} was made from other input than {first_folder} "
                f"({record.get('input', {}).get('rows')} vs {first.get('input', {}).get('rows')} input rows, other content); "
                "merge only the shards of one --videos input"
            )
        if record["fingerprint"] != first["fingerprint"]:
            raise SettingError(
                f"merge: {folder} was made with other settings than {first_folder} ({_what_differs(first_prov, prov)}); "
                "merge only parts of one recipe run with the same settings"
            )
    order = sorted(range(len(folders)), key=lambda i: tuple(records[i][1]["rows"]))

    def label(i: int) -> str:
        record = records[i][1]
        shard = f"shard {record['shard'][0]}/{record['shard'][1]}, " if record.get("shard") else ""
        return f"{folders[i]} ({shard}input rows {record['rows'][0]}-{record['rows'][1]})"

    for a, b in zip(order, order[1:]):
        ra, rb = records[a][1]["rows"], records[b][1]["rows"]
        same = ra == rb and records[a][1].get("shard") == records[b][1].get("shard")
        if rb[0] < ra[1] or same:
            raise SettingError(
                f"merge: {label(a)} and {label(b)} {'are the same part' if same else 'overlap'}; "
                f"give each shard of the input once"
            )
    total = int(first["input"]["rows"])
    missing, covered = [], 0
    for i in order:
        lo, hi = records[i][1]["rows"]
        if lo > covered:
            missing.append([covered, lo])
        covered = max(covered, hi)
    if covered < total:
        missing.append([covered, total])
    if missing and not allow_missing:
        count = {tuple(r[1]["shard"] or (1, 1))[1] for r in records}
        hint = ""
        if len(count) == 1 and (n := count.pop()) > 1:
            have = {r[1]["shard"][0] for r in records}
            hint = f" (shard {', '.join(f'{i}/{n}' for i in range(1, n + 1) if i not in have)})"
        where = ", ".join(f"{lo}-{hi}" for lo, hi in missing)
        raise SettingError(
            f"merge: input rows {where} of {total}{hint} are in no part; run the missing shard and merge it too, "
            "or pass --allow-missing to merge what exists (the card then says what is missing)"
        )
    return order, first_prov, missing


def _dropped_lines(folders: list[Path], filters: list[str]) -> list[bytes]:
    """The parts' dropped rows (``dropped.jsonl`` lines) in the order one run writes them: by
    filter (in recipe order), then by part."""
    lines: list[tuple[int, int, int, bytes]] = []
    for p, folder in enumerate(folders):
        path = folder / "dropped.jsonl"
        if not path.is_file():
            continue
        for n, line in enumerate(path.read_bytes().splitlines(keepends=True)):
            if line.strip():
                reason = json.loads(line).get("drop_reason")
                lines.append((filters.index(reason) if reason in filters else len(filters), p, n, line))
    return [line for *_, line in sorted(lines, key=lambda t: t[:3])]


def merge_outputs(parts: list[str | os.PathLike], out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Join the published folders of ``--shard 1/n`` .. ``n/n`` into the folder one unsharded
    run writes at ``out``: the rows in input order, failed and dropped rows, the card with the
    union's statistics, the audit and the recipe's exports. Refused (one line each): a part
    given twice, parts of another recipe, settings or input (their recorded fingerprints),
    overlapping parts, and missing ones unless ``allow_missing`` (the card then says so)."""
    import dataclasses as dc

    folders = [Path(p) for p in parts]
    if not folders:
        raise SettingError("merge: give the output folders of the shard runs, e.g. merge out-1 out-2 --out merged")
    out = Path(out)
    for folder in folders:
        if folder.resolve() == out.resolve() or folder.resolve() in out.resolve().parents:
            raise SettingError(f"merge: --out {out} is (inside) one of the parts; write the merged dataset to a new folder")
        if not _split_files(folder):
            raise SettingError(f"merge: {folder} has no data/*.parquet; is it the --out folder of a `run`?")
    order, provenance, missing = _check_parts(folders, allow_missing)
    folders = [folders[i] for i in order]
    by_split: dict[str, list[Dataset]] = {}
    for folder in folders:
        for split, paths in _split_files(folder).items():
            by_split.setdefault(split, []).append(_read_parquet(paths))
    merged: dict[str, Dataset] = {}
    for split, datasets_ in by_split.items():
        if len(datasets_) != len(folders):
            raise SettingError(f"merge: split '{split}' is missing from some parts; were they made by the same recipe?")
        for folder, part in zip(folders, datasets_):
            if part.features != datasets_[0].features:
                raise SettingError(
                    f"merge: {folder} has other columns than {folders[0]} "
                    f"({sorted(part.features)} vs {sorted(datasets_[0].features)}); "
                    "merge only parts of one recipe run with the same settings"
                )
        merged[split] = concatenate_datasets(datasets_)
    recipe = RECIPES.get(provenance.recipe)
    filters = [s.name for s in provenance.steps if s.kind == "filter"]
    dropped_lines = _dropped_lines(folders, filters)
    dropped = None
    if dropped_lines:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="lomo-merge-") as scratch:
            staged = Path(scratch) / "dropped.jsonl"
            staged.write_bytes(b"".join(dropped_lines))
            dropped = Dataset.from_json(str(staged), cache_dir=str(Path(scratch) / "cache"))
            dropped = Dataset.from_list(dropped.to_list(), features=dropped.features)  # in memory: the folder goes
    names = ", ".join(f.name for f in folders)
    body = f"Merged from the outputs of {len(folders)} shard runs: {names}."
    if missing:
        body += " Incomplete (`--allow-missing`): input rows " + ", ".join(f"{a}-{b}" for a, b in missing) + " are missing."
    run = dict(provenance.run)
    rows = [part_record[1]["rows"] for part_record in (_part_record(f) for f in folders)]
    run.update(shard=None, rows=[rows[0][0], rows[-1][1]], merged_from=[f.name for f in folders], missing=missing)
    provenance = dc.replace(provenance, run=run)
    exports = []
    if recipe is not None:
        exports = build_exports(recipe, overrides={"export": dict(run.get("exports") or {})})
    elif any(e for e in (run.get("exports"),)):
        logger.warning("merge: recipe '%s' is unknown here; its exports are not written", provenance.recipe)

    def write(folder: Path) -> None:
        publish.write_layout(DatasetDict(merged), folder, body=body, dropped=dropped, provenance=provenance)
        if dropped_lines:
            (folder / "dropped.jsonl").write_bytes(b"".join(dropped_lines))
        main = merged.get("train", next(iter(merged.values())))
        write_failed_report(folder / "failed.jsonl", main, dropped)
        for export in exports:
            export(main, folder)

    outputs.claim(out)
    with outputs.Lock(out):
        outputs.publish(out, write)
    logger.info("merged %d parts into %s (%s)", len(folders), out, {s: len(d) for s, d in merged.items()})
    return out
