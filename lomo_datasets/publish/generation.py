"""How the items were made, counted over a run's rows (kept and dropped): the ``generation``
column the LoMo steps write (translate levels, grounding rounds, bias repair) and the
transcript-plausibility flag. The run summary prints ``generation_line``; the card shows the
same figures (``Stats.generation``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from datasets import Dataset


def generation_counts(parts: Iterable[Dataset | None]) -> dict[str, Any] | None:
    """Per stage and event, the summed counts; ``plausibility``: rows scored and flagged;
    ``grounding``: rows by the number of rounds their temporal item took;
    ``grounding_other_line``: rows whose temporal item is about another line than the one the
    model picked (the picked line gave no grounded item). None when no part
    has either column."""
    events: Counter = Counter()
    rounds: Counter = Counter()
    other_line = 0
    scored = flagged = 0
    seen = False
    for part in parts:
        if part is None or not len(part):
            continue
        if "generation" in part.column_names:
            seen = True
            for batch in part.select_columns(["generation"]).iter(batch_size=1000):  # never a whole column
                for log in batch["generation"]:
                    for entry in log or []:
                        events[(entry["stage"], entry["event"])] += int(entry["count"] or 0)
                        if entry["event"] == "grounding_rounds":
                            rounds[int(entry["count"] or 0)] += 1
                        elif entry["event"] == "grounding_lines":
                            other_line += int(entry["count"] or 0) > 1
        if "transcript_implausible" in part.column_names:
            seen = True
            for batch in part.select_columns(["transcript_implausible"]).iter(batch_size=1000):
                for flag in batch["transcript_implausible"]:
                    if flag is not None:
                        scored += 1
                        flagged += bool(flag)
    if not seen:
        return None
    longest = {k: sum(v for (_, e), v in events.items() if e == f"answer_longest_{k}") for k in ("before", "after")}
    items = sum(v for (_, e), v in events.items() if e == "items_checked")
    return {
        "translate": {level: events[("translate", level)] for level in ("chunk", "half", "line", "refused_replies")},
        "grounding": {str(k): rounds[k] for k in sorted(rounds)},
        "grounding_other_line": other_line,
        "answer_longest": {"items": items, **longest,
                           "rewritten": sum(v for (_, e), v in events.items() if e == "distractors_rewritten")},
        "plausibility": {"scored": scored, "implausible": flagged},
    }


def _rate(n: int, total: int) -> str:
    return f"{n} of {total} ({100 * n / total:.0f}%)" if total else f"{n}"


def generation_line(counts: dict[str, Any] | None) -> str | None:
    """``generation: translate parts by level chunk 9, half 2, line 3 (4 replies refused); temporal
    items grounded in round 1: 8, 2: 1; answer longest 5 of 40 (12%) -> 1 of 40 (2%) (4 distractor
    sets rewritten); transcripts implausible 1 of 10``."""
    if not counts:
        return None
    parts = []
    t = counts["translate"]
    if any(t.values()):
        parts.append(f"translate parts by level chunk {t['chunk']}, half {t['half']}, line {t['line']} "
                     f"({t['refused_replies']} replies refused)")
    if counts["grounding"]:
        other = counts.get("grounding_other_line") or 0
        parts.append("temporal items grounded in round " + ", ".join(f"{k}: {v}" for k, v in counts["grounding"].items())
                     + (f" ({other} on another line than the one picked)" if other else ""))
    a = counts["answer_longest"]
    if a["items"]:
        parts.append(f"answer longest {_rate(a['before'], a['items'])} -> {_rate(a['after'], a['items'])} "
                     f"({a['rewritten']} distractor sets rewritten)")
    p = counts["plausibility"]
    if p["scored"]:
        parts.append(f"transcripts implausible {p['implausible']} of {p['scored']} (flagged, not dropped)")
    return "generation: " + "; ".join(parts) if parts else None
