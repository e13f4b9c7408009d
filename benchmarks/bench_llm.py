"""Throughput of the LLM layer with the embedded SmolLM2-135M on the same 32 prompts.

Rows of the table:

- raw generate, batch 1 / batch 32: ``model.generate`` with no layer and no grammar (the LoMo
  seed generated one prompt at a time);
- layer (transformers + xgrammar), batch 1 / batch 32: ``Backend.generate_json`` as the stages
  call it (chat template, left padding, grammar, validation);
- layer (ctranslate2), batch 32: the CTranslate2 conversion (int8), same prompts.

Every row uses the same task (a JSON summary, ``max_new_tokens`` below). Items/s counts prompts
answered (valid or not); "valid" is how many parsed and validated.

    python benchmarks/bench_llm.py [--threads N] [--max-new-tokens 48] [--skip-batch1]
"""

from __future__ import annotations

import argparse
import time

TOPICS = [
    "boiling pasta in a large pot", "a football striker scoring a header", "a walk through an old town market",
    "repairing a flat bicycle tyre", "a cat chasing a red laser dot", "rain falling on a glass roof",
    "boats passing under a stone bridge", "a pianist playing at a concert", "a child building a sandcastle",
    "a chef slicing onions", "a dog fetching a stick in a park", "snow covering a mountain village",
]


def prompts(n: int = 32) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f"Video {i}: {TOPICS[i % len(TOPICS)]}. Summarize what is visible as JSON "
                                     '{"summary": "..."}.'}]
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch/CTranslate2 (0: default)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--skip-batch1", action="store_true", help="skip the slow batch-1 rows")
    args = parser.parse_args()

    import torch

    from lomo_datasets.llm.stage import LLMSettings, TaskSpec, chat_text, load_causal_lm, make_backend

    if args.threads:
        torch.set_num_threads(args.threads)
    n_tok = args.max_new_tokens
    schema = {"type": "object", "properties": {"summary": {"type": "string", "minLength": 1, "maxLength": 4 * n_tok}},
              "required": ["summary"], "additionalProperties": False}
    task = TaskSpec("bench.summary", schema, max_new_tokens=n_tok)
    msgs = prompts(32)
    rows: list[tuple[str, float, int, int]] = []

    lm, tok = load_causal_lm("embedded:smollm2-135m", "cpu")
    texts = [chat_text(tok, m) for m in msgs]

    def raw(batch: int) -> tuple[float, int]:
        generated = 0
        start = time.perf_counter()
        for i in range(0, len(texts), batch):
            enc = tok(texts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                out = lm.generate(**enc, max_new_tokens=n_tok, do_sample=False, pad_token_id=tok.pad_token_id)
            generated += int((out[:, enc["input_ids"].shape[1]:] != tok.pad_token_id).sum())
        return time.perf_counter() - start, generated

    def layer(backend_name: str, batch: int) -> tuple[float, int, int]:
        settings = LLMSettings(backend=backend_name, model="embedded:smollm2-135m", batch_size=batch, max_tries=1,
                               cpu_threads=args.threads)
        backend = make_backend(settings, "cpu")
        backend.generate(msgs[:2], task)  # warm-up (grammar compile, first-call allocations)
        start = time.perf_counter()
        results = backend.generate_json(msgs, task)
        return time.perf_counter() - start, sum(isinstance(r, dict) for r in results), len(results)

    raw(32)  # warm-up
    if not args.skip_batch1:
        seconds, _ = raw(1)
        rows.append(("raw generate, batch 1", seconds, 32, -1))
    seconds, _ = raw(32)
    rows.append(("raw generate, batch 32", seconds, 32, -1))
    if not args.skip_batch1:
        seconds, valid, n = layer("transformers", 1)
        rows.append(("layer transformers+xgrammar, batch 1", seconds, n, valid))
    seconds, valid, n = layer("transformers", 32)
    rows.append(("layer transformers+xgrammar, batch 32", seconds, n, valid))
    seconds, valid, n = layer("ctranslate2", 32)
    rows.append(("layer ctranslate2 int8, batch 32", seconds, n, valid))
    if not args.skip_batch1:
        seconds, valid, n = layer("ctranslate2", 1)
        rows.append(("layer ctranslate2 int8, batch 1", seconds, n, valid))

    print(f"\nSmolLM2-135M, 32 prompts, max_new_tokens={n_tok}, torch threads={torch.get_num_threads()}\n")
    print(f"{'run':<42} {'seconds':>8} {'items/s':>8} {'valid':>6}")
    rate = {}
    for name, seconds, n, valid in rows:
        rate[name] = n / seconds
        print(f"{name:<42} {seconds:8.2f} {n / seconds:8.2f} {('-' if valid < 0 else f'{valid}/{n}'):>6}")
    print()
    if not args.skip_batch1:
        raw_x = rate["raw generate, batch 32"] / rate["raw generate, batch 1"]
        layer_x = rate["layer transformers+xgrammar, batch 32"] / rate["layer transformers+xgrammar, batch 1"]
        print(f"batched vs batch-1, raw generate:        {raw_x:5.2f}x")
        lomo_x = rate["layer transformers+xgrammar, batch 32"] / rate["raw generate, batch 1"]
        print(f"batched vs batch-1, layer:               {layer_x:5.2f}x")
        print(f"layer batch 32 vs raw batch 1 (the LoMo way; target >= 8): {lomo_x:5.2f}x")
        print(f"layer batch 32 vs raw batch 32 (target >= 0.9): {rate['layer transformers+xgrammar, batch 32'] / rate['raw generate, batch 32']:5.2f}")
        ct2_1 = rate["layer ctranslate2 int8, batch 1"] / rate["layer transformers+xgrammar, batch 1"]
        print(f"ctranslate2 vs transformers, batch 1 (target >= 2):  {ct2_1:5.2f}x")
    ct2_x = rate["layer ctranslate2 int8, batch 32"] / rate["layer transformers+xgrammar, batch 32"]
    print(f"ctranslate2 vs transformers, batch 32 (target >= 2): {ct2_x:5.2f}x")


if __name__ == "__main__":
    main()
