"""The local backend: a saved model directory, generating as lmforge.generation does."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from lmforge.backends import Backend, LikelihoodUnavailable
from lmforge.backends.local import LocalBackend
from lmforge.config import TemplateConfig
from lmforge.errors import UserError
from lmforge.generation import DecodingSettings, generate
from lmforge.metrics.perplexity import perplexity

TINY = runpy.run_path(str(Path(__file__).with_name("tiny_models.py")))
CARD = {
    "tasks": [{"task": "translate", "template": {"prefix": "译: ", "target_lang": "Chinese"}}],
    "max_source_length": 48,
    "max_target_length": 24,
    "seed": 42,
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    tok = TINY["tokenizer"]()
    root = tmp_path_factory.mktemp("local")
    return {
        "t5": TINY["save_model"](root / "t5", "t5", tok, CARD),
        "gpt2": TINY["save_model"](root / "gpt2", "gpt2", tok),
        "bert": TINY["save_model"](root / "bert", "bert", tok),
    }


def test_greedy_generation_is_lmforge_generation_and_counts_tokens(model_dirs):
    local = LocalBackend(model_dirs["gpt2"], batch_size=2)
    assert isinstance(local, Backend)
    settings = DecodingSettings(max_new_tokens=5)
    sources = ["good morning", "the weather is nice today", "thank you"]
    texts = local.generate(sources, settings)
    expected = generate(local.model, local.tokenizer, sources, settings, max_source_length=512)
    assert texts == [[g.text for g in group] for group in expected]
    prompt, completion = local.usage.snapshot()
    assert prompt == sum(group[0].prompt_tokens for group in expected)
    assert completion == sum(group[0].completion_tokens for group in expected) > 0


def test_n_samples_repeat_with_the_seed_and_are_cut_at_stop_sequences(model_dirs):
    local = LocalBackend(model_dirs["gpt2"])
    settings = DecodingSettings(max_new_tokens=6, do_sample=True, temperature=1.5, seed=3)
    first = local.generate(["def add(a, b):\n"], settings, n=4, stop=["a"])
    assert len(first) == 1 and len(first[0]) == 4
    assert all("a" not in text for text in first[0])
    assert local.generate(["def add(a, b):\n"], settings, n=4, stop=["a"]) == first


def test_the_card_gives_the_template_and_source_length(model_dirs):
    local = LocalBackend(model_dirs["t5"], name="t5")
    assert local.name == "t5" and local.kind == "seq2seq"
    assert local.template_for("translate") == TemplateConfig(prefix="译: ")
    assert local.template_for("summarize") is None
    assert local.max_source_length == 48
    assert LocalBackend(model_dirs["gpt2"]).template_for("translate") is None


def test_perplexity_is_the_metric_with_the_cards_lengths(model_dirs):
    local = LocalBackend(model_dirs["t5"])
    pairs = [("译: good morning", "早上好"), ("译: thank you", "谢谢")]
    result = local.perplexity(pairs)
    direct = perplexity(
        local.model, local.tokenizer, pairs, max_source_length=48, max_target_length=24
    )
    assert result.score == pytest.approx(direct.score)
    assert result.signature == direct.signature
    with pytest.raises(LikelihoodUnavailable, match="seq2seq"):
        local.perplexity(["plain text"])


def test_an_encoder_or_a_missing_directory_is_a_user_error(model_dirs, tmp_path):
    with pytest.raises(UserError, match="is an encoder .*cannot generate"):
        LocalBackend(model_dirs["bert"])
    with pytest.raises(UserError):
        LocalBackend(tmp_path / "nothing")
