"""CJK-aware tokenization and the script-ratio language guess."""

from __future__ import annotations

import pytest

from lmforge.errors import UserError
from lmforge.metrics import detect_language
from lmforge.metrics.tokenize import tokenize, tokenizer_name


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("我喜欢猫。", ["我", "喜", "欢", "猫"]),
        ("The cat's hat, isn't it?", ["the", "cat", "s", "hat", "isn", "t", "it"]),
        ("我用Python3写代码，很好！", ["我", "用", "python3", "写", "代", "码", "很", "好"]),
        ("Café naïve Привет мир", ["café", "naïve", "привет", "мир"]),
        ("ＡＢＣ１２３ snake_case", ["abc123", "snake", "case"]),  # NFKC: full width -> ASCII
        ("コーヒーを飲む", ["コ", "ー", "ヒ", "ー", "を", "飲", "む"]),
        ("나는 학교에 갑니다", ["나는", "학교에", "갑니다"]),  # Hangul stays in words
    ],
)
def test_char_mode(text, tokens):
    assert tokenize(text) == tokens


def test_jieba_mode_cuts_chinese_words_and_keeps_latin_words():
    assert tokenize("我来到北京清华大学, Hello!", cjk="jieba") == [
        "我",
        "来到",
        "北京",
        "清华大学",
        "hello",
    ]
    assert tokenizer_name("jieba").startswith("cjk-jieba-0.")


def test_unknown_mode_is_a_user_error():
    with pytest.raises(UserError, match="choose one of char, jieba"):
        tokenize("x", cjk="mecab")


@pytest.mark.parametrize(
    ("texts", "lang"),
    [
        (["今天天气很好。", "我们去公园"], "zh"),
        ("我用Python写代码", "zh"),  # a Latin word counts once, each Han character once
        ("コーヒーを飲みます", "ja"),
        ("東京に行きます", "ja"),
        ("나는 학교에 갑니다", "ko"),
        ("I visited 北京 last year", "und"),
        ("The quick brown fox", "und"),
        ("Привет мир", "und"),
        ("", "und"),
    ],
)
def test_detect_language(texts, lang):
    assert detect_language(texts) == lang
