"""Publishing: the local Hub layout, the card (stats, plot, provenance), push to a loopback Hub.

The Hub here is ``tests/hub_server.py``: a small server on 127.0.0.1 that speaks the Hub's HTTP
API (create repo, preupload, LFS batch + upload, commit, repo info, tree, paths-info, resolve).
``HF_ENDPOINT`` must be set before huggingface_hub / datasets are imported, and other test
modules import them first, so pushes and ``load_dataset(repo)`` that rely on the endpoint run
in a subprocess with ``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET=1`` and a fake ``HF_TOKEN``. The retry
tests call ``push_folder(endpoint=...)`` in this process instead (no env needed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict, Features, List, Value, load_dataset

from lomo_datasets.core import features as F
from lomo_datasets.publish import layout as publish
from lomo_datasets.publish.card import Provenance, StepInfo, card_kind, compute_stats
from lomo_datasets.execution.pipeline import Filter
from lomo_datasets.processors.ingest import Probe
from lomo_datasets.core.stage import SettingError, Stage
from tests.hub_server import HubServer

REPO_ROOT = Path(__file__).resolve().parents[1]
FAKE_TOKEN = "hf_FakeTokenForTests0123456789abcdefXYZ"

LOMO_FEATURES = Features(
    {
        "video_id": Value("string"),
        "duration": Value("float64"),
        "resolution": Value("string"),
        "questions": F.QUESTIONS,
        "errors": F.ERRORS,
    }
)



def _plain(name: str) -> str:
    """A shard name without the content digest ``write_folder`` adds (``-<16 hex>.parquet``)."""
    return re.sub(r"-[0-9a-f]{16}\.parquet$", ".parquet", name)


def _plain_files(data_files: list[dict]) -> list[dict]:
    """The card's data_files with the content digest taken out of the patterns."""
    return [{**f, "path": re.sub(r"-\*-[0-9a-f]{16}\.parquet$", "-*", f["path"])} for f in data_files]

def _q(vid: str, n: int, task: str, window=(), descriptions: str = "") -> dict:
    return {
        "question_id": f"{vid}-{n}",
        "task": task,
        "question": f"What happens in {vid} ({task} {n})? 中文也可以",
        "options": ["A: a cat", "B: a dog", "C: a car", "D: a tree"],
        "answer": "ABCD"[n % 4],
        "window": list(window),
        "descriptions": descriptions,
    }


def lomo_records() -> Dataset:
    rows = [
        {
            "video_id": "BV1xx411c7mD.mp4",
            "duration": 93.5,
            "resolution": "[720, 1280]",
            "questions": [
                _q("BV1xx411c7mD", 0, "GVQA"),
                _q("BV1xx411c7mD", 1, "GVS"),
                _q("BV1xx411c7mD", 2, "SVS", (10.0, 25.5)),
                _q("BV1xx411c7mD", 3, "VTG", (30.0, 41.0), "a man opens a door"),
            ],
            "errors": [],
        },
        {
            "video_id": "yt_abc.mp4",
            "duration": 240.0,
            "resolution": "[1080, 1920]",
            "questions": [_q("yt_abc", 0, "SVQA", (1.0, 9.0)), _q("yt_abc", 1, "VVQA", (1.0, 9.0))],
            "errors": [],
        },
        {"video_id": "broken.mp4", "duration": None, "resolution": None, "questions": [],
         "errors": [{"stage": "asr", "error": "MediaError: no audio stream"}]},
    ]
    return Dataset.from_list(rows, features=LOMO_FEATURES)


def clip_records() -> Dataset:
    words = List({"start": Value("float64"), "end": Value("float64"), "word": Value("string")})
    feats = Features(
        {
            "video_id": Value("string"),
            "video": Value("string"),
            "duration": Value("float64"),
            "video_start": Value("float64"),
            "video_end": Value("float64"),
            "content": words,
            "errors": F.ERRORS,
        }
    )
    rows = []
    for i, (start, end) in enumerate([(0.0, 31.0), (40.0, 100.0), (0.0, 45.5)]):
        vid = "match" if i < 2 else "lecture"
        rows.append({
            "video_id": vid, "video": f"/videos/{vid}.mp4", "duration": 120.0 if vid == "match" else 50.0,
            "video_start": start, "video_end": end,
            "content": [{"start": start + 0.5, "end": start + 0.9, "word": "Goal"}],
            "errors": [],
        })
    return Dataset.from_list(rows, features=feats)


