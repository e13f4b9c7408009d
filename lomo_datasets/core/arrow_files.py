"""Datasets built a record batch at a time into an Arrow file that ``Dataset.from_file`` maps,
so the process that builds one holds a batch, not the rows (ingest, the result assembly)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetInfo, Features


def temp_folder(name: str) -> Path:
    """A new folder in the system's temp folder (``TMPDIR``), removed when the process exits."""
    import atexit

    folder = Path(tempfile.mkdtemp(prefix=f"lomo-{name}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


class ArrowFileWriter:
    """Arrow tables appended to one Arrow stream file (the format ``Dataset.from_file`` maps),
    cast to ``features``; ``dataset()`` maps it once written. Small tables (a Ray block is one
    batch group) are gathered into record batches of about ``batch_rows`` rows: a mapped table of
    thousands of tiny chunks costs the driver memory per chunk and column."""

    def __init__(self, path: Path, features: Features, batch_rows: int = 4096):
        import pyarrow as pa

        self.path = path
        self.features = features
        self.schema = features.arrow_schema
        self.rows = 0
        self.batch_rows = batch_rows
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)

    def write(self, table: Any) -> None:
        if table.num_rows:
            self._pending.append(table.select(list(self.features)).cast(self.schema))
            self._pending_rows += table.num_rows
            self.rows += table.num_rows
            if self._pending_rows >= self.batch_rows:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending).combine_chunks())
            self._pending, self._pending_rows = [], 0

    def dataset(self) -> Dataset:
        self._flush()
        self._writer.close()
        self._sink.close()
        if not self.rows:  # as before: an empty dataset of these features, held in memory
            return Dataset.from_dict({k: [] for k in self.features}, features=self.features)
        return Dataset.from_file(str(self.path), info=DatasetInfo(features=self.features))
