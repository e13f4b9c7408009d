"""``backend=transformers``: batched ``model.generate`` with left padding, the chat template and
xgrammar.

Structured output: xgrammar (``xgr.contrib.hf.LogitsProcessor``) masks the logits with the task's
JSON-schema grammar at every step. Chosen because it works with the installed transformers 5.x
and a GGUF-loaded tokenizer (``TokenizerInfo.from_huggingface``), handles a left-padded batch,
and costs nothing measurable per step; lm-format-enforcer and outlines pin older transformers
APIs. A fresh processor is made per ``generate`` call (it keeps per-row matcher state); the
compiled grammar is cached per schema.

The model: ``lomo_datasets.models.zoo.load_causal_lm(model, device, dtype)`` loads a
transformers causal LM once per process; ``embedded:smollm2-135m`` and ``*.gguf`` files are
dequantized once into ``$LOMO_DATASETS_CACHE/models`` (``hf_model_dir``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from lomo_datasets.core.stage import resolve_device
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
from lomo_datasets.models.zoo import load_causal_lm

logger = logging.getLogger(__name__)


@register_backend
class TransformersBackend(Backend):
    """Batched ``model.generate`` with left padding, the chat template and xgrammar."""

    name = "transformers"
    modules = {"torch": "llm", "transformers": "llm", "xgrammar": "llm"}
    library = "torch"
    list_order = 0

    def __init__(self, settings: LLMSettings, device: str = "cpu"):
        super().__init__(settings, device)
        self.device = resolve_device(None, device, "torch")
        if self.device == "cpu":
            import torch

            torch.set_num_threads(settings.cpu_threads)  # per worker process
        self.lm, self.tokenizer = load_causal_lm(settings.model, self.device, settings.dtype)
        self._compiler = None
        self._grammars: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _grammar(self, task: TaskSpec) -> Any:
        import xgrammar as xgr

        key = task.schema_json()
        with self._lock:
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.lm.config.vocab_size)
                self._compiler = xgr.GrammarCompiler(info)
            if key not in self._grammars:
                self._grammars[key] = self._compiler.compile_json_schema(key, any_whitespace=False)
            return self._grammars[key]

    def generate(self, messages_list, task, sample=0):
        import torch

        tasks = _per_item(task, len(messages_list))
        texts = [chat_text(self.tokenizer, m) for m in messages_list]
        # Similar lengths together: less padding per batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list[Any] = [None] * len(texts)
        eos_ids = self._eos_ids()
        bs = self.settings.batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            try:
                outs = self._generate_batch([texts[i] for i in idx], [tasks[i] for i in idx], sample, eos_ids, torch)
            except Exception as exc:  # a failed batch fails its items, not the call
                logger.warning("%s: generate failed: %s", tasks[idx[0]].name, exc)
                outs = [exc] * len(idx)
            for i, out in zip(idx, outs):
                results[i] = out
        return results

    def _eos_ids(self) -> set[int]:
        ids = self.lm.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, (list, tuple)) else [ids]) if ids is not None else set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _generate_batch(self, texts, tasks, sample, eos_ids, torch):
        import xgrammar as xgr

        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        grammars = [self._grammar(t) for t in tasks]
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max(t.max_new_tokens for t in tasks),
            pad_token_id=self.tokenizer.pad_token_id,
            # one grammar per row (the same object for all rows when the task is shared)
            logits_processor=[xgr.contrib.hf.LogitsProcessor(grammars if len(set(map(id, grammars))) > 1 else grammars[0])],
        )
        if sample:
            # Retries sample; seeded from the prompts so reruns give the same rows.
            torch.manual_seed(_seed(texts, sample))
            kwargs.update(do_sample=True, temperature=self.settings.temperature, top_p=0.95)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.lm.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        completions = []
        for ids, t in zip(new, tasks):
            cut = next((k for k, tok in enumerate(ids) if tok in eos_ids), None)
            finished = cut is not None and cut <= t.max_new_tokens
            body = ids if cut is None else ids[:cut]
            completions.append(Completion(self.tokenizer.decode(body, skip_special_tokens=True), finished))
        return completions
