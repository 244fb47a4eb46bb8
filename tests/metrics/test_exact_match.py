"""Exact match and its normalisation switches."""

from __future__ import annotations

import pytest

from lmforge.metrics.exact_match import exact_match, normalize_answer

SQUAD = {"lowercase": True, "remove_punctuation": True, "remove_articles": True}


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        ("  Paris \n", {}, "Paris"),
        ("New   York", {}, "New York"),
        ("New   York", {"collapse_whitespace": False}, "New   York"),
        (" x ", {"strip": False, "collapse_whitespace": False}, " x "),
        ("The U.S.A.", SQUAD, "usa"),
        ("An apple, the pear and a plum!", SQUAD, "apple pear and plum"),
        ("「北京」，中国。", {"remove_punctuation": True}, "北京中国"),
        ("$5 + 3", {"remove_punctuation": True}, "5 3"),
        ("theme anthem", {"remove_articles": True}, "theme anthem"),  # whole words only
    ],
)
def test_normalize_answer(text, options, expected):
    assert normalize_answer(text, **options) == expected


def test_percentage_per_example_and_signature():
    result = exact_match(["Paris", "the Louvre", "北京。"], ["Paris ", "Louvre", "北京"])
    assert result.per_example == [100.0, 0.0, 0.0]
    assert result.score == pytest.approx(100 / 3)
    assert "norm:strip+ws" in result.signature

    squad = exact_match(["Paris", "the Louvre", "北京。"], ["Paris ", "Louvre", "北京"], **SQUAD)
    assert squad.score == 100.0
    assert "norm:strip+lc+punct+articles+ws" in squad.signature


def test_any_reference_matches():
    result = exact_match(["4", "five"], [["four", "4"], ["5", "6"]])
    assert result.per_example == [100.0, 0.0]
    assert result.signature.startswith("nrefs:2|")
