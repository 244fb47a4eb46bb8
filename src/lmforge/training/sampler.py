"""The deterministic order in which training examples are seen.

One epoch is a list of *global batches* (every example of one optimizer step, over all
processes and accumulation micro-steps). It is a pure function of (seed, epoch, global batch
size), so a run sees the same global batches whatever its world size, and a resumed run
continues from a saved position ``(epoch, batches_done)`` without replaying any data.

With ``group_by_length`` the order comes from Transformers' ``get_length_grouped_indices``
(the algorithm of its ``LengthGroupedSampler``): shuffle, cut into megabatches of up to 50
global batches, sort each megabatch by length (longest batch first, so an out-of-memory
error shows at step 1), so that the padding inside each batch is small.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

# The column length grouping sorts by when a dataset has it, else "length" (tokens). An
# objective whose batches pad on two sides (seq2seq: source and target) sets it to an order
# that keeps both tight.
GROUP_KEY = "group_key"


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for one epoch, well mixed from (seed, epoch) by NumPy's SeedSequence."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def epoch_batches(
    lengths: Sequence[int],
    *,
    seed: int,
    epoch: int,
    global_batch_size: int,
    group_by_length: bool,
) -> list[list[int]]:
    """The global batches of one epoch as lists of dataset positions; a short tail is dropped."""
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    if group_by_length:
        order = get_length_grouped_indices(list(lengths), global_batch_size, generator=generator)
    else:
        order = torch.randperm(len(lengths), generator=generator).tolist()
    full = len(order) - len(order) % global_batch_size
    return [order[i : i + global_batch_size] for i in range(0, full, global_batch_size)]


def shard_global_batch(
    global_batch: Sequence[int],
    *,
    batch_size: int,
    grad_accum: int,
    num_processes: int,
    process_index: int,
) -> list[list[int]]:
    """This process's ``grad_accum`` micro-batches of one global batch.

    Micro-step ``m`` covers ``global_batch[m*W*B : (m+1)*W*B]`` and process ``r`` takes the
    ``r``-th slice of ``B`` from it (B = batch_size, W = num_processes). Neighbours in a
    length-grouped global batch have similar lengths, so each micro-batch pads little.
    """
    per_step = batch_size * num_processes
    if len(global_batch) != per_step * grad_accum:
        raise ValueError(f"global batch of {len(global_batch)}, expected {per_step * grad_accum}")
    micro = []
    for m in range(grad_accum):
        start = m * per_step + process_index * batch_size
        micro.append(list(global_batch[start : start + batch_size]))
    return micro
