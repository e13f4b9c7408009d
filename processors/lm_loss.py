"""Pure-text filtering by causal LM loss (LiveCC A2 / B4).

Per clip: the mean cross-entropy of the transcript given the video title (and the transcript
before the clip when there is one), in the seed's chat layout::

    system:    You are a helpful assistant.
    user:      Video Title: {title}
               [Previous transcription: {previous}]
               Please try to output the possible speech transcription of the video ...
    assistant: {transcript}

The prompt is rendered by the tokenizer's own chat template. Only the assistant's content
tokens count: not the prompt, not the end-of-turn token or what follows it. Rows are scored in
padded batches (right padding, attention mask) and each row's loss is averaged over its own
tokens, so a row scores the same alone and inside a batch. A ``Filter`` on ``lm_loss`` keeps a
band (1.5 to 5 in the seed's SFT run): too low is repetitive or boilerplate text, too high is
noise or a transcript unrelated to its title.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from datasets import Features

from lomo_datasets.core import features as F
from lomo_datasets.models.zoo import is_embedded, resolve_model
from lomo_datasets.processors.clip import join_words
from lomo_datasets.core.stage import SettingError, Stage

logger = logging.getLogger(__name__)

SYSTEM = "You are a helpful assistant."
ASK_FROM_START = "Please try to output the possible speech transcription of the video from start to end."
ASK_FOLLOWING = "Please try to output the possible speech transcription of the video following previous transcription."


# --------------------------------------------------------------------------------------------
# Conversations and labels
# --------------------------------------------------------------------------------------------


def transcript(row: dict[str, Any]) -> str:
    """The clip's transcript: its ``content`` words joined by spaces."""
    return join_words(row.get("content") or [])


def conversation(title: str | None, text: str, previous: str | None = None) -> list[dict[str, str]]:
    """The seed's three-turn layout; with ``previous`` the user turn includes it."""
    if previous:
        user = f"Video Title: {title or ''}\nPrevious transcription: {previous}\n{ASK_FOLLOWING}"
    else:
        user = f"Video Title: {title or ''}\n{ASK_FROM_START}"
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user},
        {"role": "assistant", "content": text},
    ]


def _ids(encoded) -> list[int]:
    ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    return list(ids)


def encode(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], int, int]:
    """Token ids of the conversation and the ``[first, last)`` range of the assistant's
    content tokens (end-of-turn token excluded).

    The prompt part is the template rendered up to the generation prompt; the content ends
    before the last end-of-turn token (``tokenizer.eos_token``, e.g. ``<|im_end|>``).
    """
    full = _ids(tokenizer.apply_chat_template(messages, tokenize=True))
    prompt = _ids(tokenizer.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True))
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
    end_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token) if tokenizer.eos_token else None
    last = len(full)
    if end_id is not None and end_id in full[len(prompt):]:
        last = len(prompt) + full[len(prompt):].index(end_id)
    return full, len(prompt), last


