"""The hostile table: each case of issue 22 run with the real ``lomo-datasets`` command, printed as
``case | exit | first stderr/summary line | files outside the output changed``.

Every case works in a fresh temporary folder that also holds a *canary* tree (files the tool must
never touch); the last column says whether any canary file changed. Media comes from
``tests/media.py`` (espeak-ng speech, PyAV frames). The livecc case needs the embedded models
(about 2 minutes on 2 cores); ``--skip-models`` leaves it out.

Usage::

    python benchmarks/bench_hostile.py [--skip-models] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import hostile as H  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-models", action="store_true", help="leave out the cases that run embedded models")
    parser.add_argument("--only", nargs="*", help="run only these cases")
    args = parser.parse_args()
    media = H.media()
    print("| case | exit | what it said | outside changed | s |")
    print("|---|---|---|---|---|")
    for name, case in H.CASES.items():
        if args.only and name not in args.only:
            continue
        if args.skip_models and name in H.MODEL_CASES:
            continue
        with tempfile.TemporaryDirectory(prefix="lomo-hostile-") as tmp:
            started = time.perf_counter()
            try:
                result = case(Path(tmp), media)
            except Exception as exc:  # the table shows a case that could not even run
                result = H.Result(None, f"(case failed: {type(exc).__name__}: {exc})", None)
            line = result.said.replace("|", "\\|")
            print(f"| {name} | {result.status} | {line[:300]} | {result.outside_changed} | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
