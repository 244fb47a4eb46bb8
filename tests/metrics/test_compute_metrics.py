"""The single entry point, the registry, and the shape checks every metric shares."""

from __future__ import annotations

import json

import pytest

from lmforge.errors import UserError
from lmforge.metrics import METRICS, compute_metrics, references_per_prediction

PREDS = ["我喜欢猫", "The cat sat on the mat."]
REFS = ["我喜欢狗和猫", "The cat sat on the mat."]


def test_all_metrics_by_name():
    results = compute_metrics(list(METRICS), PREDS, REFS)
    assert list(results) == [
        "bleu",
        "chrf",
        "rouge1",
        "rouge2",
        "rougeL",
        "rougeLsum",
        "exact_match",
        "smoothed_bleu4",
    ]
    assert results["exact_match"].score == 50.0
    assert results["rouge1"].per_example == pytest.approx([80.0, 100.0])
    for result in results.values():
        assert 0 <= result.score <= 100
        assert result.signature
        json.dumps(result.to_dict())  # metrics.json-ready


def test_lang_and_options_reach_the_metric():
    results = compute_metrics(
        ["bleu", "exact_match"],
        ["a b c d"],
        ["A B C D"],
        lang="en",
        options={"bleu": {"lowercase": True}, "exact_match": {"lowercase": True}},
    )
    assert results["bleu"].score == pytest.approx(100.0)
    assert "case:lc" in results["bleu"].signature
    assert results["exact_match"].score == 100.0


def test_unknown_names_and_options_are_user_errors():
    with pytest.raises(UserError, match="unknown metric 'meteor'; choose from bleu, chrf, rouge"):
        compute_metrics(["meteor"], PREDS, REFS)
    with pytest.raises(UserError, match="metric rouge has no option 'stemmer'; valid options: "):
        compute_metrics(["rouge"], PREDS, REFS, options={"rouge": {"stemmer": True}})
    with pytest.raises(UserError, match="options were given for metric 'bleu'"):
        compute_metrics(["rouge"], PREDS, REFS, options={"bleu": {"tokenize": "zh"}})


def test_reference_shapes():
    assert references_per_prediction(["a", "b"], ["x", "y"]) == [["x"], ["y"]]
    assert references_per_prediction(["a"], [("x", "y")]) == [["x", "y"]]
    with pytest.raises(UserError, match="2 predictions but 3 references"):
        references_per_prediction(["a", "b"], ["x", "y", "z"])
    with pytest.raises(UserError, match="there are no predictions"):
        references_per_prediction([], [])
    with pytest.raises(UserError, match="references\\[0\\] must be a string or a non-empty"):
        references_per_prediction(["a"], [[]])
    with pytest.raises(UserError, match="references\\[0\\]\\[1\\] is int"):
        references_per_prediction(["a"], [["x", 3]])
    with pytest.raises(UserError, match="predictions\\[1\\] is NoneType"):
        references_per_prediction(["a", None], ["x", "y"])