def batch_losses(model, tokenizer, conversations: list[list[dict[str, str]]], max_tokens: int | None = None) -> list[float]:
    """Mean next-token loss over each conversation's assistant content tokens, in one padded
    forward pass (right padding)."""
    import torch

    encoded = [encode(tokenizer, c) for c in conversations]
    if max_tokens:
        for k, (ids, first, last) in enumerate(encoded):
            if len(ids) > max_tokens:
                raise ValueError(f"conversation has {len(ids)} tokens, over max_tokens={max_tokens}")
    width = max(len(ids) for ids, _, _ in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for k, (ids, first, last) in enumerate(encoded):
        input_ids[k, : len(ids)] = torch.tensor(ids)
        attention[k, : len(ids)] = 1
        labels[k, first:last] = input_ids[k, first:last]
    device = next(model.parameters()).device
    targets = labels[:, 1:].to(device)  # position t predicts token t + 1
    counted = targets != -100
    with torch.inference_mode():
        decoder, head = _decoder_and_head(model)
        if decoder is not None:
            # Vocabulary logits only where a label is counted: a batch of long transcripts
            # would otherwise hold batch x length x vocabulary floats.
            hidden = decoder(input_ids=input_ids.to(device), attention_mask=attention.to(device)).last_hidden_state
            logits = head(hidden[:, :-1][counted]).float()
        else:
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits[:, :-1][counted].float()
        per_token = torch.nn.functional.cross_entropy(logits, targets[counted], reduction="none")
    rows = torch.arange(len(encoded), device=device).unsqueeze(1).expand_as(targets)[counted]
    sums = torch.zeros(len(encoded), device=device, dtype=per_token.dtype).index_add_(0, rows, per_token)
    n = counted.sum(dim=1)
    losses = sums / n.clamp(min=1)
    return [float(loss) if k > 0 else float("nan") for loss, k in zip(losses.tolist(), n.tolist())]


def _decoder_and_head(model):
    """The base decoder and the output projection of a plain causal LM (Llama, Qwen2, ...),
    or ``(None, None)`` for models whose logits need more than ``lm_head(hidden)``."""
    if getattr(model.config, "final_logit_softcapping", None) or getattr(model.config, "logit_scale", None):
        return None, None
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is None or head is None or decoder is model:
        return None, None
    return decoder, head


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


@dataclass
class LMLoss(Stage):
    """Writes ``lm_loss``: the causal LM loss of each clip's transcript given its title (and
    previous transcript). Pair it with ``Filter("lm_loss", "lm_loss", low, high)``.

    ``use_previous``: put the transcript before the clip (``previous`` or ``preasr``) in the
    prompt, as the seed's pre-training run did; ``max_previous_words`` keeps only its last
    words so long videos do not blow the context (the seed kept it all).
    """

    name = "lm_loss"
    version = "1"
    reads = ("content",)  # and title, previous, preasr when present
    requires = {"torch": "llm", "transformers": "llm"}
    start_method = "spawn"
    rows_per_batch = 8
    embedded_setting = "model"
    embedded_model = "embedded:smollm2-135m"

    #: Hub id, local folder, or ``embedded:smollm2-135m`` (the seed used Qwen2-1.5B-Instruct).
    model: str = "Qwen/Qwen2-1.5B-Instruct"
    batch_size: int = 8
    use_previous: bool = True
    max_previous_words: int | None = 512
    max_tokens: int | None = 8192
    #: "auto" (float32 on CPU, bfloat16 on GPU), "float32", "bfloat16" or "float16".
    dtype: str = "auto"
    #: torch CPU threads per model call (fixed: the losses depend on it).
    cpu_threads: int = 1

    @property
    def lm(self):
        """``(model, tokenizer)`` of this process (``Stage.loaded_model``)."""
        return self.loaded_model

    def validate(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise SettingError("lm_loss.model: give a hub id, a local folder, or embedded:smollm2-135m")
        if is_embedded(self.model):
            resolve_model(self.model)  # unknown or missing embedded models fail now
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise SettingError(f"lm_loss.batch_size={self.batch_size!r}: use an integer >= 1")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise SettingError(f"lm_loss.dtype={self.dtype!r}: use auto, float32, bfloat16 or float16")
        if self.max_previous_words is not None and (not isinstance(self.max_previous_words, int) or self.max_previous_words < 0):
            raise SettingError(f"lm_loss.max_previous_words={self.max_previous_words!r}: use an integer >= 0 or null")

    def features(self) -> Features:
        return Features({"lm_loss": F.LIVECC["lm_loss"]})

    def model_key(self) -> tuple:
        return (self.model, self.dtype)

    def model_library(self) -> str:
        return "torch"

    def load_model(self, device: str):
        from lomo_datasets.models.zoo import load_causal_lm

        # The LLM layer's loader: embedded GGUF models are dequantized once into the cache dir.
        return load_causal_lm(self.model, device, self.dtype)

    def messages(self, row: dict[str, Any]) -> list[dict[str, str]]:
        text = transcript(row)
        if not text:
            raise ValueError("the clip has no transcript (empty 'content')")
        previous = None
        if self.use_previous:
            previous = row.get("previous") or row.get("preasr") or None
            if previous and self.max_previous_words is not None:
                words = previous.split()
                previous = " ".join(words[-self.max_previous_words:]) if self.max_previous_words else None
        return conversation(row.get("title"), text, previous)

    def prepare(self, row: dict[str, Any]) -> list[dict[str, str]]:
        return self.messages(row)

    def run_batch(self, items: list[list[dict[str, str]]]) -> list[float]:
        model, tokenizer = self.lm
        losses: list[float] = []
        for b in range(0, len(items), self.batch_size):
            losses.extend(batch_losses(model, tokenizer, items[b : b + self.batch_size], self.max_tokens))
        return losses

    def finish(self, row: dict[str, Any], loss: float) -> dict[str, Any]:
        return {"lm_loss": loss}


__all__ = ["LMLoss", "conversation", "encode", "batch_losses", "transcript"]
