from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from lmforge.config import ObjectiveConfig
from lmforge.errors import UserError
from lmforge.objectives import get_objective

OBJ = get_objective("causal_lm")
CFG = ObjectiveConfig(name="causal_lm", block_size=16)


def texts(n: int = 40) -> Dataset:
    rng = np.random.default_rng(0)
    rows = [" ".join(f"w{w}" for w in rng.integers(0, 400, rng.integers(0, 30))) for _ in range(n)]
    return Dataset.from_dict({"text": rows, "path": [f"f{i}" for i in range(n)]})


def stream_of(data: Dataset, tokenizer) -> list[int]:
    out = []
    for text in data["text"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out += ids + [tokenizer.eos_token_id] if ids else []
    return out


@pytest.mark.parametrize("shuffled", [False, True])
def test_blocks_are_the_token_stream_minus_tail(tokenizer, shuffled):
    data = texts().shuffle(seed=1) if shuffled else texts()  # shuffled: an indices mapping
    prepared = OBJ.prepare(data, tokenizer, CFG, 0)
    stream = stream_of(data, tokenizer)
    assert set(prepared.column_names) == {"input_ids", "idx", "length"}
    assert len(prepared) == len(stream) // 16
    assert [t for row in prepared["input_ids"] for t in row] == stream[: len(prepared) * 16]
    assert prepared["idx"] == list(range(len(prepared)))
    assert set(prepared["length"]) == {16}


def test_collated_labels_and_gpt2_forward(tokenizer):
    prepared = OBJ.prepare(texts(), tokenizer, CFG, 0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=32,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    collate = OBJ.collator(tokenizer, CFG, 0, config)
    batch = collate([prepared[i] for i in range(4)])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (4, 16) and batch["attention_mask"].all()
    assert (batch["labels"][:, 0] == -100).all()
    assert torch.equal(batch["labels"][:, 1:], batch["input_ids"][:, 1:])
    assert (batch["labels"] != -100).sum() == 4 * 15  # the tokens the model really predicts
    model = GPT2LMHeadModel(config).eval()  # no dropout: the two losses must match
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    # -100 at position 0 changes nothing: the shifted loss never looks at it
    full = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
    assert torch.allclose(loss, full)


def test_too_little_text_is_a_user_error(tokenizer):
    with pytest.raises(UserError, match="has 3 tokens, fewer than one block of 16"):
        OBJ.prepare(Dataset.from_dict({"text": ["w1 w2"]}), tokenizer, CFG, 0)
