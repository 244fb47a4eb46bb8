"""Causal language modelling with sequence packing, and the checks every objective shares.

Texts are tokenized, each followed by eos, concatenated into one token stream and cut into
blocks of ``block_size`` tokens. Only the tail that does not fill a block is dropped, so no
position is padding. ``labels`` equal ``input_ids``: Hugging Face causal models shift them.
Span corruption packs the same way (:func:`pack_texts`), with a longer block.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Dataset
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from lmforge.config import ObjectiveConfig
from lmforge.errors import UserError


def require_columns(dataset: Dataset, columns: list[str], objective: str) -> None:
    """Raise a UserError naming the missing columns and the ones the data has."""
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        kind = "text data" if columns == ["text"] else "task data (source/target pairs)"
        raise UserError(
            f"objective {objective} reads {kind} and needs column(s) {', '.join(missing)}; "
            f"the data has columns {', '.join(dataset.column_names) or '(none)'}"
        )


def special_token_id(tokenizer: PreTrainedTokenizerBase, name: str, objective: str) -> int:
    """The id of a named special token (``eos_token``, ``mask_token``...) or a clear UserError."""
    token_id = getattr(tokenizer, f"{name}_id", None)
    if token_id is None:
        raise UserError(
            f"objective {objective} needs the tokenizer's {name}, and this tokenizer has none; "
            "use a tokenizer trained by `lmforge tokenizer train`, which defines it"
        )
    return int(token_id)


def check_vocab(tokenizer: PreTrainedTokenizerBase, model_config: PretrainedConfig | None) -> None:
    """A token id the model has no embedding for would fail deep inside the forward pass."""
    if model_config is not None and len(tokenizer) > model_config.vocab_size:
        raise UserError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
            f"{model_config.vocab_size}; use the tokenizer the model was built with"
        )


def tokenize_texts(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, objective: str) -> Dataset:
    """``text`` -> ``input_ids``: each non-empty text's tokens followed by eos."""
    require_columns(dataset, ["text"], objective)
    eos = special_token_id(tokenizer, "eos_token", objective)

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, list[list[int]]]:
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [x + [eos] for x in ids if x]}

    return dataset.map(
        tokenize, batched=True, remove_columns=dataset.column_names, desc="tokenizing"
    )


def pack_texts(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    block_length: int,
    objective: str,
    setting: str,
) -> Dataset:
    """Texts -> blocks of exactly ``block_length`` tokens (``input_ids``), plus ``idx``.

    The whole token stream is cut, not each map batch, so only one tail (< one block) is
    lost. Arrow slices the flattened stream without a Python loop; it is held in memory
    once (8 bytes a token). ``setting`` names the config field to lower in the error.
    """
    tokens = tokenize_texts(dataset, tokenizer, objective)
    stream = pc.list_flatten(tokens.data.column("input_ids"))
    n_blocks = len(stream) // block_length
    if n_blocks == 0:
        raise UserError(
            f"objective {objective}: the data has {len(stream)} tokens, fewer than one block "
            f"of {block_length}; lower {setting} or add data"
        )
    flat = stream.slice(0, n_blocks * block_length).combine_chunks()
    blocks = pa.FixedSizeListArray.from_arrays(flat, block_length)
    return Dataset(pa.table({"input_ids": blocks, "idx": pa.array(range(n_blocks))}))


def prepare(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: ObjectiveConfig, seed: int
) -> Dataset:
    """Pack ``text`` into ``block_size`` blocks; ``seed`` is unused (packing is not random)."""
    blocks = pack_texts(dataset, tokenizer, cfg.block_size, "causal_lm", "objective.block_size")
    return blocks.add_column("length", [cfg.block_size] * len(blocks))


class CausalLMCollator:
    """Stack equal-length blocks: input_ids, attention_mask (all ones), labels.

    ``labels[:, 0]`` is -100: the model shifts labels left, so the first position is never
    predicted, and marking it makes ``(labels != -100).sum()`` the true number of targets.
    """

    def set_epoch(self, epoch: int) -> None:
        """No randomness: nothing changes between epochs."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = torch.tensor(np.stack([f["input_ids"] for f in features]), dtype=torch.long)
        labels = input_ids.clone()
        labels[:, 0] = -100
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": labels,
        }


def collator(
    tokenizer: PreTrainedTokenizerBase,
    cfg: ObjectiveConfig,
    seed: int,
    model_config: PretrainedConfig | None = None,
) -> CausalLMCollator:
    check_vocab(tokenizer, model_config)
    return CausalLMCollator()
