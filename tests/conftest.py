"""Session-wide fixtures: generated test media (made once per session, cached on disk).

Media is made by the tests: PyAV frames, espeak-ng speech (English, and Mandarin through
pypinyin + the ``cmn-latn-pinyin`` voice), Mandarin in a real human voice (gcin-voice's recorded
syllables, stitched), once per test run into that run's own temporary
folder (pytest's ``tmp_path_factory``; about 10 s), so two checkouts or two runs on one machine
never share or overwrite each other's files. ``$LOMO_TEST_MEDIA`` names a folder to keep and
reuse instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# The datasets cache is the user's default one: a rewritten folder must load fresh without
# resetting it (tests/test_outputs.py loads one folder before and after a rewrite).
os.environ.setdefault("LOMO_DATASETS_CACHE", str(Path(tempfile.gettempdir()) / "lomo-datasets-cache"))

import pytest  # noqa: E402

from tests import media as M  # noqa: E402


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    if os.environ.get("LOMO_TEST_MEDIA"):
        root = Path(os.environ["LOMO_TEST_MEDIA"])
        root.mkdir(parents=True, exist_ok=True)
        return root
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def test_media(media_dir) -> M.TestMedia:
    """Good and bad videos; see ``tests/media.py`` for what each one is."""
    return M.make_all(media_dir)
