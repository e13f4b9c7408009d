"""File checksums: one chunked SHA-256 for every place that records or checks a file (model
joins, chunk markers, part files, the output marker, shard names)."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

BLOCK = 1 << 20


def update_sha256(digest: "hashlib._Hash", path: str | os.PathLike) -> "hashlib._Hash":
    """``digest`` updated with the bytes of ``path``, read in 1 MiB blocks (never whole)."""
    with open(path, "rb") as fh:
        return update_sha256_stream(digest, fh)


def update_sha256_stream(digest: "hashlib._Hash", fh: BinaryIO) -> "hashlib._Hash":
    """``digest`` updated with what is left of the open binary file ``fh`` (a local file, or an
    fsspec object in object storage), in 1 MiB blocks."""
    for block in iter(lambda: fh.read(BLOCK), b""):
        digest.update(block)
    return digest


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of the file at ``path``."""
    return update_sha256(hashlib.sha256(), path).hexdigest()
