"""Multi-task mixing: one training set drawn from several prepared datasets by weight.

Each position of the mixture draws its dataset with probability ``weight / sum(weights)``;
within a dataset, rows are taken in a shuffled order, reshuffled on every pass, so a task
with more draws than rows repeats all of its rows before any row a third time. Written
here rather than with ``datasets.interleave_datasets`` because that stops at the first or
last exhausted dataset, while a mixture needs an exact size and exact proportions.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from datasets import Dataset, concatenate_datasets


def mix(
    datasets: list[Dataset], weights: list[float], seed: int, total: int | None = None
) -> Dataset:
    """``total`` rows (default: all inputs' rows together) drawn from ``datasets`` by weight.

    The inputs must have the same columns (they come from one objective's ``prepare``);
    ``idx`` is renumbered 0..total-1 so the collators' per-example randomness stays unique.
    The mixture is gathered into memory.
    """
    if len(datasets) != len(weights) or not datasets:
        raise ValueError(
            f"mix needs one weight per dataset, got {len(datasets)} and {len(weights)}"
        )
    if any(w <= 0 for w in weights) or any(len(d) == 0 for d in datasets):
        raise ValueError("mix needs positive weights and non-empty datasets")
    sizes = np.array([len(d) for d in datasets])
    total = int(sizes.sum()) if total is None else total
    rng = np.random.default_rng(seed)
    probabilities = np.asarray(weights, dtype=np.float64) / sum(weights)
    choice = rng.choice(len(datasets), size=total, p=probabilities)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rows = np.empty(total, dtype=np.int64)
    for k, size in enumerate(sizes):
        where = np.flatnonzero(choice == k)
        passes = max(1, -(-len(where) // size))  # ceil
        order = np.concatenate([rng.permutation(size) for _ in range(passes)])
        rows[where] = offsets[k] + order[: len(where)]
    # Arrow's take gathers the rows in one step (select + flatten_indices re-encodes each row)
    table = concatenate_datasets(datasets).with_format("arrow")[rows]
    return Dataset(table.drop_columns(["idx"]).append_column("idx", pa.array(range(total))))
