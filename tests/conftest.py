"""Session-wide fixtures: generated test media (made once per session, cached on disk).

Media is made by the tests: PyAV frames, espeak-ng speech (English, and Mandarin through
pypinyin + the ``cmn-latn-pinyin`` voice). Files are cached under ``$LOMO_TEST_MEDIA``
(default: a folder in the system temp dir) so repeated runs and CI reuse them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests import media as M


@pytest.fixture(scope="session")
def media_dir() -> Path:
    root = Path(os.environ.get("LOMO_TEST_MEDIA") or Path(tempfile.gettempdir()) / "lomo-test-media")
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def test_media(media_dir) -> M.TestMedia:
    """Good and bad videos; see ``tests/media.py`` for what each one is."""
    return M.make_all(media_dir)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep derived model files (joined whisper-base, converted models) in one per-machine
    cache that survives sessions, but never in the user's home during CI."""
    os.environ.setdefault("LOMO_DATASETS_CACHE", str(Path(tempfile.gettempdir()) / "lomo-datasets-cache"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-datasets-cache")))
    yield
