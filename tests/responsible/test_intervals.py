"""The audit's intervals against published values."""

from __future__ import annotations

import pytest

from lmforge.responsible.intervals import bootstrap_mean, newcombe, wilson


def test_wilson_matches_published_values() -> None:
    # 7/10 and 3/5 as in Newcombe (1998) table I and standard references
    assert wilson(7, 10) == pytest.approx((0.3968, 0.8922), abs=5e-5)
    assert wilson(3, 5) == pytest.approx((0.2307, 0.8824), abs=5e-5)
    assert wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=5e-5))
    assert wilson(2, 2) == (pytest.approx(0.3424, abs=5e-5), 1.0)
    assert wilson(0, 0) == (0.0, 1.0)


def test_newcombe_matches_the_papers_example() -> None:
    # Newcombe (1998), example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339
    assert newcombe(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    low, high = newcombe(3, 4, 1, 4)
    assert (low, high) == pytest.approx((-0.1355, 0.7891), abs=5e-5)
    assert newcombe(1, 4, 3, 4) == pytest.approx((-high, -low))  # swapping groups mirrors it


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    values = [1.0, -0.5, 0.25, 0.0, 2.0]
    first = bootstrap_mean(values, seed=0)
    assert first == bootstrap_mean(values, seed=0)
    assert first != bootstrap_mean(values, seed=1)
    assert first[0] < sum(values) / len(values) < first[1]
    assert bootstrap_mean([1.0, 1.0, 1.0], seed=0) == (1.0, 1.0)
    assert bootstrap_mean([1.0], seed=0) is None
