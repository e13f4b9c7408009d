"""``backend=ctranslate2``: ``ctranslate2.Generator.generate_batch`` on a converted model.

Structured output: ``Generator.generate_batch`` has no logits-processor hook in CTranslate2 4.x
(only ``callback``, which can stop but not mask). So this backend shows the reply's JSON template
in the prompt (``json_shape.with_shape``: fields, lengths, choices), forces the JSON opening
(``{"<first property>":``) into the assistant turn, decodes greedily, keeps the first complete
JSON value (``json.JSONDecoder.raw_decode``; text after it is dropped), then validates; invalid
items are retried with sampling, then get an error. It is the fast path for well-behaved
(larger) models such as ``embedded:qwen2.5-coder-1.5b`` (what ``--embedded`` uses); for a 135M
model prefer transformers + xgrammar.

Its retries tell the model why its last reply was refused (the validation error, with lengths
and counts as numbers), without showing the reply: small models repeat it.

The model: ``lomo_datasets.models.zoo.ct2_model_dir`` makes a CTranslate2 conversion once.
"""

from __future__ import annotations

import json
from typing import Any

from lomo_datasets.core.stage import resolve_device, split_device
from lomo_datasets.llm.backends.base import (
    Backend,
    Completion,
    LLMSettings,
    TaskSpec,
    _per_item,
    _seed,
    chat_text,
    register_backend,
)
from lomo_datasets.llm.json_shape import with_shape
from lomo_datasets.models.zoo import ct2_model_dir


@register_backend
class CTranslate2Backend(Backend):
    """``ctranslate2.Generator.generate_batch`` on a converted model (no grammar hook: a forced
    JSON opening, then validate and retry; see the module docstring)."""

    name = "ctranslate2"
    modules = {"ctranslate2": "llm", "transformers": "llm"}
    library = "ctranslate2"
    list_order = 1
    feedback = True

    def __init__(self, settings: LLMSettings, device: str = "cpu"):
        super().__init__(settings, device)
        import ctranslate2
        from transformers import AutoTokenizer

        path = ct2_model_dir(settings.model, settings.quantization)
        kind, index = split_device(resolve_device(None, device, "ctranslate2"))
        # The folder's config.json is CTranslate2's, which transformers 5 takes for an old Mistral
        # tokenizer's and warns about; these tokenizers are not Mistral's.
        self.tokenizer = AutoTokenizer.from_pretrained(path, fix_mistral_regex=False)
        compute = settings.quantization if kind == "cpu" else "auto"
        self.generator = ctranslate2.Generator(
            path, device=kind, device_index=index, compute_type=compute,
            inter_threads=1, intra_threads=settings.cpu_threads if kind == "cpu" else 0,
        )

    def _prefill(self, task: TaskSpec) -> str:
        first = task.first_property()
        return f'{{"{first}":' if first else "{"

    def generate(self, messages_list, task, sample=0):
        tasks = _per_item(task, len(messages_list))
        prefills = [self._prefill(t) for t in tasks]
        # No grammar: the prompt shows the reply's JSON template (fields, lengths, choices).
        tokens = [
            self.tokenizer.convert_ids_to_tokens(
                self.tokenizer.encode(chat_text(self.tokenizer, with_shape(m, t.schema), p), add_special_tokens=False)
            )
            for m, t, p in zip(messages_list, tasks, prefills)
        ]
        kwargs: dict[str, Any] = dict(
            max_batch_size=self.settings.batch_size, max_length=max(t.max_new_tokens for t in tasks),
            include_prompt_in_result=False, return_end_token=True,
        )
        if self.tokenizer.eos_token:
            kwargs["end_token"] = self.tokenizer.eos_token
        if sample:
            import ctranslate2

            ctranslate2.set_random_seed(_seed([str(t) for t in tokens], sample))
            kwargs.update(sampling_topk=40, sampling_topp=0.95, sampling_temperature=self.settings.temperature)
        try:
            results = self.generator.generate_batch(tokens, **kwargs)
        except Exception as exc:
            return [exc] * len(tokens)
        eos = self.tokenizer.eos_token_id
        out = []
        decoder = json.JSONDecoder()
        for res, prefill, t in zip(results, prefills, tasks):
            ids = res.sequences_ids[0]
            finished = bool(ids) and ids[-1] == eos and len(ids) <= t.max_new_tokens + 1
            body = ids[:-1] if finished else ids
            text = prefill + self.tokenizer.decode(body, skip_special_tokens=True)
            # Unconstrained models often keep writing after the object closes: keep the first
            # complete JSON value (parsed by the JSON decoder, not by pattern matching).
            try:
                _, end = decoder.raw_decode(text)
                text, finished = text[:end], True
            except json.JSONDecodeError:
                pass
            out.append(Completion(text, finished))
        return out
