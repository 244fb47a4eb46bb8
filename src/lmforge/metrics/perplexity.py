"""Perplexity: exp of the mean negative log-likelihood per target token, over the whole set.

The mean is exact: the sum of every target token's NLL divided by the number of target
tokens, not a mean of per-batch or per-example means (which would weigh a short text as
much as a long one and change with the batch size).

What is scored follows how lmforge trains (:mod:`lmforge.objectives`):

* causal model, plain texts: each text as packed pretraining sees it, after an eos (the
  previous document's end) and followed by eos; every text token and the final eos are
  targets. Texts longer than the model's context are cut to ``max_length`` tokens.
* causal model, (source, target) pairs: the ``causal_sft`` sequence ``source [SEP] target
  </s>``; only the target and its eos are scored.
* seq2seq model, (source, target) pairs: the ``seq2seq_sft`` encoding; the target and its
  eos are scored given the source.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmforge import __version__
from lmforge.config import ObjectiveConfig
from lmforge.errors import UserError
from lmforge.metrics import MetricResult
from lmforge.models import model_kind
from lmforge.objectives import sft
from lmforge.objectives.causal_lm import special_token_id

IGNORE = -100  # label of positions that are not scored


def _context_length(model: PreTrainedModel) -> int | None:
    config = model.config
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None  # relative positions (T5): no fixed limit


def _split_inputs(texts_or_pairs: Sequence[str] | Sequence[Sequence[str]]) -> str:
    """``text`` when every item is a string, ``pairs`` when every item is (source, target)."""
    if isinstance(texts_or_pairs, str) or not texts_or_pairs:
        raise UserError("perplexity needs a non-empty list of texts or (source, target) pairs")
    first_is_text = isinstance(texts_or_pairs[0], str)
    for i, item in enumerate(texts_or_pairs):
        is_text = isinstance(item, str)
        is_pair = (
            not is_text
            and isinstance(item, Sequence)
            and len(item) == 2
            and all(isinstance(s, str) for s in item)
        )
        if not (is_text or is_pair):
            raise UserError(
                f"texts_or_pairs[{i}] is {item!r:.60}; expected a text or a (source, target) "
                "pair of strings"
            )
        if is_text != first_is_text:
            raise UserError(
                f"texts_or_pairs[{i}] is a {'text' if is_text else 'pair'} but "
                f"texts_or_pairs[0] is a {'text' if first_is_text else 'pair'}; give only "
                "texts or only (source, target) pairs"
            )
    return "text" if first_is_text else "pairs"


def _encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int | None
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """(input_ids, labels) per text, and how many texts were cut to ``max_length``."""
    eos = special_token_id(tokenizer, "eos_token", "perplexity")
    encoded, truncated = [], 0
    for i, ids in enumerate(tokenizer(list(texts), add_special_tokens=False)["input_ids"]):
        if not ids:
            raise UserError(f"texts[{i}] has no tokens; perplexity needs at least one")
        input_ids = [eos, *ids, eos]
        if max_length is not None and len(input_ids) > max_length:
            input_ids, truncated = input_ids[:max_length], truncated + 1
        encoded.append((input_ids, [IGNORE, *input_ids[1:]]))
    return encoded, truncated


def _encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[Sequence[str]],
    seq2seq: bool,
    cfg: ObjectiveConfig,
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per pair, exactly as the fine-tuning objective encodes them."""
    data = Dataset.from_dict({"source": [p[0] for p in pairs], "target": [p[1] for p in pairs]})
    prepare = sft.seq2seq_prepare if seq2seq else sft.causal_prepare
    prepared = prepare(data, tokenizer, cfg, 0)
    return list(zip(prepared["input_ids"], prepared["labels"], strict=True))


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    # Right padding: causal attention keeps the real tokens' logits unchanged, and padded
    # labels are IGNORE, so the padding value itself never matters.
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


@torch.inference_mode()
def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts_or_pairs: Sequence[str] | Sequence[Sequence[str]],
    batch_size: int = 8,
    *,
    max_length: int | None = None,
    max_source_length: int | None = None,
    max_target_length: int | None = None,
) -> MetricResult:
    """Token-level perplexity of ``model`` on texts (causal) or (source, target) pairs.

    ``details`` has ``nll`` (mean NLL per target token, nats), ``tokens`` (target tokens
    scored), ``examples`` and ``truncated``; ``per_example`` the perplexity of each item.
    ``max_length`` caps plain texts (default: the model's context); the source/target
    limits default to the fine-tuning defaults of :class:`~lmforge.config.ObjectiveConfig`.
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    mode = _split_inputs(texts_or_pairs)
    try:
        kind = model_kind(model)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if kind == "encoder":
        raise UserError("perplexity needs a causal or seq2seq language model, not an encoder")
    context = _context_length(model)
    truncated = 0
    if mode == "text":
        if kind == "seq2seq":
            raise UserError(
                "a seq2seq model scores a target given a source: pass (source, target) pairs"
            )
        examples, truncated = _encode_texts(tokenizer, texts_or_pairs, max_length or context)
        scored = "text+eos|after:eos"
    else:
        defaults = ObjectiveConfig()
        cfg = ObjectiveConfig(
            max_source_length=max_source_length or defaults.max_source_length,
            max_target_length=max_target_length or defaults.max_target_length,
        )
        examples = _encode_pairs(tokenizer, texts_or_pairs, kind == "seq2seq", cfg)
        scored = "target+eos|given:source"
    if kind == "causal" and context is not None:
        for i, (input_ids, _) in enumerate(examples):
            if len(input_ids) > context:
                raise UserError(
                    f"example {i} is {len(input_ids)} tokens, longer than the model's context "
                    f"of {context}; lower max_source_length / max_target_length"
                )

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    nll_sums = [0.0] * len(examples)
    token_counts = [0] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i][0]))  # less padding
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            input_ids = _pad([examples[i][0] for i in chunk], pad).to(device)
            labels = _pad([examples[i][1] for i in chunk], IGNORE).to(device)
            attention_mask = _pad([[1] * len(examples[i][0]) for i in chunk], 0).to(device)
            if kind == "seq2seq":
                # The model builds decoder inputs from the labels; logits align with labels.
                logits = model(
                    input_ids=input_ids, attention_mask=attention_mask, labels=labels
                ).logits
                targets = labels
            else:
                logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
                logits, targets = logits[:, :-1], labels[:, 1:]  # position t predicts t + 1
            nll = F.cross_entropy(
                logits.float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none"
            )  # (batch, length), 0 where ignored
            row_sums = nll.double().sum(dim=1).tolist()
            row_counts = (targets != IGNORE).sum(dim=1).tolist()
            for i, total, count in zip(chunk, row_sums, row_counts, strict=True):
                nll_sums[i], token_counts[i] = total, count
    finally:
        model.train(was_training)

    tokens = sum(token_counts)
    mean_nll = math.fsum(nll_sums) / tokens
    return MetricResult(
        name="perplexity",
        score=math.exp(mean_nll),
        signature=(
            f"perplexity|kind:{kind}|scored:{scored}|vocab:{len(tokenizer)}|tokens:{tokens}"
            f"|agg:token-mean|version:lmforge-{__version__}"
        ),
        details={
            "nll": mean_nll,
            "tokens": tokens,
            "examples": len(examples),
            "truncated": truncated,
        },
        per_example=[math.exp(s / n) for s, n in zip(nll_sums, token_counts, strict=True)],
    )
