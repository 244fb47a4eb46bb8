from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import T5Config, T5ForConditionalGeneration

from lmforge.config import ObjectiveConfig
from lmforge.errors import UserError
from lmforge.objectives import get_objective
from lmforge.objectives.span_corruption import (
    corrupt,
    corrupted_lengths,
    expanded_lengths,
    noise_counts,
    random_spans_noise_mask,
)

OBJ = get_objective("span_corruption")


def texts(n: int = 60, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = [" ".join(f"w{w}" for w in rng.integers(0, 400, rng.integers(3, 40))) for _ in range(n)]
    return Dataset.from_dict({"text": rows})


def fill_sentinels(input_ids: list[int], labels: list[int], sentinel_ids: set[int]) -> list[int]:
    """Undo the corruption: each sentinel in the input becomes the tokens after it in labels."""
    spans: list[list[int]] = []
    for token in labels[:-1]:  # drop the final eos
        if token in sentinel_ids:
            spans.append([])
        else:
            spans[-1].append(token)
    out: list[int] = []
    for token in input_ids[:-1]:
        out.extend(spans.pop(0) if token in sentinel_ids else [token])
    assert not spans
    return out


def test_corrupt_the_docstring_example():
    block = np.arange(1, 9)  # a b c d e f g h
    noise = np.array([0, 0, 1, 1, 0, 0, 1, 0], dtype=bool)
    inputs, labels = corrupt(block, noise, np.array([100, 99, 98]), eos_id=0)
    assert inputs.tolist() == [1, 2, 100, 5, 6, 99, 8, 0]
    assert labels.tolist() == [100, 3, 4, 99, 7, 0]


def test_text_targets_are_the_whole_block_with_the_same_input():
    block = np.arange(1, 9)
    noise = np.array([0, 0, 1, 1, 0, 0, 1, 0], dtype=bool)
    sentinels = np.array([100, 99, 98])
    inputs, labels = corrupt(block, noise, sentinels, eos_id=0, targets="text")
    assert inputs.tolist() == corrupt(block, noise, sentinels, eos_id=0)[0].tolist()
    assert labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 0]


def test_text_targets_through_prepare_and_the_collator(tokenizer):
    spans_cfg = ObjectiveConfig(block_size=32)
    text_cfg = ObjectiveConfig(block_size=32, span_targets="text")
    prepared = OBJ.prepare(texts(), tokenizer, text_cfg, 0)
    expanded, _ = expanded_lengths(32, 0.15, 3.0)
    assert set(prepared["length"]) == {32 + expanded + 1}
    rows = [prepared[i] for i in range(len(prepared))]
    text_batch = OBJ.collator(tokenizer, text_cfg, seed=1)(rows)
    spans_batch = OBJ.collator(tokenizer, spans_cfg, seed=1)(rows)
    assert torch.equal(text_batch["input_ids"], spans_batch["input_ids"])  # same corruption
    eos = torch.full((len(rows), 1), tokenizer.eos_token_id)
    blocks = torch.tensor([row["input_ids"] for row in rows])
    assert torch.equal(text_batch["labels"], torch.cat([blocks, eos], 1))


def test_lengths_match_run_t5_mlm_flax():
    assert expanded_lengths(512, 0.15, 3.0) == (568, 114)
    assert expanded_lengths(128, 0.15, 3.0) == (141, 29)  # 21 noise tokens, 7 spans
    for block_size in range(16, 600, 7):
        for density, mean in [(0.15, 3.0), (0.3, 2.0), (0.5, 8.0)]:
            expanded, label_length = expanded_lengths(block_size, density, mean)
            assert corrupted_lengths(expanded, density, mean) == (block_size, label_length)


def test_mask_has_configured_noise_and_spans():
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(200):
        mask = random_spans_noise_mask(568, 0.15, 3.0, rng)
        starts = mask & ~np.concatenate([[False], mask[:-1]])
        assert mask.sum() == 85 == round(568 * 0.15)
        assert starts.sum() == 28 == round(85 / 3)
        assert not mask[0]  # T5 starts with a kept span
        fractions.append(mask.mean())
    assert abs(np.mean(fractions) - 0.15) < 0.001


def test_block_too_small_is_a_user_error():
    with pytest.raises(UserError, match="block_size=8 is too small"):
        expanded_lengths(8, 0.15, 3.0)


