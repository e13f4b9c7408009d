"""A projection: hours on 1, 8 and 64 GPUs for the LoMo benchmark (about 14k videos) and for
LiveCC's data (the SFT pipeline over about 1.4M videos, the 5M pre-training clips).

Nothing here is measured on a GPU: each step's time is its work (hours of audio, tokens) divided
by a rate, and every rate and every amount of work names its source in the last column: a
published figure ([S..], with where it was published), a figure measured on this project's
2-core CPU machine ([M..]), or an assumption of this script's author ([A..], marked
ASSUMPTION). The footnotes under the table give them in full. Results are rounded to two
significant figures: the inputs are not known better than that, and several are only bounds
(the table says which).

How to read it: "h on 1" is hours of one GPU of the kind the rate was "measured on" (the ASR rates
come from a V100S and an RTX 2080 Ti, the LLM rate from an H200: a newer GPU runs the ASR
faster than these figures say). "h on N" is those GPU-hours / N: it assumes the work splits evenly
(whole videos per worker; thousands of videos per GPU even at 64) and leaves out model loading
(once per worker and step) and reading the videos. The CPU steps (probe, clip, filters, QC,
language detection) run beside the GPU steps on the nodes' cores; only probe has a rate, measured
here over tiny files (a floor per row), and the totals leave it out. The LLM steps are
charged per token at a serving throughput that counts input and output tokens alike; prompt
tokens are cheaper than generated ones, so those rows are upper bounds for the models they
name (served by vLLM: `--set STEP.backend=openai`; the in-process default backends are slower),
and a smaller model (Qwen2-1.5B for the LM loss, Qwen2-VL-2B for talking heads, m2m100
1.2B for translation) charged at the 8B rate is an upper bound too.

Usage::

    python benchmarks/projection.py            # the table and its footnotes
    python benchmarks/projection.py --markdown # the same as a Markdown table (README)
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

GPUS = (1, 8, 64)

# --------------------------------------------------------------------------------------------
# Sources, measurements and assumptions (every number below comes from one of these)
# --------------------------------------------------------------------------------------------

SOURCES = {
    "S1": "LoMo-Pipe README (shared/seeds/000_*.txt): the LoMo benchmark has '14,000+ videos'.",
    "S2": "Live-CC-5M dataset card (huggingface.co/datasets/chenjoya/Live-CC-5M): '5,047,208 YouTube Video-CC "
          "30~240s samples'; pre-training words come from YouTube closed captions, so no ASR (LiveCC README, "
          "shared/seeds/002_*.txt, step A1: 'Split consistent YouTube CC into words').",
    "S3": "Issue 25 (from the LiveCC paper, arXiv:2504.16030): Live-WhisperX-526K, about 526K SFT clips from about "
          "1.4M videos; ASR with WhisperX large-v3-turbo (LiveCC README, shared/seeds/002_*.txt, step B2).",
    "S4": "faster-whisper README (github.com/SYSTRAN/faster-whisper, 'Large-v2 model on GPU'): large-v2, fp16, "
          "beam 5, 13 min of audio in 54 s on a Tesla V100S: 14x real time.",
    "S5": "faster-whisper issue #1030 (github.com/SYSTRAN/faster-whisper/issues/1030): faster-large-v3-turbo, fp16, "
          "beam 5, 13 min of audio in 19.155 s on an RTX 2080 Ti: 41x real time.",
    "S6": "vLLM performance benchmark, Buildkite build 9515 (buildkite.com/vllm/performance-benchmark/builds/9515), "
          "throughput_llama8B_tp1: Llama-3.1-8B on one H200, 200 ShareGPT prompts with their own output lengths, "
          "22.57 requests/s. Tokens per ShareGPT request from vLLM PR #18566 (github.com/vllm-project/vllm/pull/18566): "
          "229,711 input + 203,068 output tokens over 1,000 requests, 433 per request. Together: about 9,800 tokens/s "
          "(input and output counted alike) for an 8B model, used for Qwen2.5-7B-Instruct (7.6B).",
}
MEASURED = {
    "M1": "README 'Quick start', `make demo` on this project's 2-core machine (load about 2): probe 3.0 s for 4 sample "
          "videos, asr 25.8 s for 0.9 min of video with the embedded Whisper base on CPU (2x real time, model load "
          "included); the embedded Qwen2.5-Coder-1.5B on CTranslate2 int8 writes about 8 tokens/s for one request, "
          "12 tokens/s for a batch of four (README 'Embedded models'). Not in the table (other models than the "
          "projected ones), for scale: at 2x real time, LoMo's 4,700 h of audio would take about 2,200 h on one such "
          "machine with Whisper base, and large-v2 is slower.",
    "M2": "benchmarks/bench_scale.py --rows 1000,10000,100000 (README 'Scaling', 2026-12-02, load about 6 on 2 "
          "cores: other jobs shared them): `run probe` over 100,000 tiny files, 405 rows/s with the local runner in "
          "one process (389 rows/s on a local Ray; 590 and 341 in an earlier run at load 3-4): the runner's floor per "
          "row; a real video's probe reads every packet (probe.verify), so it costs more (I/O), and the clip and "
          "filter steps, also on CPU, are not measured.",
}
ASSUMPTIONS = {
    "A1": "ASSUMPTION: LoMo videos last 20 min on average (LoMo-Pipe's duration buckets run from 1-10 to 120+ min; "
          "no mean is published in the seeds).",
    "A2": "ASSUMPTION: LiveCC SFT source videos last 10 min on average (not published in the seeds).",
    "A3": "ASSUMPTION: speech at 2.5 words/s (the clips' words-per-second filter keeps 1-4) and 1.3 tokens per "
          "word; a LoMo transcript of 20 min is then about 3,000 words, 4,000 tokens.",
    "A4": "ASSUMPTION: LLM tokens per LoMo video (input + output): compress 8k (summary from the transcript, temporal "
          "pick, item, grounding checks), qa 2.5k, verify 12k (5 items x 4 rotations x ~600), blind 3k (20 x ~150): "
          "about 26k; translate about 8k (the transcript in and out); plausibility about 4k (a forward pass).",
    "A5": "ASSUMPTION: a LiveCC clip lasts about 100 s (the clips run 30-240 s): about 330 tokens of words; "
          "SFT candidate clips before the filters: one per 100 s of video, about 6 per 10-min video.",
    "A6": "ASSUMPTION: per clip, LM loss about 330 tokens (SFT, no previous text) or 530 (pre-training, with the title "
          "and the previous text); the prompt step (commentary judge + user query) about 500 in + 30 out; the VLM "
          "talking-head check about 560 (8 low-resolution frames of ~64 visual tokens, a short prompt, one answer).",
    "A7": "ASSUMPTION (bound): the pre-training rows count only the 5.05M clips that were kept; the clips the filters "
          "dropped cost too, so those rows are lower bounds on the clips and upper bounds per clip (8B rate).",
    "A8": "ASSUMPTION (bound): the SFT prompt step is charged for every candidate clip, although it runs only on the "
          "clips the words-per-second, LM-loss and talking-head filters keep: an upper bound.",
}

# --------------------------------------------------------------------------------------------
# The figures
# --------------------------------------------------------------------------------------------

LOMO_VIDEOS = 14_000  # S1
LOMO_MINUTES = 20  # A1
SFT_VIDEOS = 1_400_000  # S3
SFT_MINUTES = 10  # A2
PRETRAIN_CLIPS = 5_047_208  # S2
CLIP_SECONDS = 100  # A5
TOKENS_PER_CLIP = 330  # A3, A5

ASR_LARGE_V2 = 13 * 60 / 54  # S4: seconds of audio per GPU-second (V100S)
ASR_TURBO = 13 * 60 / 19.155  # S5: seconds of audio per GPU-second (RTX 2080 Ti)
LLM_TOKENS_PER_S = 22.57 * (229_711 + 203_068) / 1000  # S6: tokens per GPU-second (H200, 8B)
PROBE_ROWS_PER_S = 405  # M2: rows per second of one local process (tiny files: a floor)


@dataclass
class Row:
    product: str
    step: str
    work: float  #: in ``unit``
    unit: str
    rate: float  #: ``unit`` per GPU-second
    rate_text: str
    gpu: str
    notes: str  #: the sources of the work and of the rate
    bound: str = ""  #: "<=" for an upper bound, ">=" for a lower bound

    @property
    def gpu_hours(self) -> float:
        return self.work / self.rate / 3600


def rows() -> list[Row]:
    lomo_audio_s = LOMO_VIDEOS * LOMO_MINUTES * 60
    sft_audio_s = SFT_VIDEOS * SFT_MINUTES * 60
    sft_clips = SFT_VIDEOS * SFT_MINUTES * 60 / CLIP_SECONDS
    llm = f"{sig(LLM_TOKENS_PER_S)} tok/s"
    lomo = "LoMo 14k videos"
    sft = "LiveCC SFT 1.4M videos"
    pre = "LiveCC PT 5.05M clips"
    return [
        Row(lomo, "probe (CPU)", LOMO_VIDEOS, "rows", PROBE_ROWS_PER_S, f"{PROBE_ROWS_PER_S} rows/s", "1 process (here)",
            "S1 M2", ">="),
        Row(lomo, "asr (large-v2, beam 5)", lomo_audio_s, "s of audio", ASR_LARGE_V2, f"{ASR_LARGE_V2:.0f}x real time",
            "V100S", "S1 A1 S4"),
        Row(lomo, "plausibility (LM loss)", LOMO_VIDEOS * 4_000, "tokens", LLM_TOKENS_PER_S, llm, "H200", "A3 A4 S6", "<="),
        Row(lomo, "translate (m2m100 1.2B)", LOMO_VIDEOS * 8_000, "tokens", LLM_TOKENS_PER_S, llm, "H200", "A4 S6", "<="),
        Row(lomo, "compress, qa, verify, blind", LOMO_VIDEOS * 26_000, "tokens", LLM_TOKENS_PER_S, llm, "H200", "A4 S6", "<="),
        Row(sft, "probe (CPU)", SFT_VIDEOS, "rows", PROBE_ROWS_PER_S, f"{PROBE_ROWS_PER_S} rows/s", "1 process (here)",
            "S3 M2", ">="),
        Row(sft, "asr (large-v3-turbo)", sft_audio_s, "s of audio", ASR_TURBO, f"{ASR_TURBO:.0f}x real time",
            "RTX 2080 Ti", "S3 A2 S5"),
        Row(sft, "lm_loss (Qwen2-1.5B)", sft_clips * TOKENS_PER_CLIP, "tokens", LLM_TOKENS_PER_S, llm, "H200",
            "A5 A6 S6", "<="),
        Row(sft, "prompt (7B LLM)", sft_clips * 530, "tokens", LLM_TOKENS_PER_S, llm, "H200", "A5 A6 A8 S6", "<="),
        Row(pre, "lm_loss (Qwen2-1.5B)", PRETRAIN_CLIPS * 530, "tokens", LLM_TOKENS_PER_S, llm, "H200", "S2 A6 A7 S6"),
        Row(pre, "talking_head (Qwen2-VL-2B)", PRETRAIN_CLIPS * 560, "tokens", LLM_TOKENS_PER_S, llm, "H200",
            "S2 A6 A7 S6"),
    ]


def sig(x: float, digits: int = 2) -> str:
    """``x`` to ``digits`` significant figures, with thousands separators."""
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    rounded = round(x, digits - 1 - magnitude)
    if magnitude >= digits - 1:
        return f"{int(rounded):,}"
    return f"{rounded:.{digits - 1 - magnitude}f}"


def hours_text(hours: float) -> str:
    """Hours to two significant figures; under 0.1 h as minutes, under a minute as seconds."""
    if hours >= 0.1:
        return sig(hours)
    if hours * 60 >= 1:
        return f"{sig(hours * 60)} min"
    return f"{sig(hours * 3600)} s"


def work_text(r: Row) -> str:
    if r.unit == "rows":
        return f"{sig(r.work)} rows"
    if r.unit == "s of audio":
        return f"{sig(r.work / 3600)} h audio"
    return f"{sig(r.work / 1e6)}M tokens"


def table(markdown: bool = False) -> str:
    header = ["product", "step", "work", "rate", "measured on"] + [f"h on {n}" for n in GPUS] + ["sources"]
    body = []
    totals: dict[str, float] = {}
    order: list[str] = []
    for r in rows():
        if r.product not in totals:
            order.append(r.product)
            totals[r.product] = 0.0
        if r.unit != "rows":  # the CPU rows run beside the GPU steps, on the nodes' cores
            totals[r.product] += r.gpu_hours
        body.append([r.product, r.step, work_text(r), r.rate_text, r.gpu]
                    + [r.bound + hours_text(r.gpu_hours / n) for n in GPUS] + [r.notes])
    for product in order:
        body.append([product, "total of the GPU rows", "", "", ""]
                    + [hours_text(totals[product] / n) for n in GPUS] + ["rows above"])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(row[i])) for row in [header] + body) for i in range(len(header))]
    right = {2, 3, 5, 6, 7}
    out = []
    for k, row in enumerate([header] + body):
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        out.append("  ".join(cells).rstrip())
        if k == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def footnotes(width: int = 110) -> str:
    import textwrap

    def note(key: str, text: str) -> str:
        return textwrap.fill(text, width, initial_indent=f"  [{key}] ", subsequent_indent=" " * 7)

    lines = ["Sources (published):"]
    lines += [note(k, v) for k, v in SOURCES.items()]
    lines.append("Measured on this project's 2-core CPU machine:")
    lines += [note(k, v) for k, v in MEASURED.items()]
    lines.append("Assumptions of this script (not published figures):")
    lines += [note(k, v) for k, v in ASSUMPTIONS.items()]
    lines.append(textwrap.fill(
        "'<=': an upper bound, '>=': a lower bound (see the docstring); 'h on N' = hours / N (N GPUs, or N processes "
        "for a CPU row), an even split, no model loads or I/O; the totals add hours of different GPUs (V100S / RTX "
        "2080 Ti for ASR, H200 for the LLM steps) and leave the CPU rows out.", width))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    print(table(markdown=args.markdown))
    print()
    print(footnotes())


if __name__ == "__main__":
    main()
