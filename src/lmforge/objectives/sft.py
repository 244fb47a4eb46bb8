"""Supervised fine-tuning on (source, target) pairs, for encoder-decoder or decoder-only models.

``seq2seq_sft``: ``input_ids`` = source tokens + eos (at most ``max_source_length``),
``labels`` = target tokens + eos (at most ``max_target_length``); the model makes its
decoder inputs from the labels.

``causal_sft``: one sequence ``source [SEP] target </s>``, where the separator is the
tokenizer's sep_token (``\\n`` if it has none); see :func:`causal_prompt_ids`, which
generation must use to build the same prompt. ``labels`` are -100 over the prompt, so only
the target and its eos are learned. The target keeps at most ``max_target_length`` tokens
(eos included, cut at its end); the prompt gets the rest of ``max_source_length +
max_target_length`` and is cut from the left, so the separator and the answer survive.

Both pad dynamically to the longest example of the batch: inputs with the pad id, labels
with -100. Nothing here is random.
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, PretrainedConfig, PreTrainedTokenizerBase

from lmforge.config import ObjectiveConfig
from lmforge.errors import UserError
from lmforge.objectives.causal_lm import check_vocab, require_columns, special_token_id
from lmforge.training.sampler import GROUP_KEY


def _tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _finish(dataset: Dataset) -> Dataset:
    return dataset.add_column("idx", range(len(dataset)))


def seq2seq_prepare(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: ObjectiveConfig, seed: int
) -> Dataset:
    """``source``/``target`` -> input_ids, labels (each ending with eos), length, group_key, idx."""
    require_columns(dataset, ["source", "target"], "seq2seq_sft")
    eos = special_token_id(tokenizer, "eos_token", "seq2seq_sft")

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        sources = [
            x[: cfg.max_source_length - 1] + [eos] for x in _tokenize(tokenizer, batch["source"])
        ]  # the same encoding as seq2seq_source_ids, batched
        targets = [
            y[: cfg.max_target_length - 1] + [eos] for y in _tokenize(tokenizer, batch["target"])
        ]
        lengths = [len(x) + len(y) for x, y in zip(sources, targets, strict=True)]
        # Length grouping sorts by (source, target) length, not by their sum: each side pads to
        # its own maximum, and a tight source with the target as tie-break pads less (8% against
        # 11% of the positions of code-comment batches of 4, bench/train_throughput.py's data).
        keys = [
            len(x) * (cfg.max_target_length + 1) + len(y)
            for x, y in zip(sources, targets, strict=True)
        ]
        return {"input_ids": sources, "labels": targets, "length": lengths, GROUP_KEY: keys}

    return _finish(
        dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc="tokenizing")
    )


def seq2seq_source_ids(
    tokenizer: PreTrainedTokenizerBase, source: str, max_source_length: int
) -> list[int]:
    """The encoder input a seq2seq_sft model was trained on: source tokens (cut) + eos."""
    eos = special_token_id(tokenizer, "eos_token", "seq2seq_sft")
    return _tokenize(tokenizer, [source])[0][: max_source_length - 1] + [eos]


def separator_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokens between prompt and answer: [sep_token], else the tokens of a newline."""
    if tokenizer.sep_token_id is not None:
        return [int(tokenizer.sep_token_id)]
    newline = _tokenize(tokenizer, ["\n"])[0]
    if not newline:
        raise UserError(
            "objective causal_sft needs a separator between prompt and answer, but the "
            "tokenizer has no sep_token and drops newlines; use a tokenizer with a sep_token"
        )
    return newline


def causal_prompt_ids(tokenizer: PreTrainedTokenizerBase, source: str) -> list[int]:
    """The prompt a causal_sft model was trained to answer: source tokens + separator."""
    return _tokenize(tokenizer, [source])[0] + separator_ids(tokenizer)


def causal_prepare(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: ObjectiveConfig, seed: int
) -> Dataset:
    """``source``/``target`` -> input_ids (prompt + target + eos), labels, length, idx."""
    require_columns(dataset, ["source", "target"], "causal_sft")
    eos = special_token_id(tokenizer, "eos_token", "causal_sft")
    separator = separator_ids(tokenizer)
    budget = cfg.max_source_length + cfg.max_target_length

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "length": []}
        sources = _tokenize(tokenizer, batch["source"])
        targets = _tokenize(tokenizer, batch["target"])
        for source, target in zip(sources, targets, strict=True):
            answer = target[: cfg.max_target_length - 1] + [eos]
            prompt = (source + separator)[-(budget - len(answer)) :]
            out["input_ids"].append(prompt + answer)
            out["labels"].append([-100] * len(prompt) + answer)
            out["length"].append(len(prompt) + len(answer))
        return out

    return _finish(
        dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc="tokenizing")
    )


class PaddingCollator:
    """Pad input_ids (pad id) and labels (-100) to the batch's longest; add attention_mask.

    Hugging Face's DataCollatorForSeq2Seq does the padding; this keeps only the model's keys.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.pad = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, return_tensors="pt")

    def set_epoch(self, epoch: int) -> None:
        """No randomness: nothing changes between epochs."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return dict(
            self.pad([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])
        )


def collator(
    tokenizer: PreTrainedTokenizerBase,
    cfg: ObjectiveConfig,
    seed: int,
    model_config: PretrainedConfig | None = None,
) -> PaddingCollator:
    """The collator of both seq2seq_sft and causal_sft."""
    check_vocab(tokenizer, model_config)
    special_token_id(tokenizer, "pad_token", "fine-tuning")
    return PaddingCollator(tokenizer)
