"""Write datasets in the Hub layout: ``data/<split>-XXXXX-of-YYYYY.parquet`` plus a README.md card.

The local folder is exactly what ``push_to_hub`` would publish, so ``load_dataset(folder)``
reads the same rows and features.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import yaml
from datasets import Dataset, DatasetDict

logger = logging.getLogger(__name__)

DEFAULT_SHARD_BYTES = 500 * 1024 * 1024


def _num_shards(ds: Dataset, max_shard_bytes: int) -> int:
    size = ds.data.nbytes if len(ds) else 0
    return max(1, min(len(ds) or 1, -(-size // max_shard_bytes)))


def card_header(dsd: DatasetDict, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The YAML header: configs with data files and the features of every split."""
    header: dict[str, Any] = dict(extra or {})
    header["configs"] = [
        {
            "config_name": "default",
            "data_files": [{"split": split, "path": f"data/{split}-*"} for split in dsd],
        }
    ]
    first = next(iter(dsd.values()))
    header["dataset_info"] = {"features": first.features._to_yaml_list()}
    return header


def render_card(header: dict[str, Any], body: str) -> str:
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + body.strip() + "\n"


def write_folder(
    data: Dataset | DatasetDict,
    out: str | os.PathLike,
    body: str = "",
    header: dict[str, Any] | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Write ``data`` to ``out`` in the Hub layout (replacing earlier shards there)."""
    dsd = data if isinstance(data, DatasetDict) else DatasetDict({"train": data})
    out = Path(out)
    data_dir = out / "data"
    tmp = out / "data.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for split, ds in dsd.items():
        n = _num_shards(ds, max_shard_bytes)
        for i in range(n):
            shard = ds.shard(num_shards=n, index=i, contiguous=True)
            shard.to_parquet(str(tmp / f"{split}-{i:05d}-of-{n:05d}.parquet"))
    shutil.rmtree(data_dir, ignore_errors=True)
    os.replace(tmp, data_dir)
    (out / "README.md").write_text(render_card(card_header(dsd, header), body), encoding="utf-8")
    logger.info("wrote %s (%s)", out, ", ".join(f"{s}: {len(d)} rows" for s, d in dsd.items()))
    return out
