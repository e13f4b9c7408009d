"""The one result assembly (execution/result.py): Ray's marked part files assembled one part at a
time give what sorting all parts together gave (interleaving parts, fan-out rows, filters, load
and seconds marks), and the input blocks the driver writes for Ray's tasks read back as written."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, Value

from lomo_datasets.core.stage import Filter
from lomo_datasets.execution import store
from lomo_datasets.execution.pipeline import ROW
from lomo_datasets.execution.result import (
    DROPPED, KEPT, LOADS, PID, SECS, Assembly, BlockAssembly, failed_rows, join_dropped, runs_of_parts, scratch_folder,
    write_failed_report,
)


def test_runs_of_parts_group_only_interleaving_parts():
    spans = [("c", 32, 47), ("a", 0, 15), ("b", 16, 31), ("d", 48, 63)]
    assert runs_of_parts(spans) == [["a"], ["b"], ["c"], ["d"]]
    # a resumed run with another block size: part "x" holds groups 0 and 2, "y" group 1
    assert runs_of_parts([("x", 0, 47), ("y", 16, 31), ("z", 48, 50)]) == [["x", "y"], ["z"]]
    assert runs_of_parts([]) == []


def _features():
    before = Features({"text": Value("string")})
    after = Features({"text": Value("string"), "score": Value("float64"), "errors": [{"stage": Value("string"), "error": Value("string")}]})
    return [before, after, after]


def _part(rows, dropped, score, fan=1):
    """A marked block as StageOp writes it: step 0 a model stage, step 1 a filter."""
    out = {k: [] for k in ("text", "score", "errors", ROW, DROPPED, PID.format(0), LOADS.format(0), SECS.format(0), SECS.format(1))}
    for r, d, s in zip(rows, dropped, score):
        for f in range(fan):
            out["text"].append(f"row {r}.{f}")
            out["score"].append(s)
            out["errors"].append([{"stage": "toy", "error": "ValueError: bad"}] if r % 5 == 0 else [])
            out[ROW].append(r)
            out[DROPPED].append(d)
            out[PID.format(0)].append(100 + r % 2)
            out[LOADS.format(0)].append(1)
            out[SECS.format(0)].append(0.5)
            out[SECS.format(1)].append(0.25)
    schema = Features({**_features()[-1], ROW: Value("int64"), DROPPED: Value("int32"), PID.format(0): Value("int64"),
                       LOADS.format(0): Value("int64"), SECS.format(0): Value("float64"), SECS.format(1): Value("float64")})
    table = pa.Table.from_pydict(out, schema=schema.arrow_schema)
    # the rows a filter marked travel behind the others in a block: not in row order
    order = sorted(range(len(out[ROW])), key=lambda i: out[DROPPED][i] != KEPT)
    return table.take(pa.array(order, pa.int64()))


def _reference(tables, steps, features):
    """The assembly before: every part in one table, one stable sort, then filter."""
    from datasets import DatasetInfo
    from datasets.table import InMemoryTable

    table = pa.concat_tables(tables, promote_options="default")

    def rows(where, feats):
        part = table.filter(where)
        part = part.take(pc.sort_indices(part, sort_keys=[(ROW, "ascending")]))
        return Dataset(InMemoryTable(part.select(list(feats)).cast(feats.arrow_schema)), info=DatasetInfo(features=feats))

    data = rows(pc.equal(table[DROPPED], KEPT), features[-1])
    dropped = join_dropped([steps[1].dropped_rows(rows(pc.equal(table[DROPPED], 1), features[1]))])
    return data, dropped


def test_block_assembly_equals_sorting_all_parts_together(tmp_path):
    class Toy:
        name, active, drops_rows = "toy", True, False

    keep = Filter("low_score", "score", 0.5, None)
    steps, features = [Toy(), keep], _features()
    parts = [
        _part([16, 17, 18], [KEPT, 1, KEPT], [0.9, 0.1, 0.7], fan=2),
        _part([0, 1, 2, 3, 32, 33], [KEPT, KEPT, 1, KEPT, KEPT, 1], [0.6, 0.8, 0.2, 0.9, 0.5, 0.4]),  # interleaves the one above
        _part([40, 41], [KEPT, KEPT], [0.9, 0.9], fan=3),
    ]
    want_data, want_dropped = _reference(parts, steps, features)
    (tmp_path / "parts").mkdir()
    for table in parts:
        store.write_part(table, tmp_path / "parts", table[ROW].to_pylist())
    spans = []
    for path in store.parts(tmp_path / "parts"):
        rows = store.read_part(path, columns=[ROW])[ROW]
        spans.append((path, pc.min(rows).as_py(), pc.max(rows).as_py()))
    assert [len(run) for run in runs_of_parts(spans)] == [2, 1]
    blocks = BlockAssembly(Assembly(tmp_path, 12, ROW, "worker seconds"), steps, features, scratch_folder(tmp_path, "result"))
    for run in runs_of_parts(spans):
        blocks.add(pa.concat_tables([store.read_part(p) for p in run], promote_options="default"))
    result = blocks.finish()
    assert result.dataset.features == want_data.features and result.dataset.to_list() == want_data.to_list()
    assert result.dropped.features == want_dropped.features and result.dropped.to_list() == want_dropped.to_list()
    assert [r["text"] for r in result.dataset][:4] == ["row 0.0", "row 1.0", "row 3.0", "row 16.0"]
    assert result.model_loads == {"toy": [1, 1]}
    assert result.timings == {"toy": 0.5 * 18, "low_score": 0.25 * 18}  # 3 x 2 + 6 + 2 x 3 rows
    assert result.inputs == 12 and result.timings_kind == "worker seconds"


def test_an_empty_assembly_has_the_features(tmp_path):
    class Toy:
        name, active, drops_rows = "toy", True, False

    features = _features()
    result = BlockAssembly(Assembly(tmp_path, 0, ROW), [Toy(), Filter("f", "score", 0.5, None)], features, tmp_path).finish()
    assert len(result.dataset) == 0 and result.dataset.features == features[-1] and result.dropped is None


def test_scratch_folders_are_new_each_run_and_the_old_ones_go(tmp_path):
    first = scratch_folder(tmp_path, "result")
    (first / "kept.arrow").write_text("x")
    second = scratch_folder(tmp_path, "result")
    assert second != first and not first.exists() and second.is_dir()


def test_failed_report_lists_rows_with_errors_in_batches(tmp_path):
    ds = Dataset.from_dict({
        "video_id": [f"v{i}" for i in range(2500)], "extra": list(range(2500)),
        "errors": [[{"stage": "probe", "error": "boom"}] if i % 997 == 0 else [] for i in range(2500)],
    })
    rows = list(failed_rows(ds, None, ds.select([0])))
    assert [r["video_id"] for r in rows] == ["v0", "v997", "v1994", "v0"] and set(rows[0]) == {"video_id", "errors"}
    assert write_failed_report(tmp_path / "failed.jsonl", ds) == 3
    lines = [json.loads(line) for line in (tmp_path / "failed.jsonl").read_text().splitlines()]
    assert lines[1] == {"video_id": "v997", "errors": [{"stage": "probe", "error": "boom"}]}


def test_input_blocks_read_back_as_written(tmp_path):
    table = pa.table({"video": [f"/v/{i}.mp4" for i in range(7)], "meta": [[{"k": i}] if i % 2 else None for i in range(7)],
                      ROW: pa.array(range(10, 17), pa.int64())})
    blocks = [table.slice(0, 3), table.slice(3, 1), table.slice(4, 3)]
    path = store.write_blocks(blocks, tmp_path / "input", "input-000000.arrow")
    assert [store.read_block(path, i).equals(b.combine_chunks()) for i, b in enumerate(blocks)] == [True, True, True]
    assert not list((tmp_path / "input").glob(".*tmp"))
    store.remove_tree(tmp_path / "input")
    assert not (tmp_path / "input").exists()


def test_column_values_read_in_batches_any_number_of_times():
    from lomo_datasets.execution.result import ColumnValues

    ds = Dataset.from_dict({"video_id": [f"v{i}" for i in range(2500)], "other": list(range(2500))})
    part = ds.select(range(10, 2010))
    values = ColumnValues(part, "video_id")
    assert len(values) == 2000 and list(values) == part["video_id"] and list(values) == list(values)


def test_small_tables_are_written_as_few_record_batches(tmp_path):
    from lomo_datasets.execution.result import ArrowFileWriter

    features = Features({"a": Value("int64"), "b": Value("string")})
    writer = ArrowFileWriter(tmp_path / "x.arrow", features, batch_rows=3)
    tables = [pa.table({"b": [f"s{i}", None], "a": [i, -i], "extra": [0, 0]}) for i in range(5)]
    for table in tables:
        writer.write(table)
    ds = writer.dataset()
    assert ds.features == features and ds.to_list() == [{"a": a, "b": b} for t in tables for a, b in zip(t["a"].to_pylist(), t["b"].to_pylist())]
    assert ds.data.table.column("a").num_chunks == 3  # 4 + 4 + 2 rows, not 5 chunks of 2
