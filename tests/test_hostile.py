"""Issue 22, one test per class: no file outside the output touched, no file served that is not
the dataset's, every input accounted for, and every hostile input or setting answered in one line.

Each case (``tests/hostile.py``) runs the real ``lomo-datasets`` command in a subprocess inside a
temporary folder that also holds a canary tree; every test asserts the exit status, the one
``lomo-datasets:`` line (no traceback) and that no canary file changed.
"""

from __future__ import annotations

import errno
import json

import pytest

from tests import hostile as H

PREFIX = "lomo-datasets: error: "


def one_line(r: H.Result, status: int, *fragments: str) -> str:
    assert r.status == status, (r.status, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("lomo-datasets: ")]
    assert len(lines) == 1, r.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert r.outside_changed is False
    return lines[0]


# -- security: the folder marker -----------------------------------------------------------------


@pytest.mark.parametrize("case, fragments", [
    (H.marker_escape, ("lists '../canary/victim.txt', a path outside", "restore the marker")),
    (H.marker_symlink, (".lomo-lock is a link", "remove the link")),
    (H.marker_changed_file, ("README.md was changed after lomo-datasets wrote it", "move that file away")),
])
def test_only_files_it_wrote_are_replaced_or_deleted(tmp_path, test_media, case, fragments):
    r = case(tmp_path, test_media)
    one_line(r, 2, *fragments)
    if case is H.marker_changed_file:
        assert r.facts["readme"].startswith("my own notes")  # left alone
    if case is H.marker_symlink:
        assert r.facts["readme_is_link"]


# -- security: view --serve and the page ---------------------------------------------------------


def test_serve_sends_only_the_datasets_videos_to_loopback_hosts(tmp_path, test_media):
    for sub in "abc":
        (tmp_path / sub).mkdir()
    foreign = H.serve_foreign_file(tmp_path / "a", test_media)
    assert foreign.status == 0 and foreign.outside_changed is False, foreign.stderr
    assert foreign.facts["leaked"] == [] and set(foreign.facts["served"].values()) == {404}
    assert "not served: 3 videos outside" in foreign.stdout and "--video-root" in foreign.stdout

    rooted = H.serve_video_root(tmp_path / "b", test_media)
    assert rooted.status == 0 and rooted.outside_changed is False, rooted.stderr
    assert rooted.facts["served"] == {0: 200, 1: 404, 2: 404}  # the video; not the link to /etc/passwd, not the .txt

    odd = H.serve_host_and_range(tmp_path / "c", test_media)
    assert odd.status == 0 and "Traceback" not in odd.stderr, odd.stderr
    assert odd.facts["statuses"] == {
        "Host evil.example": 403, "Host localhost": 200, "Range 0-99": 206, "Range 5000 digits": 416,
        "Range 9-3": 416, "Range two": 416, "Range junk": 416,
    }


def test_page_data_cannot_end_or_comment_out_its_script(tmp_path, test_media):
    r = H.page_script_break(tmp_path, test_media)
    assert r.status == 0 and r.outside_changed is False, r.stderr
    assert r.facts["bad"] == [] and r.facts["title"] == "<!--<script>"


# -- integrity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case, fragment", [
    (H.audit_locked, "is being written by another lomo-datasets run"),
    (H.publish_locked, "is being written by another lomo-datasets run"),
    (H.publish_pending, "has a publish that a run committed but did not finish"),
])
def test_audit_and_publish_take_the_folder_lock(tmp_path, test_media, case, fragment):
    r = case(tmp_path, test_media)
    one_line(r, 2, fragment)
    if case is H.audit_locked:
        assert not r.facts["audit_rewritten"]


def test_a_video_replaced_in_place_is_probed_again(tmp_path, test_media):
    r = H.replaced_video(tmp_path, test_media)
    assert r.status == 0 and r.outside_changed is False, r.stderr
    assert abs(r.facts["after"] - r.facts["truth"]) < 0.05, r.said


def test_every_row_failed_is_nothing_survived(tmp_path, test_media):
    r = H.all_failed(tmp_path, test_media)
    one_line(r, 1, "no row survived out of 20 inputs")
    assert "NOTHING SURVIVED: 20 rows, all with errors," in r.stdout


def test_every_input_is_kept_failed_or_dropped_once(tmp_path, test_media):
    """livecc-pretrain: speech, a silent video (no speech: no clip) and a video without audio
    (fails at asr); the LM-loss band drops speech clips. Each input lands somewhere, a failed row
    is never listed as dropped, and every dropped row carries the value and band that dropped it."""
    r = H.accounting(tmp_path, test_media)
    assert r.status in (0, 1) and r.outside_changed is False, r.stderr[-3000:]
    assert r.facts["missing"] == [] and r.facts["failed_dropped"] == [], r.said
    assert r.facts["no_value"] == [], r.said
    assert r.facts["where"]["silent"] == ["failed"] and r.facts["where"]["no_audio"] == ["failed"]
    for row in r.facts["dropped"]:
        assert row["drop_column"] and row["drop_band"].startswith("[") and row["drop_value"] is not None
    assert "**Accounting.** 4 input videos" in r.facts["card"]


