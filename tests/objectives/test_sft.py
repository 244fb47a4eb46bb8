from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

from lmforge.config import ObjectiveConfig
from lmforge.errors import UserError
from lmforge.objectives import get_objective
from lmforge.objectives.sft import causal_prompt_ids

SEQ2SEQ = get_objective("seq2seq_sft")
CAUSAL = get_objective("causal_sft")
CFG = ObjectiveConfig(name="seq2seq_sft", max_source_length=6, max_target_length=4)
PAIRS = Dataset.from_dict(
    {
        "source": ["w1 w2", "w1 w2 w3 w4 w5 w6 w7 w8", "w9"],
        "target": ["w10", "w11 w12 w13 w14 w15", ""],
        "task": ["qa", "summarize", "qa"],
    }
)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_seq2seq_truncates_and_ends_with_eos(tokenizer):
    eos = tokenizer.eos_token_id
    prepared = SEQ2SEQ.prepare(PAIRS, tokenizer, CFG, 0)
    assert set(prepared.column_names) == {"input_ids", "labels", "length", "group_key", "idx"}
    assert prepared["input_ids"] == [
        ids(tokenizer, "w1 w2") + [eos],
        ids(tokenizer, "w1 w2 w3 w4 w5") + [eos],
        ids(tokenizer, "w9") + [eos],
    ]
    assert prepared["labels"] == [
        ids(tokenizer, "w10") + [eos],
        ids(tokenizer, "w11 w12 w13") + [eos],
        [eos],
    ]
    assert prepared["length"] == [5, 10, 3]
    # grouped by source length first, target length second (max_target_length 4 here)
    assert prepared["group_key"] == [3 * 5 + 2, 6 * 5 + 4, 2 * 5 + 1]
    assert prepared["idx"] == [0, 1, 2]


def test_seq2seq_padding_and_t5_forward(tokenizer):
    prepared = SEQ2SEQ.prepare(PAIRS, tokenizer, CFG, 0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_ff=64,
        d_kv=16,
        num_layers=2,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    batch = SEQ2SEQ.collator(tokenizer, CFG, 0, config)([prepared[i] for i in range(3)])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    assert batch["input_ids"][0].tolist() == ids(tokenizer, "w1 w2") + [eos, pad, pad, pad]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0]
    assert batch["labels"][2].tolist() == [eos, -100, -100, -100]
    assert (batch["labels"] != -100).sum() == 2 + 4 + 1
    assert torch.isfinite(T5ForConditionalGeneration(config)(**batch).loss)


def test_causal_masks_the_prompt_exactly(tokenizer):
    eos, sep = tokenizer.eos_token_id, tokenizer.sep_token_id
    prepared = CAUSAL.prepare(PAIRS, tokenizer, CFG, 0)
    first = ids(tokenizer, "w1 w2") + [sep]
    assert causal_prompt_ids(tokenizer, "w1 w2") == first
    assert prepared[0]["input_ids"] == first + ids(tokenizer, "w10") + [eos]
    assert prepared[0]["labels"] == [-100] * 3 + ids(tokenizer, "w10") + [eos]
    # target cut to 4 tokens with its eos; the prompt keeps its last 10 - 4 tokens
    assert prepared[1]["input_ids"] == ids(tokenizer, "w4 w5 w6 w7 w8") + [sep] + ids(
        tokenizer, "w11 w12 w13"
    ) + [eos]
    assert prepared[1]["labels"] == [-100] * 6 + ids(tokenizer, "w11 w12 w13") + [eos]
    assert prepared[2]["labels"] == [-100, -100, eos]
    assert prepared["length"] == [5, 10, 3]


def test_causal_padding_and_gpt2_forward(tokenizer):
    prepared = CAUSAL.prepare(PAIRS, tokenizer, CFG, 0)
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=32,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    batch = CAUSAL.collator(tokenizer, CFG, 0, config)([prepared[i] for i in range(3)])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (3, 10)
    assert batch["attention_mask"].sum(1).tolist() == [5, 10, 3]
    assert batch["labels"][0].tolist()[5:] == [-100] * 5
    assert (batch["labels"] != -100).sum(1).tolist() == [2, 4, 1]  # target tokens + eos only
    assert torch.isfinite(GPT2LMHeadModel(config)(**batch).loss)


def test_user_errors(tokenizer, tokenizer_factory):
    with pytest.raises(UserError, match=r"reads task data .* needs column\(s\) source, target"):
        SEQ2SEQ.prepare(Dataset.from_dict({"text": ["w1"]}), tokenizer, CFG, 0)
    with pytest.raises(UserError, match="no sep_token and drops newlines"):
        CAUSAL.prepare(PAIRS, tokenizer_factory(["w1"], with_sep=False), CFG, 0)
