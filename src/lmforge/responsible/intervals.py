"""Confidence intervals for the bias audit: a rate, a difference of two rates, a mean.

Written here rather than imported because the well-kept implementations live in SciPy and
statsmodels, which lmforge does not otherwise need; each is a few lines of a published
formula, checked in the tests against values computed by hand:

* :func:`wilson`: the Wilson score interval of a binomial proportion (Wilson 1927); unlike
  the normal approximation it stays inside [0, 1] and is sensible at 0/n and n/n;
* :func:`newcombe`: the difference of two independent proportions from their Wilson
  intervals (Newcombe 1998, method 10, the "hybrid score" interval);
* :func:`bootstrap_mean`: a percentile bootstrap of a mean with a seeded NumPy generator, so
  the same seed gives the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of ``successes / n``; (0, 1) when ``n`` is 0."""
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # the bounds at 0/n and n/n are exactly 0 and 1; rounding would leave 1e-17 off
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def newcombe(
    successes_a: int, n_a: int, successes_b: int, n_b: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Interval of ``p_a - p_b`` (Newcombe's hybrid score method, from Wilson intervals)."""
    p_a = successes_a / n_a if n_a else 0.0
    p_b = successes_b / n_b if n_b else 0.0
    low_a, high_a = wilson(successes_a, n_a, confidence)
    low_b, high_b = wilson(successes_b, n_b, confidence)
    difference = p_a - p_b
    lower = difference - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    upper = difference + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return max(-1.0, lower), min(1.0, upper)


def bootstrap_mean(
    values: Sequence[float],
    seed: int,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (None for fewer than two)."""
    if len(values) < 2:
        return None
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
