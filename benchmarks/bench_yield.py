"""Yield of the README's offline command on ordinary speech videos, English and Mandarin.

Makes short videos whose speech has at least four sentences, in English (espeak-ng) and in
Mandarin (by default a real human voice: recorded syllables from Debian's ``gcin-voice``
stitched into the sentences; ``--zh-voice espeak`` for espeak-ng's), writes a manifest (the Mandarin rows give ``language: zh``, as the embedded Whisper
base takes espeak-ng's Mandarin for Thai when it detects it), runs

    lomo-datasets run lomo --videos manifest.jsonl --out OUT --embedded [--set ...]

and prints, per language, how many of the videos with at least four subtitle lines yield all
their items (six questions), and the failed rows per step. The target is at least 90% per
language. (The embedded Whisper base hears some Mandarin clips as fewer than four lines:
those videos are counted, but are not the target's.)

    python benchmarks/bench_yield.py [--en 6] [--zh 4] [--zh-voice human|espeak] [--set qa.model=embedded:smollm2-135m] [--yield-only]

Beside the yield, per language: the translate parts by the level that translated them (whole
chunks, halves, single lines: issue 21 item 6), the temporal items that needed more than one
grounding round (and of those, the ones about another line than the picked one), the multiple-choice items whose key is the longest option before and after the
bias repair, and the transcripts flagged implausible. "Without ASR loops" is the yield over the
target videos whose speech mostly passed the ASR's own hallucination tests (``asr_score`` >= 0.5):
a Whisper loop's repeated "lines" are no subtitle lines, and such a video may fail at translate
or give items about the loop; both figures are printed.

The numbers depend on the machine's load (a shared 2-core machine slows every step).

``--yield-only`` runs the recipe with ``--set verify.enabled=false --set blind.enabled=false``:
the answer-key verifier and the blind answerer only flag items (they drop no row and fail no
row's items), so the yield is the same without them, and they took about 23 of the 48 minutes
of a rerun on 2 cores. The audit figures of that run are then empty.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter

#: The plausibility step's default ``min_asr_score``: below it, the ASR's own tests failed most of
#: the speech (the transcript is flagged ``transcript_implausible`` with the reason ``asr``).
MIN_ASR_SCORE = 0.5
from pathlib import Path

ENGLISH = [
    ("Baking bread", "Today I will show you how to bake bread. First, mix flour, water, salt and yeast in a bowl. "
     "Knead the dough for ten minutes until it is smooth. Let it rest for one hour under a towel. "
     "Then shape a loaf and bake it in a hot oven for forty minutes."),
    ("Fixing a bicycle tyre", "My bicycle has a flat tyre, so let us fix it. First, take the wheel off the frame. "
     "Pull the tube out and find the hole with some water. Put a patch over the hole and press it hard. "
     "Now put the tube back and pump up the tyre."),
    ("A day at the beach", "We arrived at the beach early in the morning. The children built a big sandcastle near the water. "
     "Later we went swimming in the calm blue sea. At noon we ate sandwiches under a red umbrella. "
     "In the evening we watched the sun go down."),
    ("Planting tomatoes", "Spring is here and it is time to plant tomatoes. Dig a hole that is deep enough for the roots. "
     "Put the young plant in the hole and fill it with soil. Give it plenty of water. "
     "Finally, tie the stem to a wooden stick so it grows straight."),
    ("Morning run in the park", "I start my morning run at the gate of the park. The path goes around a small lake with ducks. "
     "After two kilometres I climb a steep hill. From the top you can see the whole city. "
     "Then I run back down and stretch my legs."),
    ("Painting a wall", "Today we paint the living room wall. First, cover the floor with old sheets. "
     "Then fill the small holes in the wall and let them dry. Open the can and stir the green paint. "
     "Use a roller for the large areas and a brush for the corners."),
    ("Chess lesson", "Welcome to this chess lesson for beginners. The board has sixty four squares. "
     "Each player starts with sixteen pieces. The white player always moves first. "
     "Today we learn how the knight jumps across the board."),
    ("Washing a car", "It is a sunny day, so I am washing my car. I fill a bucket with warm soapy water. "
     "Then I clean the roof and the windows with a soft sponge. Next I scrub the wheels with a brush. "
     "Finally I rinse the car with the hose and dry it with a towel."),
    ("Making a cup of tea", "Let me show you how I make a cup of tea. I fill the kettle with fresh water and switch it on. "
     "While it heats, I put a tea bag into my favourite cup. When the water boils, I pour it over the bag. "
     "After three minutes I take the bag out and add a little milk."),
    ("Feeding the cat", "Every morning I feed our old grey cat. She waits for me next to the kitchen door. "
     "I open a small tin of fish and put half of it in her bowl. Then I give her a dish of clean water. "
     "After breakfast she sleeps in the sun by the window."),
]
MANDARIN = [
    ("做饭", "今天我们在家做饭。首先把水烧开。然后放入面条。最后加上番茄酱。"),
    ("公园散步", "今天天气很好，我们去公园散步。公园里有很多树和花。孩子们在草地上踢足球。晚上我们就回家了。"),
    ("包饺子", "今天我们一起包饺子。先把面和好。然后把肉和菜切碎。最后把饺子放进锅里煮。"),
    ("打篮球", "下午我们去学校打篮球。我们先跑步热身。然后大家分成两个队。比赛结束的时候我们都很开心。"),
    ("种花", "春天到了，我们在院子里种花。先在地上挖一个小坑。然后把花放进去。最后给花浇水。"),
    ("坐火车", "今天我们坐火车去北京。火车站里人很多。我们在车上看书，也看窗外的风景。下午三点我们到了北京。"),
    ("洗衣服", "周末我在家洗衣服。先把衣服放进洗衣机。然后加一点洗衣粉。洗好以后，我把衣服挂在阳台上。"),
    ("学画画", "妹妹今天开始学画画。老师先教她画一个苹果。然后她画了一只小猫。妈妈说她画得很好。"),
    ("买水果", "早上我去市场买水果。我买了五个苹果和一串香蕉。西瓜太大了，我没有买。回家以后，我们一起吃水果。"),
    ("下雨天", "今天下了一整天的雨。我们不能出去玩，只好待在家里。哥哥在看电视，我在写作业。晚上雨停了，天上出现了星星。"),
]


def make_videos(folder: Path, n_en: int, n_zh: int, zh_voice: str = "human") -> Path:
    from lomo_datasets.media.samples import make_speech_video

    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for lang, items, count in (("en", ENGLISH, n_en), ("zh", MANDARIN, n_zh)):
        for k, (title, text) in enumerate(items[:count]):
            voice = zh_voice if lang == "zh" else "espeak"
            name = f"{lang}_{k:02d}.mp4" if voice == "espeak" else f"{lang}_{k:02d}_{voice}.mp4"
            if not (folder / name).exists():
                make_speech_video(folder / name, text, lang, voice=voice)
            entry = {"video": name, "title": title}
            if lang == "zh":
                entry["language"] = "zh"
            entries.append(entry)
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    return manifest


def _latest(out: Path, step: str) -> list[Path]:
    """The ``data`` folder of ``step`` that this run used: a work dir reused with ``--out`` holds
    an older run's folders too (other settings or code, another fingerprint); the run's own is
    the one finished last (its ``_SUCCESS`` marker is the newest), as the steps run in order."""
    done = sorted((out / ".lomo-work").glob(f"*-{step}-*/_SUCCESS"), key=lambda p: p.stat().st_mtime)
    return [done[-1].parent / "data"] if done else []


def report(manifest: Path, out: Path) -> None:
    """Per language: videos, those with at least four subtitle lines (the target's videos), how
    many of those yield all six items, and the failed rows per step."""
    import datasets

    kept = datasets.load_dataset(str(out), split="train")
    rows = {r["video_id"]: r for r in kept}
    # A failed row dropped by QC is in both files: once per video, the whole row (dropped.jsonl)
    # first: failed.jsonl lists only the id, the video and the errors. A failed video found in
    # neither with its subtitle lines counts as a target video that did not yield.
    found: dict[str, dict] = {}
    for name in ("dropped.jsonl", "failed.jsonl"):
        if (out / name).exists():
            for line in (out / name).read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    found.setdefault(row.get("video_id"), row)
    others = list(found.values())
    # Subtitle lines per video: a row that failed is listed in failed.jsonl without its lines,
    # so they are read from the asr step's output in the work dir (the run's own record).
    heard: dict[str, int] = {}
    scores: dict[str, float] = {}  # asr_score: the share of the speech that passed Whisper's hallucination tests
    for step in _latest(out, "asr"):
        asr = datasets.load_from_disk(str(step))
        heard.update({v: len(s or []) for v, s in zip(asr["video_id"], asr["segments"])})
        if "asr_score" in asr.column_names:
            scores.update({v: x for v, x in zip(asr["video_id"], asr["asr_score"]) if x is not None})
    lines = {r["video_id"]: len(r["segments"] or []) if r.get("segments") is not None else heard.get(r["video_id"], 0)
             for r in [*others, *rows.values()]}
    complete = {v for v, r in rows.items() if not r["errors"] and len(r["questions"] or []) == 6}
    # What translated each part (issue 21 item 6) and the other generation counts, per language.
    levels: dict[str, Counter] = {}
    implausible: dict[str, int] = Counter()
    for vid, r in [*rows.items(), *((r.get("video_id"), r) for r in others)]:
        lang = str(vid)[:2]
        for e in r.get("generation") or []:
            if e["stage"] != "translate":  # counted below for every row, failed ones too
                levels.setdefault(lang, Counter())[f"{e['stage']}.{e['event']}"] += int(e["count"] or 0)
        implausible[lang] += bool(r.get("transcript_implausible"))
    for step in _latest(out, "translate"):
        for vid, events in zip(*(lambda d: (d["video_id"], d["generation"]))(datasets.load_from_disk(str(step)))):
            for e in events or []:
                if e["stage"] == "translate":
                    levels.setdefault(str(vid)[:2], Counter())[f"translate.{e['event']}"] += int(e["count"] or 0)
    print("| language | videos | with >= 4 subtitle lines | of those, all six items | yield | without ASR loops | failed rows per step | translate parts: chunk / half / line (refused replies) | grounding rounds > 1 (on another line) | answer longest before -> after | implausible transcripts |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for lang in ("en", "zh"):
        ids = [Path(e["video"]).stem for e in map(json.loads, manifest.read_text().splitlines()) if Path(e["video"]).stem.startswith(lang)]
        if not ids:
            continue
        eligible = [v for v in ids if lines.get(v, 0) >= 4]
        done = sum(1 for v in eligible if v in complete)
        steps = Counter(e["stage"] for r in others if str(r.get("video_id", "")).startswith(lang) for e in r.get("errors") or [])
        share = f"{100 * done / len(eligible):.0f}%" if eligible else "-"
        # Videos whose "lines" are a Whisper loop (less than MIN_ASR_SCORE of the speech passed the
        # ASR's own hallucination tests: zh_07_human's "鸡 鸡 鸡 ..."): shown apart, not hidden.
        loops = [v for v in eligible if scores.get(v, 1.0) < MIN_ASR_SCORE]
        heard_well = [v for v in eligible if v not in loops]
        clean = sum(1 for v in heard_well if v in complete)
        apart = (f"{100 * clean / len(heard_well):.0f}% ({clean} of {len(heard_well)}; {len(loops)} loop{'s' if len(loops) != 1 else ''})"
                 if heard_well else "-")
        c = levels.get(lang, Counter())
        translate = (f"{c['translate.chunk']} / {c['translate.half']} / {c['translate.line']} ({c['translate.refused_replies']})"
                     if lang != "en" else "-")
        regrounded = sum(1 for r in [*rows.values(), *others] if str(r.get("video_id", "")).startswith(lang)
                         for e in r.get("generation") or [] if e["event"] == "grounding_rounds" and e["count"] > 1)
        moved = sum(1 for r in [*rows.values(), *others] if str(r.get("video_id", "")).startswith(lang)
                    for e in r.get("generation") or [] if e["event"] == "grounding_lines" and e["count"] > 1)
        longest = f"{c['compress.answer_longest_before'] + c['qa.answer_longest_before']} -> {c['compress.answer_longest_after'] + c['qa.answer_longest_after']}"
        print(f"| {lang} | {len(ids)} | {len(eligible)} | {done} | {share} | {apart} | {dict(steps) or '-'} | {translate} | {regrounded} ({moved}) | {longest} | {implausible[lang]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--en", type=int, default=6, help=f"English videos (at most {len(ENGLISH)})")
    parser.add_argument("--zh", type=int, default=4, help=f"Mandarin videos (at most {len(MANDARIN)})")
    parser.add_argument("--zh-voice", choices=("human", "espeak"), default="human",
                        help="Mandarin speech: a real voice's syllables (Debian gcin-voice; default) or espeak-ng")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="STEP.SETTING=VALUE")
    parser.add_argument("--keep", help="write videos and output here (default: a temp dir)")
    parser.add_argument("--out", help="the run's output folder (default: a new one under --keep); an earlier run's "
                                      "folder is rerun, reusing the steps whose code and settings are unchanged")
    parser.add_argument("--yield-only", action="store_true",
                        help="skip the verify and blind steps (they flag items, they do not change the yield)")
    args = parser.parse_args()
    if args.yield_only:
        args.overrides += ["verify.enabled=false", "blind.enabled=false"]

    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-yield-"))
    manifest = make_videos(root / "videos", args.en, args.zh, args.zh_voice)
    out = Path(args.out) if args.out else root / f"out-{int(time.time())}"
    cmd = [sys.executable, "-m", "lomo_datasets.cli", "run", "lomo", "--videos", str(manifest), "--out", str(out), "--embedded"]
    for item in args.overrides:
        cmd += ["--set", item]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    wall = time.perf_counter() - start
    print(proc.stdout)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report(manifest, out)
    print(f"\nMandarin voice: {args.zh_voice}; wall {wall / 60:.1f} min; cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; output in {out}")


if __name__ == "__main__":
    main()
