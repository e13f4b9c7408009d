"""The download stage with real yt-dlp against a local HTTP server on 127.0.0.1 (offline), and
ingest of platform ids and URLs."""

from __future__ import annotations

import json
import logging
import os
import stat
import shutil

import pytest
from datasets import Dataset, load_dataset

from lomo_datasets.core import features as F
from lomo_datasets.media import decode as media
from lomo_datasets.processors.download import Download, cookie_file
from lomo_datasets.processors.ingest import ingest, platform_reference
from lomo_datasets.execution.recipes import run_recipe
from lomo_datasets.core.stage import SettingError, apply_stage
from tests.media_server import MediaServer


@pytest.fixture()
def server(test_media, monkeypatch):
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    srv = MediaServer({"english.mp4": test_media.english, "silent.mp4": test_media.silent}).start()
    yield srv
    srv.stop()


def _rows(*videos, **meta):
    rows = [
        {"video_id": vid, "video": video, "source": "url", "title": None, "category": None, "language": None, "errors": []}
        for vid, video in videos
    ]
    for row in rows:
        row.update(meta.get(row["video_id"], {}))
    return Dataset.from_list(rows, features=F.VIDEO)


def _fast(tmp_path, **kwargs) -> Download:
    settings = dict(output_dir=str(tmp_path / "downloads"), attempts=2, backoff=0.01, retries=1, socket_timeout=5)
    settings.update(kwargs)
    return Download(**settings)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("BV1xx411c7mD", ("https://www.bilibili.com/video/BV1xx411c7mD", "bilibili", "BV1xx411c7mD")),
        ("dQw4w9WgXcQ", ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", "youtube", "dQw4w9WgXcQ")),
        ("https://www.bilibili.com/video/BV1GJ411x7h7/?p=2", ("https://www.bilibili.com/video/BV1GJ411x7h7/?p=2", "bilibili", "BV1GJ411x7h7_p2")),
        ("https://youtu.be/dQw4w9WgXcQ?t=3", ("https://youtu.be/dQw4w9WgXcQ?t=3", "youtube", "dQw4w9WgXcQ")),
        ("https://www.youtube.com/shorts/abcdefghijk", ("https://www.youtube.com/shorts/abcdefghijk", "youtube", "abcdefghijk")),
        ("https://example.org/a/clip.mp4", ("https://example.org/a/clip.mp4", "url", None)),
        ("clip.mp4", None),
        ("some/dir/file", None),
    ],
)
def test_platform_references(value, expected):
    assert platform_reference(value) == expected


def test_ingest_turns_ids_and_urls_into_records(tmp_path, test_media):
    shutil.copy(test_media.english, tmp_path / "abcdefghijk")  # a local file that looks like a YouTube id
    listing = tmp_path / "list.txt"
    listing.write_text(
        "BV1xx411c7mD\n"
        "dQw4w9WgXcQ\n"
        "https://m.bilibili.com/video/BV1xx411c7mD\n"  # the same video again
        "http://127.0.0.1:9/videos/my%20clip.mp4\n"
        "abcdefghijk\n"
    )
    rows = ingest(listing).to_list()
    assert [(r["video_id"], r["source"]) for r in rows] == [
        ("BV1xx411c7mD", "bilibili"),
        ("dQw4w9WgXcQ", "youtube"),
        ("BV1xx411c7mD-dup2", "bilibili"),
        ("my_20clip", "url"),
        ("abcdefghijk", "local"),
    ]
    assert rows[0]["video"] == "https://www.bilibili.com/video/BV1xx411c7mD" and rows[0]["errors"] == []
    assert "already listed as 'BV1xx411c7mD'" in rows[2]["errors"][0]["error"]
    assert rows[4]["video"] == str(tmp_path / "abcdefghijk")


