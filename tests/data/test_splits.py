from __future__ import annotations

import datasets
import pytest

from lmforge.config import SplitConfig
from lmforge.data.splits import split_dataset
from lmforge.errors import UserError


def numbered(n: int) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"i": list(range(n)), "path": [f"file{i // 4}.py" for i in range(n)]}
    )


def test_same_seed_same_split_different_seed_different() -> None:
    ds = numbered(200)
    split = SplitConfig(validation=0.1, test=0.2)

    first, again, other = (split_dataset(ds, split, seed) for seed in (1, 1, 2))

    assert list(first) == ["train", "validation", "test"]
    assert [len(first[k]) for k in first] == [140, 20, 40]
    for name in first:
        assert first[name]["i"] == again[name]["i"]
    assert first["test"]["i"] != other["test"]["i"]
    everything = sorted(i for name in first for i in first[name]["i"])
    assert everything == list(range(200))


def test_split_seed_overrides_run_seed_and_zero_fractions_give_empty_splits() -> None:
    ds = numbered(50)

    pinned = SplitConfig(validation=0.2, test=0.0, seed=7)
    a, b = split_dataset(ds, pinned, 1), split_dataset(ds, pinned, 2)

    assert a["validation"]["i"] == b["validation"]["i"]
    assert len(a["test"]) == 0 and len(a["train"]) == 40


def test_group_by_keeps_each_group_in_one_split() -> None:
    ds = numbered(400)  # 100 files of 4 rows each
    split = SplitConfig(validation=0.2, test=0.2, group_by="path")

    parts = split_dataset(ds, split, seed=3)
    groups = {name: set(parts[name]["path"]) for name in parts}

    assert groups["train"].isdisjoint(groups["validation"])
    assert groups["train"].isdisjoint(groups["test"])
    assert groups["validation"].isdisjoint(groups["test"])
    assert sum(len(parts[n]) for n in parts) == 400
    assert all(len(parts[n]) > 0 for n in parts)
    # groups move with the seed, and stay put with it (a stable hash, not hash())
    assert split_dataset(ds, split, seed=3)["test"]["i"] == parts["test"]["i"]
    assert split_dataset(ds, split, seed=4)["test"]["path"] != parts["test"]["path"]


def test_group_by_missing_column_is_a_user_error() -> None:
    with pytest.raises(
        UserError, match="split.group_by: no column 'repo' to group by; columns: i, path"
    ):
        split_dataset(numbered(4), SplitConfig(group_by="repo"), seed=0)
