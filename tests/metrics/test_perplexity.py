"""Perplexity equals a hand computation from the model's own loss on single examples."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.errors import UserError
from lmforge.metrics.perplexity import perplexity
from lmforge.objectives.sft import causal_prompt_ids

TEXTS = ["w1 w2 w3", "w4 w5 w6 w7 w8 w9 w10", "w11", "w12 w13 w14 w15"]
PAIRS = [("w1 w2", "w3 w4 w5"), ("w6", "w7"), ("w8 w9 w10 w11", "w12 w13 w14 w15 w16 w17")]
EOS = 1


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _weighted_loss(model, examples) -> tuple[float, int, list[float]]:
    """Token-weighted mean of the model's loss on each example alone: (nll, tokens, losses)."""
    total, tokens, losses = 0.0, 0, []
    with torch.no_grad():
        for kwargs, n in examples:
            loss = model(**{k: torch.tensor([v]) for k, v in kwargs.items()}).loss.item()
            total, tokens = total + loss * n, tokens + n
            losses.append(loss)
    return total / tokens, tokens, losses


def test_causal_text_matches_weighted_single_example_losses(gpt2, tokenizer):
    examples = []
    for text in TEXTS:
        ids = _ids(tokenizer, text)
        # Scored as packed pretraining sees it: after an eos, followed by eos.
        examples.append(
            ({"input_ids": [EOS, *ids, EOS], "labels": [-100, *ids, EOS]}, len(ids) + 1)
        )
    nll, tokens, losses = _weighted_loss(gpt2, examples)

    result = perplexity(gpt2, tokenizer, TEXTS, batch_size=3)

    assert result.details["tokens"] == tokens == 3 + 7 + 1 + 4 + 4
    assert result.details["nll"] == pytest.approx(nll, rel=1e-5)
    assert result.score == pytest.approx(math.exp(nll), rel=1e-5)
    assert result.per_example == pytest.approx([math.exp(x) for x in losses], rel=1e-5)
    # Not the mean of per-example means, which weighs the one-word text like the long one.
    assert nll != pytest.approx(sum(losses) / len(losses), rel=1e-4)
    assert "kind:causal" in result.signature and f"tokens:{tokens}" in result.signature


def test_batch_size_does_not_change_the_result(gpt2, tokenizer):
    one = perplexity(gpt2, tokenizer, TEXTS, batch_size=1)
    four = perplexity(gpt2, tokenizer, TEXTS, batch_size=4)
    assert four.details["nll"] == pytest.approx(one.details["nll"], rel=1e-5)
    assert four.details["tokens"] == one.details["tokens"]


def test_causal_pairs_score_only_the_target(gpt2, tokenizer):
    examples = []
    for source, target in PAIRS:
        prompt = causal_prompt_ids(tokenizer, source)  # source [SEP]
        answer = [*_ids(tokenizer, target), EOS]
        labels = [-100] * len(prompt) + answer
        examples.append(({"input_ids": prompt + answer, "labels": labels}, len(answer)))
    nll, tokens, _ = _weighted_loss(gpt2, examples)

    result = perplexity(
        gpt2, tokenizer, PAIRS, batch_size=2, max_source_length=8, max_target_length=16
    )

    assert result.details["tokens"] == tokens == 4 + 2 + 7
    assert result.details["nll"] == pytest.approx(nll, rel=1e-5)
    assert "given:source" in result.signature


def test_seq2seq_pairs_score_the_target_given_the_source(t5, tokenizer):
    examples = []
    for source, target in PAIRS:
        inputs, labels = [*_ids(tokenizer, source), EOS], [*_ids(tokenizer, target), EOS]
        examples.append(({"input_ids": inputs, "labels": labels}, len(labels)))
    nll, tokens, losses = _weighted_loss(t5, examples)

    result = perplexity(t5, tokenizer, PAIRS, batch_size=2)

    assert result.details["tokens"] == tokens
    assert result.details["nll"] == pytest.approx(nll, rel=1e-5)
    assert result.per_example == pytest.approx([math.exp(x) for x in losses], rel=1e-5)
    assert "kind:seq2seq" in result.signature


def test_long_text_is_cut_to_the_model_context(gpt2, tokenizer):
    long_text = " ".join(f"w{i % 60}" for i in range(40))
    result = perplexity(gpt2, tokenizer, [long_text, "w1 w2"])
    assert result.details["truncated"] == 1
    assert result.details["tokens"] == (32 - 1) + 3  # context 32, first position not scored


def test_mistakes_are_user_errors(gpt2, t5, tokenizer):
    with pytest.raises(UserError, match="pass \\(source, target\\) pairs"):
        perplexity(t5, tokenizer, TEXTS)
    with pytest.raises(UserError, match="texts_or_pairs\\[1\\]"):
        perplexity(gpt2, tokenizer, ["w1", ("w2", "w3")])
    with pytest.raises(UserError, match="texts\\[1\\] has no tokens"):
        perplexity(gpt2, tokenizer, ["w1", ""])
    with pytest.raises(UserError, match="longer than the model's context of 32"):
        perplexity(gpt2, tokenizer, [("w1 " * 30, "w2 " * 20)])