def test_inputs_and_labels_rebuild_the_block(tokenizer):
    cfg = ObjectiveConfig(block_size=32)
    prepared = OBJ.prepare(texts(), tokenizer, cfg, 0)
    expanded, label_length = expanded_lengths(32, 0.15, 3.0)
    assert set(prepared.column_names) == {"input_ids", "idx", "length"}
    assert prepared["idx"] == list(range(len(prepared)))
    assert set(prepared["length"]) == {32 + label_length}
    collate = OBJ.collator(tokenizer, cfg, seed=1)
    batch = collate([prepared[i] for i in range(len(prepared))])
    assert batch["input_ids"].shape == (len(prepared), 32)
    assert batch["labels"].shape == (len(prepared), label_length)
    assert batch["attention_mask"].all()
    sentinels = {tokenizer.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(100)}
    eos = tokenizer.eos_token_id
    num_noise, num_spans = noise_counts(expanded, 0.15, 3.0)
    for row, x, y in zip(
        prepared, batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True
    ):
        assert x[-1] == eos and y[-1] == eos
        assert y[0] == tokenizer.convert_tokens_to_ids("<extra_id_0>")
        in_sentinels = [t for t in x if t in sentinels]
        assert in_sentinels == [t for t in y if t in sentinels]  # same order, <extra_id_0> first
        assert len(in_sentinels) == num_spans
        assert len(y) - num_spans - 1 == num_noise
        assert fill_sentinels(x, y, sentinels) == row["input_ids"]


def test_blocks_are_the_packed_token_stream(tokenizer):
    data = texts()
    prepared = OBJ.prepare(data, tokenizer, ObjectiveConfig(block_size=32), 0)
    stream = []
    for text in data["text"]:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    packed = [t for row in prepared["input_ids"] for t in row]
    expanded = expanded_lengths(32, 0.15, 3.0)[0]
    assert len(stream) - len(packed) < expanded
    assert packed == stream[: len(packed)]


def test_spans_depend_only_on_seed_epoch_idx(tokenizer):
    cfg = ObjectiveConfig(block_size=32)
    prepared = OBJ.prepare(texts(), tokenizer, cfg, 0)
    rows = [prepared[i] for i in range(8)]
    collate = OBJ.collator(tokenizer, cfg, seed=5)
    whole = collate(rows)["input_ids"]
    # other batching, and a fresh collator (a resumed run) give the same rows
    parts = torch.cat([collate(rows[:3])["input_ids"], collate(rows[3:])["input_ids"]])
    assert torch.equal(whole, parts)
    assert torch.equal(OBJ.collator(tokenizer, cfg, seed=5)(rows[::-1])["input_ids"], whole.flip(0))
    collate.set_epoch(1)
    assert not torch.equal(collate(rows)["input_ids"], whole)
    assert not torch.equal(OBJ.collator(tokenizer, cfg, seed=6)(rows)["input_ids"], whole)


def test_t5_forward_pass(tokenizer):
    cfg = ObjectiveConfig(block_size=32)
    prepared = OBJ.prepare(texts(), tokenizer, cfg, 0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_ff=64,
        d_kv=16,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    batch = OBJ.collator(tokenizer, cfg, 0, config)([prepared[i] for i in range(4)])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    loss = T5ForConditionalGeneration(config)(**batch).loss
    assert torch.isfinite(loss)


def test_user_errors(tokenizer):
    cfg = ObjectiveConfig(block_size=32)
    with pytest.raises(UserError, match="reads text data and needs column.s. text"):
        OBJ.prepare(Dataset.from_dict({"source": ["a"], "target": ["b"]}), tokenizer, cfg, 0)
    with pytest.raises(UserError, match="fewer than one block of 34; lower objective.block_size"):
        OBJ.prepare(Dataset.from_dict({"text": ["w1 w2 w3"]}), tokenizer, cfg, 0)
    with pytest.raises(UserError, match="only 100 sentinel tokens"):
        OBJ.collator(tokenizer, ObjectiveConfig(block_size=2048), 0)
    with pytest.raises(UserError, match="model's vocab_size is 50"):
        OBJ.collator(tokenizer, cfg, 0, T5Config(vocab_size=50))
