"""`lomo-datasets demo` is `sample` + `run RECIPE --embedded` as the README shows them: it
prints those commands first, running them gives the same rows, and a rerun says what it reused.
(The probe recipe keeps this fast; `make demo` runs lomo, checked in test_lomo_recipe.py.)"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from datasets import load_dataset

from lomo_datasets.cli import demo_commands
from lomo_datasets.execution.recipes import get_recipe

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd=None):
    done = subprocess.run([sys.executable, "-m", "lomo_datasets.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_lomo_demo_is_the_readme_run_command_without_extra_settings():
    assert get_recipe("lomo").demo_settings == {}
    lines = demo_commands("lomo", Path("lomo-demo"), {})
    assert lines == [
        "demo: the same as these two commands:",
        "  lomo-datasets sample lomo-demo/videos",
        "  lomo-datasets run lomo --videos lomo-demo/videos/manifest.jsonl --out lomo-demo/dataset --embedded",
    ]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for line in lines[1:]:
        assert line.strip() in readme, line


def test_demo_settings_and_user_sets_are_named_as_set_options():
    livecc = get_recipe("livecc-sft").demo_settings
    lines = demo_commands("livecc-sft", Path("d"), {**livecc, "prompt": {"model": "embedded:smollm2-135m"}}, 2, livecc)
    assert lines[2] == ("  lomo-datasets run livecc-sft --videos d/videos/manifest.jsonl --out d/dataset --embedded --num-proc 2 "
                        "--set clip.min_clip_sec=3.0 --set clip.max_clip_sec=20.0 --set prompt.model=embedded:smollm2-135m")
    assert lines[3] == "demo: recipe livecc-sft's demo settings (for the 10-20 s sample videos): clip.min_clip_sec=3.0, clip.max_clip_sec=20.0"


def test_demo_equals_its_printed_commands_and_a_rerun_says_what_it_reused(tmp_path):
    demo = tmp_path / "demo"
    printed = _cli("demo", "--recipe", "probe", "--out", demo)
    head = printed.splitlines()[:3]
    assert head[0] == "demo: the same as these two commands:"
    assert "wall time: " in printed and "reused from the work dir" not in printed

    # The two printed commands, run by hand in another folder, give the same rows.
    by_hand = tmp_path / "by-hand"
    by_hand.mkdir()
    for line in head[1:]:
        argv = shlex.split(line.replace(str(demo), "demo"))
        assert argv[0] == "lomo-datasets"
        out = _cli(*argv[1:], cwd=by_hand)
        if argv[1] == "sample":  # sample says which manifest it wrote, the input of the run
            manifest = Path("demo") / "videos" / "manifest.jsonl"
            assert f"manifest: {manifest} (4 videos" in out
    ours = load_dataset(str(demo / "dataset"), split="train").remove_columns("video").to_list()
    theirs = load_dataset(str(by_hand / "demo" / "dataset"), split="train").remove_columns("video").to_list()
    assert ours == theirs and len(ours) == 4

    again = _cli("demo", "--recipe", "probe", "--out", demo)
    assert "reused from the work dir (every file's size and SHA-256 checked): probe 4 rows" in again
    assert re.search(r"^wall time: \d+\.\ds$", again, re.M)
