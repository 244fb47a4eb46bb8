"""Tiny saved models, a tokenizer and a small English -> Chinese set for the evaluation tests.

Loaded with ``runpy`` (not a test module). Everything is built here, in seconds, offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PAIRS = [
    ("good morning everyone", "大家早上好啊"),
    ("the weather is nice today", "今天天气很好"),
    ("I like to read books", "我喜欢读书本"),
    ("where is the train station", "火车站在哪里"),
    ("please open the window", "请打开这扇窗户"),
    ("we are going to the park", "我们要去公园"),
    ("this tea is very hot", "这杯茶非常烫"),
    ("my friend lives in Beijing", "我的朋友住在北京"),
    ("the meeting starts at nine", "会议九点开始"),
    ("thank you for your help", "谢谢你的帮助"),
]
OBJECTIVE = {"t5": "seq2seq_sft", "gpt2": "causal_sft", "bert": "mlm_nsp"}


def tokenizer() -> Any:
    from lmforge.tokenizers import train_tokenizer

    texts = [text for pair in PAIRS for text in pair] + ["def add(a, b):\n    return a + b\n"]
    return train_tokenizer(texts, kind="bpe", vocab_size=420, min_frequency=1, seed=0)


def word_tokenizer() -> Any:
    """Word level ("w0".."w39"): a decoded text splits back into exactly the generated tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<unk>", "<s>", "[SEP]"])}
    vocab |= {f"w{i}": len(vocab) + i for i in range(40)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
        sep_token="[SEP]",
    )


def untrained(family: str, tok: Any) -> Any:
    """A random ``family`` model (preset tiny) whose greedy output depends on the prompt."""
    import torch

    from lmforge.config import ModelConfig
    from lmforge.models import build_model

    objective = "seq2seq_sft" if family == "t5" else "causal_sft"
    model = build_model(ModelConfig(family=family), tok, objective, seed=0)
    # Untrained with tied embeddings, a model repeats the token it starts from (T5's decoder
    # start, pad; the causal prompt's last token, sep) forever, whatever the prompt. A zero
    # embedding for that token lets the prompt decide instead.
    start = tok.pad_token_id if family == "t5" else tok.sep_token_id
    with torch.no_grad():
        model.get_input_embeddings().weight[start] = 0
    return model


def save_model(directory: Path, family: str, tok: Any, card: dict[str, Any] | None = None) -> Path:
    """A freshly initialised ``family`` model (preset tiny) saved with ``tok`` and ``card``."""
    from lmforge.config import ModelConfig
    from lmforge.models import build_model

    model = build_model(ModelConfig(family=family, preset="tiny"), tok, OBJECTIVE[family], seed=0)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    if card is not None:
        (directory / "lmforge.json").write_text(json.dumps(card), encoding="utf-8")
    return directory


def translation_file(path: Path) -> Path:
    """The PAIRS as JSON Lines with the user's own column names ``en`` and ``zh``."""
    with path.open("w", encoding="utf-8") as handle:
        for en, zh in PAIRS:
            handle.write(json.dumps({"en": en, "zh": zh}, ensure_ascii=False) + "\n")
    return path
