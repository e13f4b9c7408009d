"""The work dir's one store (lomo_datasets/execution/store.py): both executors' files are
written atomically and recorded with size and SHA-256, and anything that differs from its
record is recomputed, never reused."""

from __future__ import annotations

import json

import pyarrow as pa
from datasets import Dataset

from lomo_datasets.execution import store


def test_saved_datasets_are_reused_only_while_their_record_holds(tmp_path, caplog):
    folder = tmp_path / "chunk"
    store.save(Dataset.from_dict({"x": [1, 2, 3]}), folder)
    record = json.loads((folder / store.DONE).read_text())
    assert record["rows"] == {"data": 3}
    assert all(set(f) == {"size", "sha256"} and len(f["sha256"]) == 64 for f in record["files"]["data"].values())
    (found,) = store.reuse(folder, ("data",))
    assert found["x"] == [1, 2, 3]

    arrow = next(folder.glob("data/*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:-8])  # truncated after it was written
    with caplog.at_level("WARNING", logger="lomo_datasets.execution.store"):
        assert store.reuse(folder, ("data",)) is None
    assert f"{arrow} has {arrow.stat().st_size} bytes" in caplog.text and "recomputing chunk" in caplog.text
    assert not (folder / store.DONE).exists()  # recomputed next time, not checked again


def test_parts_are_named_by_their_record_and_damaged_ones_go(tmp_path, caplog):
    table = pa.table({"__row": [4, 5], "y": [1.0, 2.0]})
    name = store.write_part(table, tmp_path, [4, 5])
    match = store.PART.fullmatch(name)
    assert match and int(match["size"]) == (tmp_path / name).stat().st_size
    assert store.parts(tmp_path) == [tmp_path / name]
    # a retried task rewrites the same rows: one file of those rows stays
    again = store.write_part(pa.table({"__row": [4, 5], "y": [1.0, 3.0]}), tmp_path, [5, 4])
    assert [p.name for p in store.parts(tmp_path)] == [again]

    data = bytearray((tmp_path / again).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / again).write_bytes(bytes(data))
    (tmp_path / "part-0123456789abcdef01234567-0123456789abcdef.parquet").write_bytes(b"older")  # an older version's name
    with caplog.at_level("WARNING", logger="lomo_datasets.execution.store"):
        assert store.parts(tmp_path) == []
    assert "checksum differs" in caplog.text and "named by an older version" in caplog.text
    assert not list(tmp_path.glob("part-*"))  # the executor's own damaged files are removed
