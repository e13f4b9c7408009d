"""Publish datasets in the Hub layout: ``data/<split>-XXXXX-of-YYYYY.parquet``, README.md, plot.

``write_folder`` writes the layout to a local folder: Parquet shards (split by size), a README.md
card whose YAML lists the configs and features, and the stats plot (``stats.png``) the card
shows. ``push_folder`` uploads exactly those files to a Hub dataset repo; ``push_to_hub`` does
both. So ``load_dataset(folder)`` reads what ``load_dataset(repo)`` reads after a push.

The Hub token comes from the environment (``HF_TOKEN``) or the huggingface_hub login; it is
never logged, printed or written. Transient upload errors (HTTP 408/429/5xx, dropped
connections) are retried with bounded exponential backoff; the final error says what failed and
that the local folder is intact.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from datasets import Dataset, DatasetDict

from lomo_datasets.publish import outputs
from lomo_datasets.publish.card import PLOT_NAME, Provenance, compute_stats, plot_stats
from lomo_datasets.publish.card import render_card as _render_card
from lomo_datasets.publish.hub import DEFAULT_ATTEMPTS, HubTimeouts, use_timeouts
from lomo_datasets.core.redact import redact, shorten
from lomo_datasets.core.stage import SettingError
from lomo_datasets.core.files import update_sha256

logger = logging.getLogger(__name__)

DEFAULT_SHARD_BYTES = 500 * 1024 * 1024
#: How the folder was made, kept beside the data (not published) so ``merge`` and later
#: re-renders of the card can say it again; read it with ``read_provenance``.
PROVENANCE_FILE = ".lomo-provenance.json"
#: The files of a dataset folder that are published (work dirs, dropped rows stay local).
PUBLISHED_PATTERNS = ["README.md", PLOT_NAME, "data/*.parquet", "audit.md"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class PublishError(RuntimeError):
    """Publishing failed; the message says what failed and what to do."""


# --------------------------------------------------------------------------------------------
# Local folder
# --------------------------------------------------------------------------------------------


def _num_shards(ds: Dataset, max_shard_bytes: int) -> int:
    """Shards so each holds at most ``max_shard_bytes`` of Arrow data (at least one row each)."""
    if not len(ds):
        return 1
    estimate = getattr(ds, "_estimate_nbytes", None)  # accounts for selected rows / indices
    size = estimate() if callable(estimate) else ds.data.nbytes
    return max(1, min(len(ds) or 1, -(-size // max_shard_bytes)))


def card_header(dsd: DatasetDict, extra: dict[str, Any] | None = None, patterns: dict[str, str] | None = None) -> dict[str, Any]:
    """The YAML header: configs with data files and the features of every split.

    ``patterns`` (split -> path pattern) names the split's shards; ``write_layout`` gives
    patterns that carry a digest of the shards' bytes (see ``shard_name``)."""
    header: dict[str, Any] = dict(extra or {})
    header["configs"] = [
        {
            "config_name": "default",
            "data_files": [{"split": split, "path": (patterns or {}).get(split, f"data/{split}-*")} for split in dsd],
        }
    ]
    first = next(iter(dsd.values()))
    header["dataset_info"] = {"features": first.features._to_yaml_list()}
    return header


def shard_name(split: str, index: int, count: int, digest: str) -> str:
    """``train-00000-of-00002-<digest>.parquet``: the Hub's shard name plus a digest of the bytes
    of all the split's shards.

    Why the digest: ``load_dataset(folder)`` caches a folder whose card lists ``configs`` under
    ``<cache>/<folder name>/default/0.0.0/<hash>``, where the hash covers only the card's
    features and the data_files *patterns* (``datasets.load.LocalDatasetModuleFactory``: the
    builder configs hold unresolved ``DataFilesPatternsDict``; the config id has no file
    suffix). A rewrite with the same features (or another folder of the same name) would hit
    the old cache entry and return the old rows. With the digest in the pattern, new bytes give
    a new cache entry, and the same bytes may share one."""
    return f"{split}-{index:05d}-of-{count:05d}-{digest}.parquet"


def split_patterns(folder: str | os.PathLike) -> dict[str, str]:
    """Split -> data_files pattern from the card in ``folder`` (empty when there is none)."""
    import yaml

    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    try:
        header = yaml.safe_load(text.split("---", 2)[1]) or {}
        files = header["configs"][0]["data_files"]
        return {str(f["split"]): str(f["path"]) for f in files}
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        return {}


