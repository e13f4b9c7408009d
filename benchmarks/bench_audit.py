"""The QA audit: its cost without the LLM, and what it catches with one.

1. Cost without the LLM: every check and figure over synthetic LoMo-shaped videos (six items
   each, 20 subtitle lines, random option texts), growing in size. The card of every QA dataset
   runs this audit, so it must stay small next to writing the shards.
2. Planted defects (``--planted``): the items of a real embedded run (tests/fixtures/
   audit_items.json, text only) get known defects planted into copies of their person-checked
   clean items (``lomo_datasets.audit.planted``: wrong key, window moved to another line with its
   times rewritten, near-duplicate option, absurd distractors). The embedded LLM (the model files
   of ``run --embedded``) runs the key verifier and the blind answerer with circular evaluation
   (4 rotations). Printed: recall per kind, false alarms on the untouched clean items, the
   verified-key rate and blind accuracy on clean items with their Wilson intervals, the natural
   defects' flags, and the LLM's seconds per item with the load average beside them. The same
   verifier picks are scored under every ``--verify-rule`` (``A.VERIFY_RULES``): what each
   catches and what it flags on clean items.

Usage::

    python benchmarks/bench_audit.py [--videos 1000 5000 14000] [--planted [--per-kind 8] [--dump picks.json]]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lomo_datasets.audit import checks as A  # noqa: E402

WORDS = "the a man woman cooks runs pasta water ball goal team city walk street car bike dog cat".split()


def make_videos(n: int, seed: int = 0) -> list[A.Video]:
    rng = random.Random(seed)

    def sentence(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    videos = []
    for v in range(n):
        subtitles = [(3.0 * i, 3.0 * i + 2.5) for i in range(20)]
        items = []
        for k, task in enumerate(A.LOMO_TASKS):
            window = list(subtitles[rng.randrange(20)]) if k >= 2 else []
            when = f" between {window[0]:g} and {window[1]:g} seconds" if window else ""
            items.append({
                "question_id": f"v{v}_{k + 1:02d}", "task": task, "question": sentence(10) + when,
                "options": [f"{letter}: {sentence(8)}" for letter in "ABCD"], "answer": rng.choice("ABCD"),
                "window": window, "descriptions": "",
            })
        videos.append(A.Video(f"v{v}", items, 60.0, subtitles))
    return videos


FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "audit_items.json"
#: The flag that fires on items that are fine (anything else on a clean item is a false alarm).
LLM_STEP = {"wrong_key": "verify", "moved_window": "verify", "near_duplicate": None, "absurd_distractors": "blind"}


def _pct(k: int, n: int) -> str:
    low, high = A.wilson_interval(k, n)
    return f"{k}/{n} = {100 * k / n:.0f}% [{100 * low:.0f}%, {100 * high:.0f}%]" if n else "–"


def _spread(videos: list[A.Video], limit: int | None) -> list[A.Video]:
    """At most ``limit`` items, taken round-robin over videos (so every video and task shows)."""
    if limit is None:
        return videos
    queues = [list(v.questions) for v in videos]
    keep: set[str] = set()
    while len(keep) < limit and any(queues):
        for q in queues:
            if q and len(keep) < limit:
                keep.add(str(q.pop(0).get("question_id")))
    return [v for v in (dataclasses.replace(v, questions=[q for q in v.questions if q["question_id"] in keep]) for v in videos) if v.questions]


def rules(judged: dict[str, tuple[list[A.Video], A.Picks]], out, dump: Path | None) -> None:
    """Per verify rule (``A.VERIFY_RULES``), on the same verifier picks: the planted key defects
    it flags and the clean items it flags (false alarms); with ``dump``, every item's rotations."""
    out("\nWhich verifier picks flag `unverified_key` (`--verify-rule`; the same picks for every rule):\n")
    kinds = [k for k in judged if k != "clean"]
    out(f"| rule | flags when | {' | '.join(f'{k} caught' for k in kinds)} | clean items flagged |")
    out("|---|---|" + "---|" * (len(kinds) + 1))
    for rule, meaning in A.VERIFY_RULES.items():
        cells = []
        for kind in [*kinds, "clean"]:
            vids, picks = judged[kind]
            items = [q for v in vids for q in v.questions if picks.get(q["question_id"]) is not None]
            flagged = sum(A.key_unverified(picks, q["question_id"], A.answer_letter(q), rule) for q in items)
            cells.append(_pct(flagged, len(items)))
        out(f"| {rule}{' (default)' if rule == A.VERIFY_RULE else ''} | {meaning} | {' | '.join(cells)} |")
    if dump:
        rows = [{"kind": kind, "question_id": q["question_id"], "task": q.get("task"), "key": A.answer_letter(q),
                 "pick": picks.get(q["question_id"]), "rotations": picks.rotations.get(q["question_id"])}
                for kind, (vids, picks) in judged.items() for v in vids for q in v.questions]
        dump.write_text(json.dumps(rows, indent=1), encoding="utf-8")
        out(f"(every item's rotations: {dump})")


