"""The card says why rows are gone: a row that failed in a stage is counted under that stage and
its error kind, a row a filter removed under the filter; the plot shows the same split."""

from __future__ import annotations

from datasets import Dataset

from lomo_datasets.publish import layout as publish
from lomo_datasets.publish.card import compute_stats
from lomo_datasets.execution.pipeline import Filter, Runner
from tests.toy_stages import ToyModelStage


def test_failed_rows_count_under_their_stage_and_filtered_rows_under_the_filter(tmp_path):
    ds = Dataset.from_dict({"video_id": list("abcd"), "x": [1.0, -1.0, 2.0, 0.5]})
    result = Runner(tmp_path / "work").run(ds, [ToyModelStage(scale=1.0), Filter("y_band", "y", low=0.8)])
    assert result.dataset["video_id"] == ["a", "c"]
    stats = compute_stats(result.dataset, result.dropped)
    # "b" failed in toy (ValueError) and the filter then removed it; "d" was only filtered.
    assert stats.dropped_per_reason == {"toy failed: ValueError": 1, "y_band": 1}
    out = publish.write_folder(result.dataset, tmp_path / "ds", dropped=result.dropped)
    card = (out / "README.md").read_text()
    assert "| toy failed: ValueError | 1 |" in card and "| y_band | 1 |" in card
    assert "| keep" not in card
    assert (out / "stats.png").stat().st_size > 0
    from lomo_datasets.publish.card import _count_panel

    counts, _ = _count_panel(stats)
    assert counts["dropped: toy failed: ValueError"] == 1 and counts["dropped: y_band"] == 1