def write_layout(
    dsd: DatasetDict,
    out: Path,
    body: str = "",
    header: dict[str, Any] | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    *,
    provenance: Provenance | None = None,
    dropped: Dataset | None = None,
    kind: str | None = None,
    pretty_name: str | None = None,
    repo_id: str | None = None,
    plot: bool = True,
) -> Path:
    """Write the Hub layout of ``dsd`` into the (new, staging) folder ``out``: shards, plot, card."""
    import hashlib

    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    patterns: dict[str, str] = {}
    for split, ds in dsd.items():
        n = _num_shards(ds, max_shard_bytes)
        written = []
        for i in range(n):
            shard = ds.shard(num_shards=n, index=i, contiguous=True)
            path = data_dir / f".{split}-{i:05d}.parquet"
            shard.to_parquet(str(path))
            written.append(path)
        digest = hashlib.sha256()
        for path in written:
            update_sha256(digest, path)
        short = digest.hexdigest()[:16]
        for i, path in enumerate(written):
            os.replace(path, data_dir / shard_name(split, i, n, short))
        patterns[split] = f"data/{split}-*-{short}.parquet"

    stats = compute_stats(dsd, dropped)
    plot_path = None
    if plot:
        plot_path = plot_stats(stats, out / PLOT_NAME, title=pretty_name or (provenance.recipe if provenance else ""))
    if stats.audit_report is not None:  # QA data: the audit table the card links
        from lomo_datasets.audit.checks import blind_model, write_report

        stats.audit_report.blind_model = stats.audit["blind_model"] = blind_model(provenance)
        if stats.audit_report.verified_answers is not None:
            stats.audit_report.verifier_model = stats.audit["verifier_model"] = blind_model(provenance, "verify")
        write_report(stats.audit_report, out)
    text = _render_card(
        dsd,
        card_header(dsd, header, patterns),
        stats,
        provenance=provenance,
        kind=kind,
        plot=PLOT_NAME if plot_path else None,
        repo_id=repo_id,
        pretty_name=pretty_name,
        extra_body=body,
    )
    if provenance is not None:
        (out / PROVENANCE_FILE).write_text(json.dumps(provenance.to_dict(), indent=1, sort_keys=True), encoding="utf-8")
    (out / "README.md").write_text(text, encoding="utf-8")
    return out


def _as_dict(data: Dataset | DatasetDict, max_shard_bytes: int) -> DatasetDict:
    if max_shard_bytes < 1:
        raise SettingError(f"max_shard_bytes must be >= 1, got {max_shard_bytes}")
    dsd = data if isinstance(data, DatasetDict) else DatasetDict({"train": data})
    if not dsd:
        raise SettingError("nothing to write: the DatasetDict has no splits")
    return dsd


def write_folder(
    data: Dataset | DatasetDict,
    out: str | os.PathLike,
    body: str = "",
    header: dict[str, Any] | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    **options: Any,
) -> Path:
    """Write ``data`` to ``out`` in the Hub layout, replacing what an earlier write put there.

    ``out`` must be new, empty or a folder lomo-datasets wrote (``outputs.claim``); the new
    files are written aside and swapped in together (``outputs.publish``), so a failure leaves
    the previous folder whole. The card is rendered from the template for ``kind`` (chosen from
    the columns when None) with statistics, the plot, ``provenance`` (recipe, steps, models,
    packages) and ``body`` as an extra section. ``dropped`` rows (with ``drop_reason``) are
    counted, not published. Other options: ``kind``, ``pretty_name``, ``repo_id``, ``plot``.
    """
    dsd = _as_dict(data, max_shard_bytes)
    out = outputs.claim(out)
    with outputs.Lock(out):
        outputs.publish(out, lambda folder: write_layout(dsd, folder, body, header, max_shard_bytes, **options))
    logger.info("wrote %s (%s)", out, ", ".join(f"{s}: {len(d)} rows" for s, d in dsd.items()))
    return out


def read_provenance(folder: str | os.PathLike) -> Provenance | None:
    """The provenance ``write_folder`` kept in ``folder`` (None when there is none)."""
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        return Provenance.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        logger.warning("%s is unreadable (%s); the card will not say how the data was made", path, exc)
        return None


def check_folder(folder: str | os.PathLike) -> Path:
    """``folder`` if it is a dataset folder in the Hub layout, else a SettingError saying why."""
    folder = Path(folder)
    if not (folder / "README.md").is_file() or not any((folder / "data").glob("*.parquet")):
        raise SettingError(
            f"{folder} is not a dataset folder in the Hub layout (README.md and data/*.parquet); "
            "make one with `lomo-datasets run ... --out FOLDER` or lomo_datasets.publish.layout.write_folder()"
        )
    return folder


# --------------------------------------------------------------------------------------------
# Hub
# --------------------------------------------------------------------------------------------


