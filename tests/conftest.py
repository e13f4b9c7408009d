"""Session-wide fixtures: generated test media (made once per session, cached on disk).

Media is made by the tests: PyAV frames, espeak-ng speech (English, and Mandarin through
pypinyin + the ``cmn-latn-pinyin`` voice). Files are cached under ``$LOMO_TEST_MEDIA``
(default: a folder in the system temp dir) so repeated runs and CI reuse them.
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
def media_dir() -> Path:
    root = Path(os.environ.get("LOMO_TEST_MEDIA") or Path(tempfile.gettempdir()) / "lomo-test-media")
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def test_media(media_dir) -> M.TestMedia:
    """Good and bad videos; see ``tests/media.py`` for what each one is."""
    return M.make_all(media_dir)
