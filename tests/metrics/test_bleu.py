"""BLEU/chrF through sacrebleu with shape checks; CodeXGLUE smoothed BLEU-4 by hand."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from lmforge.errors import UserError
from lmforge.metrics.bleu import (
    bleu_tokenizer_for,
    codexglue_tokens,
    corpus_bleu,
    corpus_chrf,
    smoothed_bleu4,
)

ZH_PREDS = ["我喜欢猫。", "今天天气很好"]
# Per prediction: two references each.
ZH_REFS = [["我喜欢狗和猫。", "我爱猫。"], ["今天天气不错", "今天天气很好啊"]]


def test_zh_bleu_equals_sacrebleu_on_the_transposed_streams():
    streams = [["我喜欢狗和猫。", "今天天气不错"], ["我爱猫。", "今天天气很好啊"]]
    expected = sacrebleu.corpus_bleu(ZH_PREDS, streams, tokenize="zh")
    result = corpus_bleu(ZH_PREDS, ZH_REFS, lang="zh")
    assert result.score == pytest.approx(expected.score)
    assert result.details["counts"] == expected.counts
    assert result.signature.startswith("nrefs:2|case:mixed|eff:no|tok:zh|smooth:exp|version:")


def test_chinese_is_detected_and_identical_strings_score_100():
    result = corpus_bleu(["今天天气很好，我们去公园散步。"], ["今天天气很好，我们去公园散步。"])
    assert result.score == pytest.approx(100.0)
    assert result.details["lang"] == "zh"
    assert "tok:zh" in result.signature


@pytest.mark.parametrize(
    ("lang", "tokenizer"),
    [("zh", "zh"), ("zh-Hant", "zh"), ("zh_TW", "zh"), ("ja", "char"), ("ko", "intl")]
    + [("en", "13a"), ("de", "13a"), ("und", "13a")],
)
def test_tokenizer_follows_the_language(lang, tokenizer):
    assert bleu_tokenizer_for(lang) == tokenizer


def test_english_uses_13a_and_a_user_tokenizer_wins():
    preds, refs = ["the cat sat on the mat"], ["the cat sat on a mat"]
    assert "tok:13a" in corpus_bleu(preds, refs).signature
    assert "tok:char" in corpus_bleu(preds, refs, lang="en", tokenize="char").signature
    assert corpus_bleu(preds, refs).score == pytest.approx(
        sacrebleu.corpus_bleu(preds, [refs]).score
    )


def test_japanese_uses_characters():
    result = corpus_bleu(["東京に行きます"], ["東京に行きました"])
    assert result.details["lang"] == "ja" and "tok:char" in result.signature


def test_misnested_references_raise():
    preds = ["a b c", "d e f", "g h i"]
    # sacrebleu's layout (one stream of 3) where one entry per prediction is expected
    with pytest.raises(UserError, match="3 predictions but 1 references") as info:
        corpus_bleu(preds, [["a b c", "d e f", "g h i"]])
    assert "transpose" in str(info.value)
    with pytest.raises(UserError, match="references\\[1\\] has 1 reference\\(s\\)"):
        corpus_bleu(preds, [["x", "y"], ["z"], ["w", "v"]])
    with pytest.raises(UserError, match="predictions must be a list of strings"):
        corpus_bleu("a b c", ["a b c"])


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="unknown BLEU tokenizer 'moses'; choose one of"):
        corpus_bleu(["a"], ["a"], tokenize="moses")
    with pytest.raises(UserError, match="smooth_method"):
        corpus_bleu(["a"], ["a"], smooth_method="laplace")


def test_chrf_equals_sacrebleu():
    expected = sacrebleu.corpus_chrf(
        ZH_PREDS, [[r[0] for r in ZH_REFS], [r[1] for r in ZH_REFS]], word_order=2
    )
    result = corpus_chrf(ZH_PREDS, ZH_REFS, word_order=2)
    assert result.score == pytest.approx(expected.score)
    assert "nw:2" in result.signature and result.signature.startswith("nrefs:2|")


# --- CodeXGLUE smoothed BLEU-4 -----------------------------------------------------------
# score = exp(1/4 * sum_n log p_n + min(0, 1 - (r + 1) / (c + 1))), p_1 = m_1 / g_1,
# p_n = (m_n + 1) / (g_n + 1) for n > 1; r = shortest reference length, c = prediction length.


def test_smoothed_bleu4_by_hand():
    # pred: returns the maximum value .            (c = 5)
    # ref:  returns the maximum value of a list .  (r = 8)
    # matches/guesses: 1-grams 5/5, 2-grams 3/4 ("value ." is not in the ref), 3-grams 2/3,
    # 4-grams 1/2.
    result = smoothed_bleu4(
        ["Returns the maximum value."], ["Returns the maximum value of a list."]
    )
    expected = (1 * (4 / 5) * (3 / 4) * (2 / 3)) ** 0.25 * math.exp(1 - 9 / 6)
    assert result.score == pytest.approx(100 * expected)


def test_smoothed_bleu4_identical_lowercased_and_underscore():
    assert smoothed_bleu4(["get the file name"], ["Get the file NAME"]).score == pytest.approx(100)
    # "open_file" -> open _ file (13a splits "_"); ref opens the file; c = r = 3.
    # 1-grams: "file" 1/3; 2-grams (0+1)/(2+1); 3-grams (0+1)/(1+1); 4-grams (0+1)/(0+1).
    assert codexglue_tokens("open_file") == ["open", "_", "file"]
    result = smoothed_bleu4(["open_file"], ["opens the file"])
    assert result.score == pytest.approx(100 * (1 / 3 * 1 / 3 * 1 / 2 * 1) ** 0.25)


def test_smoothed_bleu4_several_references_and_mean():
    # max counts over both refs; BP uses the shortest reference (2 tokens): no penalty.
    result = smoothed_bleu4(["a b c", ""], [["a b", "b c d e"], ["x y z", "x y z w"]])
    # sentence 1: 1-grams 3/3; 2-grams "a b", "b c" 2/2 -> 3/3; 3-grams 0/1 -> 1/2; 4-grams 1/1
    first = (1 * 1 * 1 / 2 * 1) ** 0.25
    # sentence 2 (empty): every p_n is 0/0 -> 1 by the evaluator's epsilon; BP exp(1 - 4/1)
    second = math.exp(1 - 4 / 1)
    assert result.per_example == pytest.approx([100 * first, 100 * second])
    assert result.score == pytest.approx(100 * (first + second) / 2)
    assert result.signature.startswith("codexglue-smooth-bleu-4|nrefs:2|")