def _yaml_header(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


# --------------------------------------------------------------------------------------------
# Local layout and card
# --------------------------------------------------------------------------------------------


def test_local_round_trip_equal_rows_and_features(tmp_path):
    data = DatasetDict({"train": lomo_records(), "test": lomo_records().select([1])})
    out = publish.write_folder(data, tmp_path / "ds", max_shard_bytes=300)
    shards = sorted(_plain(p.name) for p in (out / "data").iterdir())
    n_train = len([s for s in shards if s.startswith("train-")])
    assert n_train > 1, "a small max_shard_bytes must split the train split into several shards"
    assert shards[0] == f"train-00000-of-{n_train:05d}.parquet" or shards[0].startswith("test-00000-of-")
    assert all(s.endswith(f"-of-{n_train:05d}.parquet") for s in shards if s.startswith("train-"))

    back = load_dataset(str(out))
    assert set(back) == {"train", "test"}
    for split in data:
        assert back[split].features == data[split].features
        assert back[split].to_list() == data[split].to_list()

    header = _yaml_header((out / "README.md").read_text())
    header["configs"][0]["data_files"] = _plain_files(header["configs"][0]["data_files"])
    assert header["configs"] == [
        {"config_name": "default", "data_files": [
            {"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}]}
    ]
    assert Features._from_yaml_list(header["dataset_info"]["features"]) == LOMO_FEATURES


def test_card_lomo_stats_plot_and_provenance(tmp_path):
    dropped = Dataset.from_dict({"video_id": ["a", "b", "c"], "drop_reason": ["resolution", "resolution", "stop_words"]})
    probe = Probe()
    flt = Filter("min_resolution", column="height", low=480)
    provenance = Provenance.from_recipe(type("R", (), {"name": "lomo", "description": "LoMo benchmark"})(), [probe, flt])
    out = publish.write_folder(lomo_records(), tmp_path / "ds", provenance=provenance, dropped=dropped)
    text = (out / "README.md").read_text()
    header = _yaml_header(text)
    assert header["license"] == "other" and header["license_link"] == "README" and "lomo" in header["tags"]
    assert card_kind(lomo_records()) == "lomo"
    assert "LoMo-style video question-answering benchmark" in text
    # statistics from the rows: 3 videos, tasks counted, errors and drops per reason
    assert "| videos | 3 |" in text
    assert "| questions | 6 |" in text
    for task in ("GVQA", "GVS", "SVS", "VTG", "SVQA", "VVQA"):
        assert f"| {task} | 1 |" in text
    assert "| resolution | 2 |" in text and "| stop_words | 1 |" in text
    assert "| rows with errors | 1 |" in text and "| asr | 1 |" in text
    hours = (93.5 + 240.0) / 3600
    assert f"| hours of source video | {hours:.2f} |" in text
    # how it was made: steps in order with settings and versions, package versions, usage note
    assert text.index("`probe` (stage, version 1)") < text.index("`min_resolution` (filter")
    assert "`column=height`" in text and "`low=480`" in text
    assert "datasets " in text and "huggingface_hub " in text
    assert "research use" in text.lower()
    # the plot ships beside the card and the card shows it
    assert "](stats.png)" in text
    png = (out / "stats.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_card_livecc_clips_and_generic(tmp_path):
    clips = clip_records()
    assert card_kind(clips) == "livecc"
    stats = compute_stats(clips)
    assert stats.videos == 2 and stats.clips == 3
    assert stats.clip_hours == pytest.approx((31.0 + 60.0 + 45.5) / 3600)
    assert stats.hours == pytest.approx((120.0 + 50.0) / 3600)  # each source video counted once
    assert sorted(stats.durations) == [31.0, 45.5, 60.0]
    text = (publish.write_folder(clips, tmp_path / "clips") / "README.md").read_text()
    assert "| clips | 3 |" in text and "text_stream" in text

    # a recipe output with none of the known columns still gets a card and a plot
    plain = Dataset.from_dict({"video_id": ["x"], "video": ["/v/x.mp4"], "errors": [[]]},
                              features=Features({"video_id": Value("string"), "video": Value("string"), "errors": F.ERRORS}))
    out = publish.write_folder(plain, tmp_path / "plain")
    text = (out / "README.md").read_text()
    assert card_kind(plain) == "generic" and "| videos | 1 |" in text and (out / "stats.png").exists()


def test_card_reports_the_yield(tmp_path):
    feats = Features({"video_id": Value("string"), "errors": F.ERRORS})
    kept = Dataset.from_dict({"video_id": ["a", "b", "c", "c"],
                              "errors": [[], [{"stage": "qa", "error": "no valid output"}], [], []]}, features=feats)
    dropped = Dataset.from_dict({"video_id": ["d", "e"], "errors": [[{"stage": "translate", "error": "x"}], []]}, features=feats)
    stats = compute_stats(kept, dropped)
    # 5 videos in; a and c have all their rows without errors; b failed in qa, d in translate,
    # e was dropped by a filter
    assert (stats.videos_in, stats.videos_complete, stats.failed_per_step) == (5, 2, {"qa": 1, "translate": 1})
    text = (publish.write_folder(kept, tmp_path / "out", dropped=dropped) / "README.md").read_text()
    assert "| yield: videos with all items / videos in | 2 / 5 (40%) |" in text
    assert "| failed rows per step | qa: 1, translate: 1 |" in text


@dataclass
class _Captioner(Stage):
    """A real (tiny) stage with a model setting and a prompt version, for the card's provenance."""

    name = "caption"
    version = "3"
    prompt_version = "v2"
    model: str = "Qwen/Qwen2.5-7B-Instruct"
    model_revision: str = "abc123"
    cookies: str = ""

    def features(self):
        return Features({"caption": Value("string")})

    def process_row(self, row):
        return {"caption": row["video_id"]}


def test_card_lists_models_prompt_versions_and_masks_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("BILIBILI_SESSDATA", "sessdata-secret-value-42")
    step = _Captioner(cookies="SESSDATA=sessdata-secret-value-42")
    info = StepInfo.from_step(step)
    assert info.models == {"model": "Qwen/Qwen2.5-7B-Instruct", "model_revision": "abc123"}
    assert info.prompt_versions == {"prompt_version": "v2"}
    provenance = Provenance(recipe="lomo", steps=[info])
    out = publish.write_folder(lomo_records(), tmp_path / "ds", provenance=provenance)
    text = (out / "README.md").read_text()
    assert "`Qwen/Qwen2.5-7B-Instruct`" in text and "`abc123`" in text and "prompt_version v2" in text
    assert "sessdata-secret-value-42" not in text


def test_bad_settings_fail_with_a_fix(tmp_path):
    with pytest.raises(SettingError, match="ORG/NAME"):
        publish.check_repo_id("no-slash")
    with pytest.raises(SettingError, match="ORG/NAME"):
        publish.check_repo_id("a/b/c")
    with pytest.raises(SettingError, match="not a dataset folder"):
        publish.check_folder(tmp_path)
    with pytest.raises(SettingError, match="attempts"):
        publish.Retry(attempts=0)
    retry = publish.Retry(attempts=10, base_delay=2.0, max_delay=60.0)
    assert [retry.delay(i) for i in (1, 2, 3, 6, 9)] == [2.0, 4.0, 8.0, 60.0, 60.0]


# --------------------------------------------------------------------------------------------
# Push to the loopback Hub
# --------------------------------------------------------------------------------------------


@pytest.fixture
def hub():
    server = HubServer().start()
    yield server
    server.stop()


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _hub_env(hub: HubServer, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_DATASETS_OFFLINE", None)
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_XET="1",
        HF_TOKEN=FAKE_TOKEN,
        HF_HOME=str(tmp_path / "hf-home"),
        HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"),
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


_PUSH_AND_LOAD = r"""
import json, logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
from lomo_datasets import cli
rc = cli.main(sys.argv[1:])
if rc != 0:
    sys.exit(rc)
from datasets import load_dataset
repo = sys.argv[sys.argv.index("--repo") + 1] if "--repo" in sys.argv else sys.argv[sys.argv.index("--push-to-hub") + 1]
ds = load_dataset(repo)
print("ROWS=" + json.dumps({s: d.to_list() for s, d in ds.items()}))
print("FEATURES=" + json.dumps({s: d.features.to_dict() for s, d in ds.items()}))
"""


def _run_cli(hub, tmp_path, args: list[str]) -> tuple[subprocess.CompletedProcess, dict, dict]:
    proc = subprocess.run(
        [sys.executable, "-c", _PUSH_AND_LOAD, *args],
        env=_hub_env(hub, tmp_path), capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(next(line[5:] for line in proc.stdout.splitlines() if line.startswith("ROWS=")))
    feats = json.loads(next(line[9:] for line in proc.stdout.splitlines() if line.startswith("FEATURES=")))
    return proc, rows, feats


def test_publish_cli_to_loopback_hub_then_load_dataset(hub, tmp_path):
    data = lomo_records()
    folder = publish.write_folder(data, tmp_path / "lomo-bench", provenance=Provenance(recipe="lomo"))
    before = _tree_digest(folder)
    proc, rows, feats = _run_cli(hub, tmp_path, ["-v", "publish", str(folder), "--repo", "lomo-org/lomo-bench", "--private"])

    # load_dataset(repo) from the server gives the same rows and features
    assert rows["train"] == data.to_list()
    assert Features.from_dict(feats["train"]) == data.features
    # the server holds the Hub layout: card with the YAML configs, the plot, the shards
    files = hub.files("lomo-org/lomo-bench")
    assert {"README.md", "stats.png", "data/train-00000-of-00001.parquet"} <= {_plain(f) for f in files}
    assert not any(p.startswith(".lomo-work") or p.endswith(".jsonl") for p in files)
    card = files["README.md"].decode()
    assert card == (folder / "README.md").read_text()  # the same card as the local folder
    assert _plain_files(_yaml_header(card)["configs"][0]["data_files"]) == [{"split": "train", "path": "data/train-*"}]
    assert "](stats.png)" in card and files["stats.png"] == (folder / "stats.png").read_bytes()
    assert hub.repos["lomo-org/lomo-bench"].private
    assert _tree_digest(folder) == before

    # the token was used (so the search below means something) and appears nowhere else
    assert f"Bearer {FAKE_TOKEN}" in hub.auth_seen
    assert "DEBUG" in proc.stderr  # the logs really were captured at DEBUG
    haystacks = {"stdout": proc.stdout, "stderr (DEBUG logs)": proc.stderr, "rows": json.dumps(rows),
                 "server request log": "\n".join(hub.requests)}
    haystacks.update({f"server file {p}": c.decode("latin-1") for p, c in files.items()})
    haystacks.update({f"local file {p}": (folder / p).read_bytes().decode("latin-1") for p in before})
    for name, text in haystacks.items():
        assert FAKE_TOKEN not in text, f"the token leaked into {name}"
        assert FAKE_TOKEN[3:20] not in text, f"part of the token leaked into {name}"


def test_run_push_to_hub_writes_folder_card_and_pushes(hub, tmp_path, test_media):
    videos = tmp_path / "videos.txt"
    videos.write_text(f"{test_media.english}\n{test_media.corrupt}\n")
    out = tmp_path / "probe-out"
    proc, rows, _ = _run_cli(hub, tmp_path, ["run", "probe", "--videos", str(videos), "--out", str(out),
                                             "--push-to-hub", "org/probe-ds"])
    assert "pushed:" in proc.stdout
    # the run's folder is in the Hub layout with card and plot, and equals what was pushed
    local = load_dataset(str(out))["train"]
    assert rows["train"] == local.to_list()
    assert len(local) == 2 and sum(1 for r in local if r["errors"]) == 1
    card = (out / "README.md").read_text()
    assert "recipe `probe`" in card and "| rows with errors | 1 |" in card and '"org/probe-ds"' in card
    assert hub.files("org/probe-ds")["README.md"].decode() == card
    assert (out / "stats.png").exists() and (out / ".lomo-work").exists()
    assert not any(p.startswith(".lomo-work") for p in hub.files("org/probe-ds"))
    assert publish.read_provenance(out).recipe == "probe"
    assert f"Bearer {FAKE_TOKEN}" in hub.auth_seen
    for text in (proc.stdout, proc.stderr, card, json.dumps(rows)):
        assert FAKE_TOKEN not in text


def test_push_to_hub_and_repush_replaces_stale_shards(hub, tmp_path, online_no_xet):
    data = lomo_records()
    url = publish.push_to_hub(data, "org/bench", token=FAKE_TOKEN, endpoint=hub.url,
                              provenance=Provenance(recipe="lomo"))
    assert "/datasets/org/bench/commit/" in url
    first = hub.files("org/bench")
    assert [_plain(p) for p in first if p.startswith("data/")] == ["data/train-00000-of-00001.parquet"]
    assert '"org/bench"' in first["README.md"].decode()  # the card's load snippet names the repo

    # the same data in more shards: the old shard must not stay next to the new ones
    folder = publish.write_folder(data, tmp_path / "again", max_shard_bytes=300, repo_id="org/bench")
    publish.push_folder(folder, "org/bench", token=FAKE_TOKEN, endpoint=hub.url)
    shards = sorted(p for p in hub.files("org/bench") if p.startswith("data/"))
    assert shards == sorted(f"data/{p.name}" for p in (folder / "data").iterdir()) and len(shards) > 1


def test_provenance_is_kept_beside_the_data(tmp_path):
    provenance = Provenance.from_recipe(type("R", (), {"name": "lomo", "description": "d"})(), [Probe()])
    out = publish.write_folder(lomo_records(), tmp_path / "ds", provenance=provenance)
    again = publish.read_provenance(out)
    assert again == provenance and again.steps[0].settings == {"device": "auto", "verify": True}
    publish.write_folder(lomo_records(), out)  # rewritten without provenance: no stale file
    assert publish.read_provenance(out) is None


@pytest.fixture
def online_no_xet(monkeypatch):
    """In this process: talk plain HTTP + LFS (no Xet) even if the environment says offline."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_transient_commit_errors_are_retried(hub, tmp_path, online_no_xet):
    folder = publish.write_folder(lomo_records(), tmp_path / "ds")
    hub.fail_next("commit", 2, status=503)
    waits = []
    url = publish.push_folder(folder, "org/retry", token=FAKE_TOKEN, endpoint=hub.url,
                              retry=publish.Retry(attempts=4, base_delay=0.5), sleep=waits.append)
    assert "/datasets/org/retry/commit/" in url
    commits = [r for r in hub.requests if "/commit/" in r]
    assert commits == ["POST /api/datasets/org/retry/commit/main -> 503"] * 2 + ["POST /api/datasets/org/retry/commit/main -> 200"]
    assert waits == [0.5, 1.0]  # bounded exponential backoff
    assert {_plain(f) for f in hub.files("org/retry")} >= {"README.md", "stats.png", "data/train-00000-of-00001.parquet"}


def test_final_upload_error_is_clear_and_local_output_intact(hub, tmp_path, monkeypatch, caplog, online_no_xet):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    folder = publish.write_folder(lomo_records(), tmp_path / "ds")
    before = _tree_digest(folder)
    hub.fail_next("commit", 10, status=500)
    caplog.set_level("DEBUG")
    with pytest.raises(publish.PublishError) as err:
        publish.push_folder(folder, "org/down", endpoint=hub.url,
                            retry=publish.Retry(attempts=3, base_delay=0.0), sleep=lambda s: None)
    message = str(err.value)
    assert "failed after 3 attempts" in message and "HTTP 500" in message
    assert "is complete and unchanged" in message and f"lomo-datasets publish {folder} --repo org/down" in message
    assert sum("/commit/" in r for r in hub.requests) == 3
    assert _tree_digest(folder) == before
    assert FAKE_TOKEN not in message and FAKE_TOKEN not in caplog.text
    assert f"Bearer {FAKE_TOKEN}" in hub.auth_seen  # the token came from the environment

    # a non-transient error is not retried
    hub.requests.clear()
    hub.fail_next("create", 1, status=403)
    with pytest.raises(publish.PublishError, match="HTTP 403.*write access"):
        publish.push_folder(folder, "org/forbidden", endpoint=hub.url,
                            retry=publish.Retry(attempts=3, base_delay=0.0), sleep=lambda s: None)
    assert sum("/repos/create" in r for r in hub.requests) == 1

    # a server that is not there: connection errors are transient, retried, then reported
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(publish.PublishError, match="failed after 2 attempts: ConnectError"):
        publish.push_folder(folder, "org/away", endpoint=f"http://127.0.0.1:{closed_port}",
                            retry=publish.Retry(attempts=2, base_delay=0.0), sleep=lambda s: None)
    assert _tree_digest(folder) == before


def test_publish_cli_rejects_a_non_dataset_folder_and_bad_repo_ids(tmp_path, capsys):
    from lomo_datasets import cli

    assert cli.main(["publish", str(tmp_path), "--repo", "org/x"]) == 2
    assert "not a dataset folder" in capsys.readouterr().err
    folder = publish.write_folder(lomo_records(), tmp_path / "ds")
    assert cli.main(["publish", str(folder), "--repo", "just-a-name"]) == 2
    assert "ORG/NAME" in capsys.readouterr().err