@dataclass
class Retry:
    """Bounded exponential backoff for transient upload errors."""

    attempts: int = DEFAULT_ATTEMPTS
    base_delay: float = 2.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or not 1 <= self.attempts <= 20:
            raise SettingError(f"retry attempts must be a whole number from 1 to 20, got {shorten(self.attempts)}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise SettingError("retry delays must be >= 0 seconds")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_delay, self.base_delay * 2 ** (attempt - 1))


def check_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise SettingError(f"repo id {repo_id!r}: use ORG/NAME, e.g. my-org/lomo-bench")
    return repo_id


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: HTTP 408/429/5xx, timeouts, dropped connections."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return int(status) in _TRANSIENT_STATUS
    # huggingface_hub talks through httpx (or its fork httpx2, by version): their TransportError
    # covers refused/dropped connections and timeouts.
    if any(k.__name__ == "TransportError" and k.__module__.split(".")[0] in ("httpx", "httpx2")
           for k in type(exc).__mro__):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def _describe(exc: BaseException) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact((f"HTTP {status}: " if status else f"{type(exc).__name__}: ") + first)


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    retry: Retry | None = None,
    sleep: Callable[[float], None] = time.sleep,
    timeouts: HubTimeouts | None = None,
) -> str:
    """Upload a dataset folder (README.md, stats.png, data/*.parquet) to the dataset repo
    ``repo_id`` in one commit; shards no longer in the folder are deleted from the repo.

    ``token`` None uses ``HF_TOKEN`` or the huggingface_hub login. Every request has connect
    and read ``timeouts`` (``HubTimeouts()`` by default). Returns the commit URL.
    """
    from huggingface_hub import HfApi

    use_timeouts(timeouts)
    folder = check_folder(folder)
    check_repo_id(repo_id)
    retry = retry or Retry()
    with outputs.held(folder, "folder"):  # no push of a folder a run is writing or has half-committed
        from lomo_datasets.publish.accounting import verify_folder

        verify_folder(folder)  # every input accounted for, as the run recorded
        return _push(folder, repo_id, private, token, endpoint, revision, commit_message, retry, sleep)


def _push(folder: Path, repo_id: str, private, token, endpoint, revision, commit_message, retry: Retry, sleep) -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    message = commit_message or f"Upload {folder.name} with lomo-datasets"
    last: BaseException | None = None
    for attempt in range(1, retry.attempts + 1):
        try:
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            info = api.upload_folder(
                folder_path=str(folder),
                repo_id=repo_id,
                repo_type="dataset",
                revision=revision,
                allow_patterns=PUBLISHED_PATTERNS,
                delete_patterns=["data/*.parquet"],
                commit_message=message,
            )
            url = str(getattr(info, "commit_url", info))
            logger.info("pushed %s to dataset repo %s (%s)", folder, repo_id, redact(url))
            return url
        except Exception as exc:
            if not is_transient(exc):
                raise PublishError(_fatal_message(exc, folder, repo_id)) from None
            last = exc
            if attempt < retry.attempts:
                wait = retry.delay(attempt)
                logger.warning(
                    "push to %s: attempt %d/%d failed (%s); retrying in %.1fs",
                    repo_id, attempt, retry.attempts, _describe(exc), wait,
                )
                sleep(wait)
    raise PublishError(
        f"push to dataset repo {repo_id} failed after {retry.attempts} attempts: {_describe(last)}. "
        f"The local dataset in {folder} is complete and unchanged; retry with "
        f"`lomo-datasets publish {folder} --repo {repo_id}`."
    ) from None


def _fatal_message(exc: BaseException, folder: Path, repo_id: str) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    hint = {
        401: "the Hub did not accept the token: set HF_TOKEN or run `hf auth login`",
        403: f"the token may not write to {repo_id}: use a token with write access to that namespace",
        404: f"repo {repo_id} was not found: check the ORG/NAME and that the token can see it",
    }.get(status, "")
    return (
        f"push to dataset repo {repo_id} failed: {_describe(exc)}"
        + (f" ({hint})" if hint else "")
        + f". The local dataset in {folder} is complete and unchanged."
    )


def push_to_hub(
    data: Dataset | DatasetDict,
    repo_id: str,
    out: str | os.PathLike | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    retry: Retry | None = None,
    **folder_kwargs: Any,
) -> str:
    """Write ``data`` in the Hub layout (to ``out``, or a temporary folder) and push it.

    The card is the same one the local folder gets, with ``load_dataset("repo_id")`` in it.
    """
    check_repo_id(repo_id)
    if out is not None:
        folder = write_folder(data, out, repo_id=repo_id, **folder_kwargs)
        return push_folder(folder, repo_id, private=private, token=token, endpoint=endpoint, retry=retry)
    with tempfile.TemporaryDirectory(prefix="lomo-publish-") as tmp:
        folder = write_folder(data, tmp, repo_id=repo_id, **folder_kwargs)
        return push_folder(folder, repo_id, private=private, token=token, endpoint=endpoint, retry=retry)