def test_download_good_404_and_truncated(server, tmp_path, test_media):
    stage = _fast(tmp_path)
    ds = _rows(
        ("english", server.url("english.mp4")),
        ("missing", server.url("missing.mp4")),
        ("cut", server.url("english.mp4", kind="truncated")),
        ("local", str(test_media.silent)),
        ("titled", server.url("silent.mp4")),
        titled={"title": "From the manifest", "category": "Sports"},
    )
    out = {r["video_id"]: r for r in apply_stage(ds, stage, load_from_cache_file=False).to_list()}

    good = out["english"]
    assert good["errors"] == [] and good["video"] == str(tmp_path / "downloads" / "english.mp4")
    assert open(good["video"], "rb").read() == test_media.english.read_bytes()
    assert media.probe(good["video"]).has_audio
    assert good["title"] == "english"  # yt-dlp's generic extractor names a direct link by its file
    assert out["titled"]["title"] == "From the manifest" and out["titled"]["category"] == "Sports"

    missing = out["missing"]
    assert missing["video"] == server.url("missing.mp4")  # the failed row keeps its URL
    assert [e["stage"] for e in missing["errors"]] == ["download"]
    assert "404" in missing["errors"][0]["error"] and "DownloadFailed" in missing["errors"][0]["error"]
    assert server.hits("missing.mp4") == 1  # a 404 is not retried

    cut = out["cut"]
    assert cut["video"] == server.url("english.mp4", kind="truncated")
    assert "more expected" in cut["errors"][0]["error"] and "attempt 2 of 2" in cut["errors"][0]["error"]
    assert server.hits("/truncated/") <= 2 * (1 + 1) * 2  # attempts x (1 + retries) x (probe + download)
    assert not (tmp_path / "downloads" / "cut.mp4").exists()

    assert out["local"]["video"] == str(test_media.silent) and out["local"]["errors"] == []

    # A rerun fetches nothing that is already there.
    before = server.hits("/media/english.mp4")
    again = apply_stage(ds.select([0]), stage, load_from_cache_file=False)[0]
    assert again["video"] == good["video"] and again["title"] == "english"
    assert server.hits("/media/english.mp4") == before


def test_cookies_reach_the_server_and_never_the_rows_or_logs(server, tmp_path, monkeypatch, caplog):
    secret = "s3cr3t-sessdata-value-1234"
    monkeypatch.setenv("SESSDATA", secret)
    caplog.set_level(logging.DEBUG)
    # The environment cookie, sent for the domain set here (Bilibili's in real runs).
    stage = _fast(tmp_path, cookie_domain="127.0.0.1")
    row = apply_stage(_rows(("english", server.url("english.mp4"))), stage, load_from_cache_file=False)[0]
    assert row["errors"] == []
    assert any(f"SESSDATA={secret}" in cookie for _, _, cookie in server.requests)
    assert secret not in json.dumps(row) and secret not in caplog.text
    assert secret not in json.dumps(stage.settings()) and secret not in stage.fingerprint()
    assert not list((tmp_path / "downloads").glob("*cookie*"))

    # The temporary cookies file is private while it exists and gone afterwards.
    with cookie_file(None, "SESSDATA", ".bilibili.com") as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        line = open(path, encoding="utf-8").read().splitlines()[-1]
        assert line.split("\t")[0] == ".bilibili.com" and line.endswith(f"SESSDATA\t{secret}")
    assert not os.path.exists(path)

    # A cookies.txt file is passed as is.
    jar = tmp_path / "cookies.txt"
    jar.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tfrom-file\n")
    monkeypatch.delenv("SESSDATA")
    server.requests.clear()
    stage = _fast(tmp_path / "second", cookiefile=str(jar))
    assert apply_stage(_rows(("silent", server.url("silent.mp4"))), stage, load_from_cache_file=False)[0]["errors"] == []
    assert any("session=from-file" in cookie for _, _, cookie in server.requests)


def test_bad_settings_say_how_to_fix(tmp_path):
    with pytest.raises(SettingError, match="720 or 1080"):
        Download(resolution=700)
    with pytest.raises(SettingError, match="cookies.txt"):
        Download(cookiefile=str(tmp_path / "nope.txt"))
    with pytest.raises(SettingError, match="1 to 10"):
        Download(attempts=0)
    assert "[height<=?1080]" in Download(resolution=1080).format_spec()
    assert Download(format="worst").format_spec() == "worst"


def test_recipe_downloads_a_url_list_first(server, tmp_path):
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join([server.url("english.mp4"), server.url("gone.mp4"), server.url("silent.mp4")]) + "\n")
    out = tmp_path / "out"
    summary = run_recipe(
        "probe", listing, out, overrides=["download.attempts=1", "download.retries=0", "download.backoff=0"]
    )
    assert summary.rows == 3 and summary.failed == 1 and summary.errors_by_stage == {"download": 1}
    rows = {r["video_id"]: r for r in load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))}
    assert rows["english"]["duration"] > 2 and rows["english"]["width"] == 320
    assert rows["english"]["video"].startswith(str(out / ".lomo-work" / "downloads"))
    assert rows["silent"]["has_audio"] is True and rows["gone"]["duration"] is None
    failed = [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines()]
    assert [(f["video_id"], f["video"]) for f in failed] == [("gone", server.url("gone.mp4"))]
    assert failed[0]["errors"][0]["stage"] == "download" and "404" in failed[0]["errors"][0]["error"]


def test_ids_with_path_separators_stay_inside_the_download_folder(server, tmp_path):
    stage = _fast(tmp_path)
    got = stage.download(server.url("silent.mp4"), "../../evil/x")
    assert got["video"] == str(tmp_path / "downloads" / "evil_x.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]
