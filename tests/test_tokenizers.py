"""Training, saving and loading tokenizers: exact round trips, special-token ids, determinism."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmforge.errors import UserError
from lmforge.tokenizers import (
    _reservoir_sample,
    load_tokenizer,
    min_vocab_size,
    save_tokenizer,
    sentinel_tokens,
    train_tokenizer,
)

VOCAB = 600
HANZI = [chr(0x4E00 + i) for i in range(300)]
CODE = [
    "def add(a, b):\n\treturn a + b\n",
    "for i in range(10):\n    print(i)  # count\n",
    "if x  ==  y:\n\t\tpass\n",
    'name = "lmforge"  \n',
]


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    """English-like words, Chinese, mixed lines and code: enough variety for Unigram seeds."""
    rng = random.Random(seed)
    syllables = ["ka", "to", "ren", "mi", "sol", "tra", "in", "de", "pro", "lu", "the", "ing"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(200)]
    texts = []
    for i in range(n):
        if i % 4 == 0:
            texts.append(" ".join(rng.choice(words) for _ in range(12)) + ".")
        elif i % 4 == 1:
            texts.append("".join(rng.choice(HANZI[:200]) for _ in range(20)) + "。")
        elif i % 4 == 2:
            texts.append(f"{rng.choice(words)} 模型 {''.join(rng.sample(HANZI[:200], 4))} data")
        else:
            texts.append(rng.choice(CODE))
    return texts


# Never in the corpus: unseen Chinese, emoji, other scripts, control bytes, odd whitespace,
# the text of special tokens and of byte-fallback pieces.
ROUND_TRIP = [
    "我们今天训练一个语言模型。",
    "Mixed 中文 and English, 混合 text: 3.14 ＋ ５",
    "def f(x):\n\treturn {'k': [x,  x]}\r\n\n    # tabs\tand   spaces  ",
    "  leading and trailing spaces  ",
    "".join(HANZI[250:300]) + " 龘靐齉 😀👍🏽 עברית العربية 한국어 ✓ ½ ﬁ",
    "\x00\x01\x7f\u200b\ufeff zero-width and control",
    "literal <extra_id_5> and </s> and [MASK] inside text",
    "▁metaspace Ġbyte <0x41>",
    "",
    " ",
    "\n\n\n",
]


@pytest.fixture(scope="module")
def bpe() -> PreTrainedTokenizerFast:
    return train_tokenizer(corpus(), kind="bpe", vocab_size=VOCAB)


@pytest.fixture(scope="module")
def unigram() -> PreTrainedTokenizerFast:
    return train_tokenizer(corpus(), kind="unigram", vocab_size=VOCAB)


@pytest.fixture(params=["bpe", "unigram"])
def trained(request: pytest.FixtureRequest) -> PreTrainedTokenizerFast:
    return request.getfixturevalue(request.param)


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_decode_of_encode_is_the_text_exactly(trained: PreTrainedTokenizerFast, text: str) -> None:
    ids = trained.encode(text)
    assert trained.decode(ids) == text
    assert trained.unk_token_id not in ids  # nothing is unknown: every byte has a token


def test_round_trip_of_the_training_corpus(trained: PreTrainedTokenizerFast) -> None:
    texts = corpus(40, seed=1)
    batch = trained(texts)["input_ids"]
    assert trained.batch_decode(batch) == texts


def test_learned_pieces_make_text_shorter(trained: PreTrainedTokenizerFast) -> None:
    text = corpus(20, seed=2)[0]  # a line of words new to the tokenizer, made of known syllables
    assert len(trained.encode(text)) < len(text.encode("utf-8")) / 2


def test_encode_adds_no_special_tokens(trained: PreTrainedTokenizerFast) -> None:
    with_default = trained("one line")["input_ids"]
    assert with_default == trained("one line", add_special_tokens=False)["input_ids"]
    assert not set(with_default) & set(trained.all_special_ids)


# --------------------------------------------------------------------------- special tokens


def test_special_tokens_have_fixed_low_ids(trained: PreTrainedTokenizerFast) -> None:
    t = trained
    assert (t.pad_token, t.pad_token_id) == ("<pad>", 0)
    assert (t.eos_token, t.eos_token_id) == ("</s>", 1)
    assert (t.unk_token, t.unk_token_id) == ("<unk>", 2)
    assert (t.bos_token, t.bos_token_id) == ("<s>", 3)
    assert (t.cls_token, t.cls_token_id) == ("[CLS]", 4)
    assert (t.sep_token, t.sep_token_id) == ("[SEP]", 5)
    assert (t.mask_token, t.mask_token_id) == ("[MASK]", 6)
    assert t.extra_special_tokens == sentinel_tokens(100)
    assert t.convert_tokens_to_ids(sentinel_tokens(100)) == list(range(7, 107))


@pytest.mark.parametrize("token", ["<extra_id_0>", "<extra_id_5>", "<extra_id_99>", "[MASK]"])
def test_special_tokens_encode_to_one_id(trained: PreTrainedTokenizerFast, token: str) -> None:
    assert trained.encode(token) == [trained.convert_tokens_to_ids(token)]
    ids = trained.encode(f"a{token}b")
    assert trained.convert_tokens_to_ids(token) in ids
    assert trained.decode(ids, skip_special_tokens=True) == "ab"


def test_number_of_sentinels_is_configurable() -> None:
    tok = train_tokenizer(corpus(80), kind="bpe", vocab_size=400, num_sentinels=3)
    assert tok.extra_special_tokens == ["<extra_id_0>", "<extra_id_1>", "<extra_id_2>"]
    assert tok.convert_tokens_to_ids("<extra_id_2>") == 9
    assert len(tok.encode("<extra_id_3>")) > 1  # not a token any more
    assert min_vocab_size(3) == 256 + 7 + 3


# --------------------------------------------------------------------------- saving and loading


def test_auto_tokenizer_loads_the_saved_directory_identically(
    trained: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    out = save_tokenizer(trained, tmp_path / "tok")
    for loaded in (AutoTokenizer.from_pretrained(str(out)), load_tokenizer(out)):
        assert isinstance(loaded, PreTrainedTokenizerFast)
        assert loaded.get_vocab() == trained.get_vocab()
        assert loaded.all_special_tokens == trained.all_special_tokens
        assert loaded.all_special_ids == trained.all_special_ids
        assert loaded.extra_special_tokens == trained.extra_special_tokens
        assert loaded.model_max_length == trained.model_max_length == 1_000_000
        assert loaded(ROUND_TRIP)["input_ids"] == trained(ROUND_TRIP)["input_ids"]
        assert loaded.batch_decode(loaded(ROUND_TRIP)["input_ids"]) == ROUND_TRIP


def test_save_refuses_an_existing_directory(bpe: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    out = tmp_path / "tok"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        save_tokenizer(bpe, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    save_tokenizer(bpe, out, overwrite=True)
    assert (out / "tokenizer.json").is_file() and not (out / "keep.txt").exists()


def test_load_tokenizer_reports_bad_directories(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"tokenizer directory .*missing does not exist"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(UserError, match="file.json is not a directory"):
        load_tokenizer(tmp_path / "file.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty has no tokenizer.json or tokenizer_config.json"):
        load_tokenizer(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not json")
    (broken / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}')
    with pytest.raises(UserError, match="broken: not a loadable tokenizer"):
        load_tokenizer(broken)


# --------------------------------------------------------------------------- training options


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_vocab_size_is_reached_and_never_exceeded(kind: str) -> None:
    texts = corpus()
    assert len(train_tokenizer(texts, kind=kind, vocab_size=450)) == 450  # type: ignore[arg-type]


def test_min_frequency_limits_bpe_merges() -> None:
    rare = train_tokenizer(corpus(), kind="bpe", vocab_size=VOCAB, min_frequency=10**6)
    assert len(rare) == min_vocab_size()  # bytes and special tokens only: no pair is that common


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_training_is_deterministic(kind: str) -> None:
    # Unigram needs lmforge's canonical ordering: the trainer's own order varies run to run.
    texts = corpus()
    first = train_tokenizer(texts, kind=kind, vocab_size=VOCAB)  # type: ignore[arg-type]
    second = train_tokenizer(iter(texts), kind=kind, vocab_size=VOCAB)  # type: ignore[arg-type]
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


def test_max_texts_draws_a_seeded_uniform_sample() -> None:
    texts = [f"text {i}" for i in range(1000)]
    sample = _reservoir_sample(iter(texts), 100, seed=7)
    assert len(sample) == 100 and len(set(sample)) == 100 and set(sample) <= set(texts)
    assert sample == _reservoir_sample(iter(texts), 100, seed=7)
    assert sample != _reservoir_sample(iter(texts), 100, seed=8)
    assert max(int(t.split()[1]) for t in sample) >= 500  # not just the first texts
    assert _reservoir_sample(iter(texts[:10]), 100, seed=7) == texts[:10]
    a = train_tokenizer(corpus(), kind="bpe", vocab_size=VOCAB, max_texts=50, seed=1)
    b = train_tokenizer(corpus(), kind="bpe", vocab_size=VOCAB, max_texts=50, seed=1)
    assert a.get_vocab() == b.get_vocab()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "wordpiece", "vocab_size": VOCAB}, "unknown tokenizer kind 'wordpiece'; choose"),
        ({"kind": "bpe", "vocab_size": 300}, "vocab_size 300 is too small: .* at least 363"),
        ({"kind": "bpe", "vocab_size": VOCAB, "min_frequency": 0}, "min_frequency must be 1"),
        ({"kind": "bpe", "vocab_size": VOCAB, "max_texts": 0}, "max_texts must be 1"),
    ],
)
def test_bad_arguments_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        train_tokenizer(corpus(10), **kwargs)


def test_no_text_is_a_user_error() -> None:
    with pytest.raises(UserError, match="no text to train the tokenizer on"):
        train_tokenizer(["", ""], kind="unigram", vocab_size=VOCAB)
