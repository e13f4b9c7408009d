"""The run summary's and the card's `generation` figures (issue 21 items 5, 6, 8): translate
parts per level, grounding rounds, answer longest before -> after, implausible transcripts."""

from __future__ import annotations

from datasets import Dataset

from lomo_datasets.core import features as F
from lomo_datasets.publish.card import compute_stats
from lomo_datasets.publish.generation import generation_counts, generation_line


def log(stage, **events):
    return [{"stage": stage, "event": e, "count": n} for e, n in events.items()]


def test_counts_from_kept_and_dropped_rows():
    rows = [
        {"video_id": "zh_a", "transcript_implausible": True, "errors": [],
         "generation": log("translate", chunk=1, half=2, line=3, refused_replies=3) + log("compress", grounding_rounds=2,
              answer_longest_before=2, answer_longest_after=0, distractors_rewritten=1, items_checked=2)
              + log("qa", answer_longest_before=1, answer_longest_after=1, distractors_rewritten=0, items_checked=3)},
        {"video_id": "en_b", "transcript_implausible": False, "errors": [],
         "generation": log("compress", grounding_rounds=1, answer_longest_before=0, answer_longest_after=0,
                           distractors_rewritten=0, items_checked=2)},
    ]
    features = F.merge(Dataset.from_list(rows).features, {"generation": F.GENERATION})
    kept = Dataset.from_list(rows[:1], features=features)
    dropped = Dataset.from_list(rows[1:], features=features)
    counts = generation_counts([kept, dropped])
    assert counts["translate"] == {"chunk": 1, "half": 2, "line": 3, "refused_replies": 3}
    assert counts["grounding"] == {"1": 1, "2": 1}
    assert counts["answer_longest"] == {"items": 7, "before": 3, "after": 1, "rewritten": 1}
    assert counts["plausibility"] == {"scored": 2, "implausible": 1}
    line = generation_line(counts)
    assert line == ("generation: translate parts by level chunk 1, half 2, line 3 (3 replies refused); temporal items "
                    "grounded in round 1: 1, 2: 1; answer longest 3 of 7 (43%) -> 1 of 7 (14%) (1 distractor sets "
                    "rewritten); transcripts implausible 1 of 2 (flagged, not dropped)")
    stats = compute_stats(kept, dropped)
    assert stats.generation_line == line and stats.to_dict()["generation"] == counts
    assert generation_counts([Dataset.from_list([{"video_id": "x"}])]) is None
