"""The deterministic data order: per (seed, epoch), length-grouped, sharded across processes."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.training.sampler import epoch_batches, shard_global_batch

LENGTHS = np.random.default_rng(0).integers(1, 200, 1000).tolist()


def _order(**kw):
    args = {"seed": 3, "epoch": 0, "global_batch_size": 16, "group_by_length": True, **kw}
    return epoch_batches(LENGTHS, **args)


def test_order_is_a_function_of_seed_and_epoch():
    assert _order() == _order()
    assert _order() != _order(epoch=1)
    assert _order() != _order(seed=4)
    assert _order(group_by_length=False) == _order(group_by_length=False)


@pytest.mark.parametrize("grouped", [True, False])
def test_each_example_at_most_once_and_the_tail_dropped(grouped):
    batches = _order(group_by_length=grouped)
    flat = [i for b in batches for i in b]
    assert len(batches) == 1000 // 16 and all(len(b) == 16 for b in batches)
    assert len(set(flat)) == len(flat) == 992


def test_length_grouping_cuts_padding():
    def padded(batches):
        return sum(
            4 * max(LENGTHS[i] for i in b[k : k + 4]) for b in batches for k in (0, 4, 8, 12)
        )

    grouped, shuffled = padded(_order()), padded(_order(group_by_length=False))
    assert grouped < 0.7 * shuffled
    # the longest example comes first, so running out of memory shows at step 1
    assert max(LENGTHS) in [LENGTHS[i] for i in _order()[0]]


def test_shards_partition_the_global_batch():
    batch = list(range(100, 116))
    shards = {
        r: shard_global_batch(batch, batch_size=2, grad_accum=4, num_processes=2, process_index=r)
        for r in (0, 1)
    }
    assert shards[0][0] == [100, 101] and shards[1][0] == [102, 103]
    assert shards[0][3] == [112, 113] and shards[1][3] == [114, 115]
    assert sorted(i for r in shards.values() for micro in r for i in micro) == batch
    single = shard_global_batch(
        batch, batch_size=16, grad_accum=1, num_processes=1, process_index=0
    )
    assert single == [batch]
