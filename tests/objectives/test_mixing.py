from __future__ import annotations

from collections import Counter

import pytest
from datasets import Dataset

from lmforge.objectives import mix


def task(name: str, n: int) -> Dataset:
    return Dataset.from_dict(
        {
            "input_ids": [[i] for i in range(n)],
            "labels": [[i] for i in range(n)],
            "length": [2] * n,
            "idx": list(range(n)),
            "task": [name] * n,
        }
    )


def test_proportions_follow_weights():
    mixed = mix([task("a", 50), task("b", 500), task("c", 7)], [1.0, 2.0, 1.0], seed=0, total=4000)
    counts = Counter(mixed["task"])
    assert len(mixed) == 4000
    assert abs(counts["a"] / 4000 - 0.25) < 0.03
    assert abs(counts["b"] / 4000 - 0.50) < 0.03
    assert abs(counts["c"] / 4000 - 0.25) < 0.03
    assert mixed["idx"] == list(range(4000))


def test_rows_repeat_evenly_and_default_size():
    mixed = mix([task("a", 10), task("b", 30)], [1.0, 1.0], seed=3)
    assert len(mixed) == 40  # default: all rows together
    draws = [row[0] for row, t in zip(mixed["input_ids"], mixed["task"], strict=True) if t == "a"]
    # each pass over a task is a fresh permutation: every row is drawn floor or ceil times
    per_row = Counter(draws)
    assert len(draws) >= 10 and len(per_row) == 10
    assert set(per_row.values()) <= {len(draws) // 10, -(-len(draws) // 10)}


def test_deterministic_for_a_seed():
    parts = [task("a", 20), task("b", 20)]
    first = mix(parts, [1.0, 3.0], seed=1, total=100)
    assert mix(parts, [1.0, 3.0], seed=1, total=100)["input_ids"] == first["input_ids"]
    assert mix(parts, [1.0, 3.0], seed=2, total=100)["input_ids"] != first["input_ids"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="one weight per dataset"):
        mix([task("a", 3)], [1.0, 2.0], seed=0)