def test_a_broken_accounting_fails_the_run_loudly():
    from datasets import Dataset

    from lomo_datasets.publish import accounting

    data = Dataset.from_list([{"video_id": "a", "errors": []}, {"video_id": "a", "errors": []}])
    with pytest.raises(accounting.AccountingError, match=r"1 of 2 inputs are in none.*\(b\).*1 rows are counted twice"):
        accounting.check(["a", "b"], data, None)
    ledger = accounting.check(["a", "b"], data.select([0]), Dataset.from_list([{"video_id": "b", "errors": [{"stage": "x", "error": "E"}]}]))
    assert (ledger.kept, ledger.failed, ledger.dropped) == (1, 1, 0)


# -- bounds and messages -------------------------------------------------------------------------


def test_an_unreachable_ray_address_fails_in_bounded_time(tmp_path, test_media):
    pytest.importorskip("ray")
    r = H.ray_unreachable(tmp_path, test_media)
    one_line(r, 2, "--ray-address 127.0.0.1:1: cannot connect within 10 s", "ray start --head")
    assert r.facts["seconds"] < 60
    assert not (tmp_path / "out").exists()


def test_num_proc_is_capped_at_rows_and_cores(tmp_path, test_media):
    r = H.num_proc_huge(tmp_path, test_media)
    assert r.status == 0 and r.outside_changed is False, r.stderr[-3000:]
    assert "probe: --num-proc 1000 capped at 2 workers (2 rows" in r.stderr


@pytest.mark.parametrize("case, fragments", [
    (H.videos_dev_zero, ("--videos /dev/zero: a character device, not a folder or a file",)),
    (H.manifest_long_line, ("list.txt:1: a line longer than 1048576 bytes",)),
])
def test_inputs_that_are_not_files_or_have_endless_lines_are_refused(tmp_path, test_media, case, fragments):
    one_line(case(tmp_path, test_media), 2, *fragments)


@pytest.mark.parametrize("case, status, fragments", [
    (H.deep_yaml, 2, ("deep.yaml: nested too deeply", "fix the file")),
    (H.bad_port, 2, ("--port 99999: use a port from 1 to 65535",)),
    (H.corrupt_parquet, 2, (".parquet: not a readable Parquet file", "rerun `lomo-datasets run`")),
    (H.step_folder_is_file, 2, ("is a file where lomo-datasets keeps the 'probe' step's output", "move it away")),
])
def test_hostile_files_and_settings_are_one_line_naming_the_file_and_the_fix(tmp_path, test_media, case, status, fragments):
    r = case(tmp_path, test_media)
    one_line(r, status, *fragments)
    if case is H.corrupt_parquet:  # view says the same
        view = r.facts["view"]
        assert view.returncode == 2 and "not a readable Parquet file" in view.stderr and "Traceback" not in view.stderr
    if case is H.step_folder_is_file:
        assert r.facts["step_still_file"]


def test_a_damaged_staging_journal_recovers_by_itself(tmp_path, test_media):
    r = H.damaged_commit(tmp_path, test_media)
    assert r.status == 0 and r.facts["again"] == 0 and not r.facts["staging_left"], r.stderr[-3000:]
    assert "commit.json is damaged; discarding the unfinished publish" in r.stderr
    assert r.outside_changed is False


def test_disk_full_names_the_folder_that_is_full(tmp_path):
    """(No CLI case: a full disk cannot be made here without root.) The line names the file and
    whether it is in --out or the work dir."""
    from lomo_datasets.core.errors import explain

    out, work = tmp_path / "out", tmp_path / "work"
    full_out = OSError(errno.ENOSPC, "No space left on device", str(out / "data" / "train.parquet"))
    message, status = explain(full_out, work_dir=str(work), out=str(out))
    assert status == 1 and f"in --out {out})" in message
    full_work = OSError(errno.ENOSPC, "No space left on device", str(work / "00-probe" / "data"))
    assert f"in the work dir {work})" in explain(full_work, work_dir=str(work), out=str(out))[0]


def test_disk_full_on_out_names_out_not_the_work_dir(tmp_path, test_media):
    """--out on a full 2 MB tmpfs (a private mount, as tests/test_cli_errors.py makes one), the
    work dir elsewhere: the line names --out."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare and mount for a small private tmpfs")
    folder = H.videos(tmp_path, test_media, "english")
    disk, work = tmp_path / "disk", tmp_path / "work"
    disk.mkdir()
    with H.Watch(tmp_path) as watch:
        cli = f"{sys.executable} -m lomo_datasets.cli run probe --videos {folder} --out {disk}/out --work-dir {work}"
        script = (f"mount -t tmpfs -o size=2m tmpfs {disk} || exit 77\ncat /dev/zero > {disk}/filler 2>/dev/null\n"
                  f"{cli} > {tmp_path}/run.out 2> {tmp_path}/run.err; echo $? > {tmp_path}/run.rc\n")
        done = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=H.env(), timeout=300, capture_output=True, text=True)
    if done.returncode == 77 or not (tmp_path / "run.rc").exists():
        pytest.skip(f"cannot mount a private tmpfs here: {done.stderr.strip()}")
    r = H.Result(int((tmp_path / "run.rc").read_text()), "", watch.changed, (tmp_path / "run.err").read_text())
    line = one_line(r, 1, "disk full while writing")
    where = line.split("free some space")[0]  # the file in --out, or --out itself when no file is named
    assert f"--out {disk}/out" in where and "work dir" not in where, line
