"""Deterministic train/validation/test splits.

Without ``group_by`` the rows are permuted by the seed and cut at exact fractions. With
``group_by`` (e.g. ``path``) every group goes to one split chosen by a stable hash of
(seed, group value): all functions of one file land together, so near-duplicates cannot leak
from training into evaluation, and a group keeps its split when the corpus grows.
"""

from __future__ import annotations

import hashlib

import datasets
import numpy as np

from lmforge.config import SplitConfig
from lmforge.errors import UserError

SPLITS = ("train", "validation", "test")


def group_fraction(seed: int, value: object) -> float:
    """A uniform number in [0, 1) fixed by (seed, value); blake2b, not ``hash()``,
    because Python salts string hashes per process."""
    digest = hashlib.blake2b(f"{seed}\x00{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _split_of(fraction: float, split: SplitConfig) -> int:
    if fraction < split.test:
        return 2
    if fraction < split.test + split.validation:
        return 1
    return 0


def _assign_groups(ds: datasets.Dataset, split: SplitConfig, seed: int) -> np.ndarray:
    column = split.group_by
    if column not in ds.column_names:
        raise UserError(
            f"split.group_by: no column {column!r} to group by; columns: {', '.join(ds.column_names)}"
        )
    chosen: dict[object, int] = {}
    assigned = np.empty(len(ds), dtype=np.int8)
    start = 0
    for batch in ds.select_columns([column]).iter(batch_size=10_000):
        for offset, value in enumerate(batch[column]):
            if value not in chosen:
                chosen[value] = _split_of(group_fraction(seed, value), split)
            assigned[start + offset] = chosen[value]
        start += len(batch[column])
    return assigned


def _assign_rows(n: int, split: SplitConfig, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_validation = round(n * split.test), round(n * split.validation)
    assigned = np.zeros(n, dtype=np.int8)
    assigned[order[:n_test]] = 2
    assigned[order[n_test : n_test + n_validation]] = 1
    return assigned


def split_dataset(ds: datasets.Dataset, split: SplitConfig, seed: int) -> datasets.DatasetDict:
    """Split ``ds`` into train/validation/test; ``split.seed`` (if set) overrides ``seed``.

    Rows keep their original order inside each split; a split may be empty.
    """
    seed = split.seed if split.seed is not None else seed
    if split.group_by:
        assigned = _assign_groups(ds, split, seed)
    else:
        assigned = _assign_rows(len(ds), split, seed)
    return datasets.DatasetDict(
        {name: ds.select(np.flatnonzero(assigned == i)) for i, name in enumerate(SPLITS)}
    )
