from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import BertConfig, BertForPreTraining

from lmforge.config import ObjectiveConfig
from lmforge.errors import UserError
from lmforge.objectives import get_objective
from lmforge.objectives.mlm_nsp import split_segments, truncate_pair

OBJ = get_objective("mlm_nsp")
CFG = ObjectiveConfig(name="mlm_nsp", block_size=32)


def corpus(n_docs: int, one_line: bool = False, seed: int = 0) -> list[str]:
    """Documents whose every token ``t<n>`` occurs once, so a token locates its document."""
    rng = np.random.default_rng(seed)
    docs, n = [], 0
    for _ in range(n_docs):
        lines = []
        for _ in range(1 if one_line else rng.integers(2, 8)):
            k = int(rng.integers(3, 12))
            lines.append(" ".join(f"t{i}" for i in range(n, n + k)))
            n += k
        docs.append("\n".join(lines))
    return docs


@pytest.fixture(scope="module")
def data(tokenizer_factory):
    docs = corpus(400)
    tok = tokenizer_factory([t for d in docs for t in d.split()])
    return docs, tok, OBJ.prepare(Dataset.from_dict({"text": docs}), tok, CFG, 7)


def locate(tok, docs):
    where = {}
    for d, text in enumerate(docs):
        for p, t in enumerate(text.split()):
            where[tok.convert_tokens_to_ids(t)] = (d, p)
    return where


def check_pairs(pairs, tok, docs, block_size):
    """Structure, and: actual-next pairs are one contiguous stretch of one document."""
    where = locate(tok, docs)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    for ids, types, label in zip(
        pairs["input_ids"], pairs["token_type_ids"], pairs["next_sentence_label"], strict=True
    ):
        assert len(ids) <= block_size and ids[0] == cls and ids[-1] == sep
        second = ids.index(sep)
        a, b = ids[1:second], ids[second + 1 : -1]
        assert a and b and sep not in b
        assert types == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        a_pos, b_pos = [where[t] for t in a], [where[t] for t in b]
        for span in (a_pos, b_pos) if label else (a_pos + b_pos,):
            docs_of = {d for d, _ in span}
            assert len(docs_of) == 1
            assert [p for _, p in span] == list(range(span[0][1], span[0][1] + len(span)))
        if label:
            assert a_pos[0][0] != b_pos[0][0]


def test_split_segments():
    text = "One two. Three?  Four!\n\n五六。七八！ 九\nend"
    assert split_segments(text) == ["One two.", "Three?", "Four!", "五六。", "七八！", "九", "end"]
    assert split_segments("3.14 is pi") == ["3.14 is pi"]


def test_truncate_pair_cuts_front_of_a_and_back_of_b():
    assert truncate_pair([1, 2, 3, 4, 5], [6, 7], 5) == ([3, 4, 5], [6, 7])
    assert truncate_pair([1, 2], [3, 4, 5, 6], 4) == ([1, 2], [3, 4])
    assert truncate_pair([1, 2, 3], [4, 5, 6], 4) == ([2, 3], [4, 5])


def test_pairs_are_well_formed_and_labels_balanced(data):
    docs, tok, pairs = data
    assert set(pairs.column_names) == {
        "input_ids",
        "token_type_ids",
        "next_sentence_label",
        "length",
        "idx",
    }
    assert len(pairs) > 800
    assert pairs["idx"] == list(range(len(pairs)))
    assert pairs["length"] == [len(x) for x in pairs["input_ids"]]
    check_pairs(pairs, tok, docs, 32)
    assert abs(np.mean(pairs["next_sentence_label"]) - 0.5) < 0.07


def test_one_line_documents_still_follow_nsp_probability(tokenizer_factory):
    docs = corpus(600, one_line=True)
    tok = tokenizer_factory([t for d in docs for t in d.split()])
    cfg = CFG.model_copy(update={"nsp_probability": 0.3})
    pairs = OBJ.prepare(Dataset.from_dict({"text": docs}), tok, cfg, 0)
    check_pairs(pairs, tok, docs, 32)
    assert abs(np.mean(pairs["next_sentence_label"]) - 0.3) < 0.06


def test_prepare_is_seeded(data):
    docs, tok, pairs = data
    again = OBJ.prepare(Dataset.from_dict({"text": docs}), tok, CFG, 7)
    other = OBJ.prepare(Dataset.from_dict({"text": docs}), tok, CFG, 8)
    assert again["input_ids"] == pairs["input_ids"]
    assert other["input_ids"] != pairs["input_ids"]


def test_masking_proportions_and_specials(data):
    _, tok, pairs = data
    rows = [pairs[i] for i in range(len(pairs))]
    batch = OBJ.collator(tok, CFG, seed=3)(rows)
    ids, labels, attention = batch["input_ids"], batch["labels"], batch["attention_mask"]
    original = torch.full_like(ids, tok.pad_token_id)
    for i, row in enumerate(rows):
        original[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
    special = torch.isin(original, torch.tensor(tok.all_special_ids))
    assert (labels[special] == -100).all()  # [CLS], [SEP] and padding never predicted
    assert ((attention == 0) == (original == tok.pad_token_id)).all()
    assert (batch["token_type_ids"][attention == 0] == 0).all()
    assert (ids[attention == 0] == tok.pad_token_id).all()
    predicted = labels != -100
    assert torch.equal(labels[predicted], original[predicted])
    assert (ids[~predicted] == original[~predicted]).all()
    assert abs(predicted.sum() / (~special).sum() - 0.15) < 0.01
    n = predicted.sum().item()
    as_mask = (ids[predicted] == tok.mask_token_id).sum().item() / n
    unchanged = (ids[predicted] == original[predicted]).sum().item() / n
    assert abs(as_mask - 0.8) < 0.03 and abs(unchanged - 0.1) < 0.03
    assert abs(1 - as_mask - unchanged - 0.1) < 0.03
    assert not torch.isin(
        ids[predicted], torch.tensor(sorted(set(tok.all_special_ids) - {tok.mask_token_id}))
    ).any()
    assert batch["next_sentence_label"].tolist() == [r["next_sentence_label"] for r in rows]


def test_masks_depend_only_on_seed_epoch_idx(data):
    _, tok, pairs = data
    rows = [pairs[i] for i in range(6)]
    collate = OBJ.collator(tok, CFG, seed=1)
    whole = collate(rows)
    single = [collate([r]) for r in rows]
    for i, one in enumerate(single):
        n = one["input_ids"].shape[1]
        assert torch.equal(whole["input_ids"][i, :n], one["input_ids"][0])
        assert torch.equal(whole["labels"][i, :n], one["labels"][0])
    collate.set_epoch(1)
    assert not torch.equal(collate(rows)["labels"], whole["labels"])


def test_bert_forward_pass(data):
    _, tok, pairs = data
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tok.pad_token_id,
    )
    batch = OBJ.collator(tok, CFG, 0, config)([pairs[i] for i in range(8)])
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "labels",
        "next_sentence_label",
    }
    assert batch["next_sentence_label"].shape == (8,)
    out = BertForPreTraining(config)(**batch)
    assert torch.isfinite(out.loss)


def test_user_errors(tokenizer, tokenizer_factory):
    with pytest.raises(UserError, match="at least 2 non-empty documents"):
        OBJ.prepare(Dataset.from_dict({"text": ["w1 w2", ""]}), tokenizer, CFG, 0)
    with pytest.raises(UserError, match="needs the tokenizer's cls_token"):
        OBJ.prepare(
            Dataset.from_dict({"text": ["w1", "w2"]}), tokenizer_factory(["w1"], False), CFG, 0
        )
