"""A tiny word-level tokenizer with lmforge's special tokens, and tiny Hugging Face models."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SENTINELS = [f"<extra_id_{i}>" for i in range(100)]
SPECIAL = ["<pad>", "</s>", "<unk>", "<s>", "[CLS]", "[SEP]", "[MASK]", *SENTINELS]


def make_tokenizer(words: list[str], with_sep: bool = True) -> PreTrainedTokenizerFast:
    """Word-level: one id per whitespace-separated word, specials first (pad=0, eos=1)."""
    vocab = {token: i for i, token in enumerate(SPECIAL + sorted(set(words)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    named = {"cls_token": "[CLS]", "sep_token": "[SEP]"} if with_sep else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
        mask_token="[MASK]",
        extra_special_tokens=SENTINELS,
        **named,
    )


WORDS = [f"w{i}" for i in range(400)]


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer(WORDS)


@pytest.fixture(autouse=True)
def _quiet_datasets():
    """No progress bars from datasets.map in test output."""
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer_factory():
    """``make_tokenizer`` for tests that need their own vocabulary."""
    return make_tokenizer