def planted(per_kind: int | None, threads: int, fixture_videos: int | None, dump: Path | None = None) -> None:
    """Prints as it goes (kinds first, then the clean items), so a slow machine shows partial
    results."""
    from lomo_datasets.audit import planted as P

    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    videos, clean = P.videos_from_fixture(data)
    videos = videos[:fixture_videos] if fixture_videos else videos
    clean &= {q["question_id"] for v in videos for q in v.questions}
    settings = A.blind_settings({"cpu_threads": threads}, embedded=True)
    generate = A.llm_answerer(settings, "cpu")
    cost: dict[str, list[float]] = {"verify": [0.0, 0], "blind": [0.0, 0]}
    loads: list[float] = []

    def run(step: str, vids: list[A.Video]) -> A.Picks:
        loads.append(os.getloadavg()[0])
        start = time.perf_counter()
        picks = A.verify_answers(vids, generate) if step == "verify" else A.blind_answers([q for v in vids for q in v.questions], generate)
        cost[step][0] += time.perf_counter() - start
        cost[step][1] += len(picks)
        loads.append(os.getloadavg()[0])
        return picks

    def out(text: str = "") -> None:
        print(text, flush=True)

    out(f"Planted defects: {FIXTURE.name}, {len(videos)} videos, {len(clean)} clean items, "
        f"model {settings.backend}:{settings.model} ({settings.quantization}), {A.ROTATIONS} rotations\n")
    out("| kind | planted | caught (flag) [95% CI] | other flags on them |")
    out("|---|---|---|---|")
    caught_all = planted_all = 0
    judged: dict[str, tuple[list[A.Video], A.Picks]] = {}
    for kind, flag in P.KINDS.items():
        vids = _spread(P.plant(videos, kind, clean), per_kind)
        step = LLM_STEP[kind]
        picks = run(step, vids) if step else None
        if step == "verify":
            judged[kind] = (vids, picks)
        rep = A.audit(vids, picks if step == "blind" else None, verified=picks if step == "verify" else None)
        by_item = rep.flags_by_item()
        items = [q["question_id"] for v in vids for q in v.questions]
        caught = [qid for qid in items if any(f.reason == flag for f in by_item.get(qid, []))]
        others = Counter(f.reason for qid in items for f in by_item.get(qid, []) if f.reason != flag)
        caught_all += len(caught)
        planted_all += len(items)
        out(f"| {kind} | {len(items)} | {flag}: {_pct(len(caught), len(items))} | "
            f"{', '.join(f'{k} {v}' for k, v in others.items()) or '–'} |")
        for qid in sorted(set(items) - set(caught)):
            pick = (picks or {}).get(qid)
            rotations = ",".join(getattr(picks, "rotations", {}).get(qid, [])) if picks is not None else ""
            out(f"|  missed | `{qid}` | {step or 'rule'} pick {pick!r} (rotations {rotations or '–'}) | |")
    out(f"| **all** | {planted_all} | {_pct(caught_all, planted_all)} | |")

    mc_clean = [q for v in videos for q in v.questions if q["question_id"] in clean]
    verified = run("verify", videos)
    ok = sum(verified.get(q["question_id"]) == A.answer_letter(q) for q in mc_clean if verified.get(q["question_id"]) is not None)
    asked = sum(verified.get(q["question_id"]) is not None for q in mc_clean)
    out(f"\nVerified-key rate on clean items: {_pct(ok, asked)} ({len(mc_clean) - asked} without evidence or valid answers)")
    blind = run("blind", videos)
    blind_ok = sum(blind.get(q["question_id"]) == A.answer_letter(q) for q in mc_clean if blind.get(q["question_id"]) is not None)
    blind_asked = sum(blind.get(q["question_id"]) is not None for q in mc_clean)
    out(f"Blind accuracy on clean items: {_pct(blind_ok, blind_asked)} (chance 25%)")
    flags = A.audit(videos, blind, verified=verified).flags_by_item()
    false = {q["question_id"]: [f"{f.reason} ({f.detail})" for f in flags.get(q["question_id"], [])] for q in mc_clean}
    false = {k: v for k, v in false.items() if v}
    out(f"False alarms on untouched clean items (any flag): {_pct(len(false), len(mc_clean))}"
        + "".join(f"\n- `{k}`: {'; '.join(v)}" for k, v in false.items()))
    judged["clean"] = ([dataclasses.replace(v, questions=[q for q in v.questions if q["question_id"] in clean]) for v in videos], verified)
    rules(judged, out, dump)
    out("\nNatural defects (a person's reading) and the audit's flags:")
    for qid, why in data["natural_defects"].items():
        if any(q["question_id"] == qid for v in videos for q in v.questions):
            got = "; ".join(f"{f.reason} ({f.detail})" for f in flags.get(qid, [])) or "none"
            out(f"- `{qid}` ({why}): {got}")
    out(f"\nLLM cost ({threads} CPU threads; load average {min(loads):.1f} to {max(loads):.1f} over the runs, "
        f"{os.cpu_count()} cores shared with other work):")
    for step, (seconds, n) in cost.items():
        if n:
            out(f"- {step}: {n} items x {A.ROTATIONS} rotations in {seconds:.0f} s = {seconds / n:.1f} s per item "
                f"({seconds / n / A.ROTATIONS:.2f} s per request)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[1000, 5000, 14000])
    parser.add_argument("--planted", action="store_true", help="the planted-defect benchmark (runs the embedded LLM)")
    parser.add_argument("--per-kind", type=int, default=None, help="plant at most this many items per kind")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the LLM")
    parser.add_argument("--fixture-videos", type=int, default=None, help="only the first N videos of the fixture")
    parser.add_argument("--dump", type=Path, help="write every verified item's rotations to this JSON file")
    args = parser.parse_args()
    if args.planted:
        planted(args.per_kind, args.threads, args.fixture_videos, args.dump)
        return
    print("| videos | items | audit s | items/s | flagged |")
    print("|---|---|---|---|---|")
    for n in args.videos:
        videos = make_videos(n)
        start = time.perf_counter()
        report = A.audit(videos)
        seconds = time.perf_counter() - start
        items = report.overall.items
        print(f"| {n} | {items} | {seconds:.1f} | {items / seconds:,.0f} | {report.overall.flagged_items} |")


if __name__ == "__main__":
    main()
