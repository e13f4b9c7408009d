"""Calibrates the transcript-plausibility thresholds (processors/plausibility.py) on real and
scrambled transcripts, per language, with the LM-loss model of the ``plausibility`` step.

Real English: the LibriVox lines of Debian's pocketsphinx-testdata
(/usr/share/pocketsphinx/test/data/librivox/transcription, one transcript) and the ten English
scripts of benchmarks/bench_yield.py (one transcript each, a line per sentence). Real Mandarin:
the ten Mandarin scripts of bench_yield.py. Scrambled: the same lines with their words (English)
or characters (Mandarin) shuffled, seeded; and the Whisper gibberish of issue 21's Mandarin
sample. Prints each group's mean per-line loss range and, per language, the threshold: the
midpoint between the highest real and the lowest scrambled transcript.

    python benchmarks/bench_plausibility.py [--model embedded:smollm2-135m]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_yield import ENGLISH, MANDARIN  # noqa: E402

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox/transcription")
#: issue 21: what the embedded Whisper base wrote for 今天我们在家做饭。首先把水烧开。...
GIBBERISH_ZH = ["净天瓦门在压座範", "手先把随少凯", "然后放入面条", "最后加上番茄降"]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?。！？])\s*", text) if s.strip()]


def scramble(line: str, lang: str, rng: random.Random) -> str:
    if lang == "zh":
        chars = list(line)
        rng.shuffle(chars)
        return "".join(chars)
    words = line.split()
    rng.shuffle(words)
    return " ".join(words)


def transcripts() -> dict[tuple[str, str], list[list[str]]]:
    rng = random.Random(21)
    groups: dict[tuple[str, str], list[list[str]]] = {}
    en = [sentences(t) for _, t in ENGLISH]
    if LIBRIVOX.exists():
        en.append([re.sub(r"</?s>|\(.*?\)", "", l).strip() for l in LIBRIVOX.read_text().splitlines() if l.strip()])
    zh = [sentences(t) for _, t in MANDARIN]
    groups[("en", "real")] = en
    groups[("en", "scrambled")] = [[scramble(l, "en", rng) for l in t] for t in en]
    groups[("zh", "real")] = zh
    groups[("zh", "scrambled")] = [[scramble(l, "zh", rng) for l in t] for t in zh] + [GIBBERISH_ZH]
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m")
    args = parser.parse_args()
    from lomo_datasets.processors.plausibility import THRESHOLDS, TranscriptPlausibility

    stage = TranscriptPlausibility(model=args.model)
    start = time.perf_counter()
    scores: dict[tuple[str, str], list[float]] = {}
    for key, group in transcripts().items():
        rows = [{"segments": [{"start": 0.0, "end": 1.0, "text": l} for l in lines], "language": key[0], "title": ""} for lines in group]
        scores[key] = [out["transcript_loss"] for out in stage.process(rows)]
    wall = time.perf_counter() - start
    print(f"model {args.model}; mean per-line loss per transcript\n")
    print("| language | transcripts | real: min / max | scrambled: min / max | threshold (midpoint) | shipped | real flagged | scrambled flagged |")
    print("|---|---|---|---|---|---|---|---|")
    for lang in ("en", "zh"):
        real, bad = scores[(lang, "real")], scores[(lang, "scrambled")]
        mid = (max(real) + min(bad)) / 2
        shipped = THRESHOLDS.get(lang, THRESHOLDS["other"])
        print(f"| {lang} | {len(real)} + {len(bad)} | {min(real):.2f} / {max(real):.2f} | {min(bad):.2f} / {max(bad):.2f} | "
              f"{mid:.2f} | {shipped:.2f} | {sum(x > shipped for x in real)} of {len(real)} | {sum(x > shipped for x in bad)} of {len(bad)} |")
    print(f"\n{wall:.0f} s on {args.model}")


if __name__ == "__main__":
    main()
