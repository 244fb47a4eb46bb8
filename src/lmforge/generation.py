"""Batched generation with the encoding the model was trained on.

Prompts are encoded exactly as the fine-tuning objective encoded sources
(:func:`lmforge.objectives.sft.seq2seq_source_ids` / ``causal_prompt_ids``), sorted by
length so a batch wastes little padding, generated with ``model.generate``, and decoded back
in the caller's order. Causal models return only the new text, never the prompt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmforge.errors import UserError
from lmforge.models import model_kind
from lmforge.objectives.sft import causal_prompt_ids, seq2seq_source_ids


@dataclass
class DecodingSettings:
    """The decoding strategy; ``seed`` makes sampling reproducible without global state."""

    max_new_tokens: int = 64
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0
    seed: int | None = None

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.num_beams < 1:
            raise UserError(f"num_beams must be at least 1, got {self.num_beams}")
        if self.do_sample and self.temperature <= 0:
            raise UserError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs = asdict(self)
        kwargs.pop("seed")
        if not self.do_sample:
            for key in ("temperature", "top_k", "top_p"):
                kwargs.pop(key)
        if self.num_beams == 1:
            kwargs.pop("length_penalty")
        return kwargs


def encode_prompt(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: str, max_source_length: int
) -> list[int]:
    """The token ids the model sees for ``source`` (a rendered task template)."""
    if model_kind(model) == "seq2seq":
        return seq2seq_source_ids(tokenizer, source, max_source_length)
    return causal_prompt_ids(tokenizer, source)[-max_source_length:]


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: list[str],
    settings: DecodingSettings | None = None,
    *,
    batch_size: int = 16,
    max_source_length: int = 512,
) -> list[str]:
    """Generate one text per source, batched by length, returned in the input order."""
    settings = settings or DecodingSettings()
    settings.check()
    seq2seq = model_kind(model) == "seq2seq"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [encode_prompt(model, tokenizer, s, max_source_length) for s in sources]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    outputs: list[str] = [""] * len(encoded)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with _seeded(settings.seed):
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                width = max(len(encoded[i]) for i in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    n = len(encoded[i])
                    # seq2seq pads on the right; causal on the left so new tokens follow on.
                    cols = slice(0, n) if seq2seq else slice(width - n, width)
                    ids[row, cols] = torch.tensor(encoded[i])
                    mask[row, cols] = 1
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    pad_token_id=pad,
                    eos_token_id=tokenizer.eos_token_id,
                    **settings.generate_kwargs(),
                )
                new = out if seq2seq else out[:, width:]
                texts = tokenizer.batch_decode(new, skip_special_tokens=True)
                for i, text in zip(chunk, texts, strict=True):
                    outputs[i] = text.strip()
    finally:
        model.train(was_training)
    return outputs
