"""ROUGE through rouge-score with lmforge's tokenizer: hand-computed values, parity on ASCII."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from lmforge.metrics.rouge import CJKTokenizer, rouge, split_sentences

TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def test_default_rouge_score_gives_chinese_zero_ours_gives_100():
    text = "我喜欢在公园里散步"
    default = rouge_scorer.RougeScorer(TYPES).score(text, text)
    assert all(default[t].fmeasure == 0 for t in TYPES)  # it drops every non-ASCII character

    ours = rouge([text], [text])
    assert [ours[t].score for t in TYPES] == [100.0] * 4


def test_chinese_pair_by_hand():
    # pred 我喜欢猫 (4 chars), ref 我喜欢狗和猫 (6 chars)
    result = rouge(["我喜欢猫"], ["我喜欢狗和猫"])
    # ROUGE-1: 4 shared characters; P = 4/4, R = 4/6, F = 2PR/(P+R) = 0.8
    assert result["rouge1"].score == pytest.approx(80.0)
    assert result["rouge1"].details["precision"] == pytest.approx(100.0)
    assert result["rouge1"].details["recall"] == pytest.approx(100 * 4 / 6)
    # ROUGE-2: pred 我喜 喜欢 欢猫; ref 我喜 喜欢 欢狗 狗和 和猫; 2 shared: P 2/3, R 2/5
    p, r = 2 / 3, 2 / 5
    assert result["rouge2"].score == pytest.approx(100 * 2 * p * r / (p + r))
    # ROUGE-L: the LCS is 我喜欢猫, 4 characters: as ROUGE-1
    assert result["rougeL"].score == pytest.approx(80.0)


def test_mixed_chinese_english_by_hand():
    # 我 用 python 写 代 码 vs 我 用 python 写 程 序: 4 of 6 tokens shared each way
    result = rouge(["我用Python写代码"], ["我用python写程序"])
    assert result["rouge1"].score == pytest.approx(100 * 4 / 6)


def test_lsum_splits_chinese_sentences_at_punctuation():
    assert split_sentences("今天天气很好。我们去公园！Really? Yes.\nNew line") == [
        "今天天气很好。",
        "我们去公园！",
        "Really?",
        "Yes.",
        "New line",
    ]
    assert split_sentences("pi is 3.14 today") == ["pi is 3.14 today"]
    # Swapped sentences: ROUGE-L sees one LCS of 6 of 11 tokens, Lsum matches each sentence.
    result = rouge(["我们去公园。今天天气很好。"], ["今天天气很好。我们去公园。"])
    assert result["rougeL"].score == pytest.approx(100 * 6 / 11)
    assert result["rougeLsum"].score == pytest.approx(100.0)


def test_several_references_take_the_best_per_example_then_the_mean():
    result = rouge(["我喜欢猫", "abc"], [["我喜欢狗和猫", "我喜欢猫"], ["xyz", "abc d"]])
    # example 1: the identical reference wins (100); example 2: "abc d" gives P 1, R 1/2
    assert result["rouge1"].per_example == pytest.approx([100.0, 100 * 2 / 3])
    assert result["rouge1"].score == pytest.approx((100 + 100 * 2 / 3) / 2)
    assert "nrefs:2" in result["rouge1"].signature


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_english_ascii_matches_rouge_score_default(use_stemmer):
    preds = ["The cats were running quickly", "a b c d", "Hello, world! It's fine."]
    refs = ["the cat runs quick", "a c b d e", "hello there world, it is fine"]
    default = rouge_scorer.RougeScorer(TYPES[:3], use_stemmer=use_stemmer)
    ours = rouge(preds, refs, use_stemmer=use_stemmer)
    for t in TYPES[:3]:
        expected = [100 * default.score(r, p)[t].fmeasure for p, r in zip(preds, refs, strict=True)]
        assert ours[t].per_example == pytest.approx(expected)
    assert CJKTokenizer(use_stemmer=use_stemmer).tokenize(preds[0]) == (
        ["the", "cat", "were", "run", "quickli"]
        if use_stemmer
        else ["the", "cats", "were", "running", "quickly"]
    )


def test_signature_names_the_tokenizer():
    chars = rouge(["我喜欢猫"], ["我喜欢猫"])
    assert "tok:cjk-char" in chars["rouge1"].signature
    assert "stem:no" in chars["rouge1"].signature
    assert "version:rouge-score-0.1.2" in chars["rouge1"].signature
    assert "lsum:newline+punct" in chars["rougeLsum"].signature
    words = rouge(["我来到北京清华大学"], ["我来到北京"], cjk="jieba")
    assert "tok:cjk-jieba-" in words["rouge1"].signature
    # jieba words: 我 来到 北京 清华大学 vs 我 来到 北京: P 3/4, R 1
    assert words["rouge1"].score == pytest.approx(100 * 2 * 0.75 / 1.75)
