"""T5 span corruption (Raffel et al. 2020, section 3.1.4), as in T5 and HF run_t5_mlm_flax.py.

Texts are packed (each followed by eos) into blocks of ``expanded`` raw tokens, chosen so
that once ~``noise_density`` of them, in spans of mean length ``mean_span_length``, are
each replaced by one sentinel and eos is appended, the input is exactly ``block_size``
long. The label is each sentinel followed by the tokens it hid, then eos::

    block   a b c d e f g h          noise: c d, g
    input   a b <extra_id_0> e f <extra_id_1> h </s>
    labels  <extra_id_0> c d <extra_id_1> g </s>

With ``span_targets: text`` the input is the same and the label is the whole block, ``a b c d
e f g h </s>``: BART's text infilling (Lewis et al. 2020), T5's "BERT-style" family of
objectives (Raffel et al. 2020, table 3). It costs a longer decoder pass per block, and the
decoder learns to write whole texts and to copy from its input rather than only to fill gaps:
on the quickstart's two-core budget a model pretrained this way fine-tunes to a lower loss
than one pretrained on spans, which does no better than no pretraining at all (measured in
docs/quickstart.md).

The spans of block ``idx`` in epoch ``epoch`` come from ``default_rng([seed, epoch, idx])``,
so they do not depend on batching, worker count, or resuming mid-epoch.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from datasets import Dataset
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from lmforge.config import ObjectiveConfig
from lmforge.errors import UserError
from lmforge.objectives.causal_lm import check_vocab, pack_texts, special_token_id

NAME = "span_corruption"
SpanTargets = Literal["spans", "text"]


def noise_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) in a block of ``length`` raw tokens.

    As T5's ``random_spans_noise_mask``: spans = round(noise / mean span length), at least
    one noise and one kept token and at least one span; never more spans than tokens of
    either kind (only reachable with extreme settings). Counting spans from the noise tokens
    alone (not from the fewer kind, as run_t5_mlm_flax.py's mask does) makes the input
    length grow by 0 or 1 per raw token, so every block_size can be hit exactly.
    """
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = int(round(num_noise / mean_span_length))
    return num_noise, min(max(num_spans, 1), num_noise, length - num_noise)


def corrupted_lengths(
    length: int, noise_density: float, mean_span_length: float
) -> tuple[int, int]:
    """(input, label) lengths for a block of ``length`` raw tokens, eos included in both."""
    num_noise, num_spans = noise_counts(length, noise_density, mean_span_length)
    return length - num_noise + num_spans + 1, num_noise + num_spans + 1


def expanded_lengths(
    block_size: int, noise_density: float, mean_span_length: float
) -> tuple[int, int]:
    """(raw tokens per block, label length) so corrupted inputs are exactly ``block_size``.

    ``compute_input_and_target_lengths`` of run_t5_mlm_flax.py: the largest raw length
    whose input still fits. For block_size 512 and the defaults: 568 raw tokens, 114 labels.
    """
    expanded = block_size
    while corrupted_lengths(expanded + 1, noise_density, mean_span_length)[0] <= block_size:
        expanded += 1
    input_length, label_length = corrupted_lengths(expanded, noise_density, mean_span_length)
    if input_length != block_size:
        raise UserError(
            f"objective.block_size={block_size} is too small for span corruption with "
            f"noise_density={noise_density} and mean_span_length={mean_span_length}: "
            "the sentinels and eos alone overflow it; use a larger block_size"
        )
    return expanded, label_length


def random_spans_noise_mask(
    length: int, noise_density: float, mean_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask of the noise positions, as T5's ``random_spans_noise_mask``.

    Kept and noise spans alternate, starting with a kept span; the span lengths are random
    partitions of the kept and noise counts (each span at least one token).
    """
    num_noise, num_spans = noise_counts(length, noise_density, mean_span_length)

    def random_segmentation(num_items: int, num_segments: int) -> np.ndarray:
        first_in_segment = np.zeros(num_items, dtype=bool)
        first_in_segment[1 + rng.permutation(num_items - 1)[: num_segments - 1]] = True
        return np.bincount(np.cumsum(first_in_segment), minlength=num_segments)

    noise_spans = random_segmentation(num_noise, num_spans)
    kept_spans = random_segmentation(length - num_noise, num_spans)
    interleaved = np.stack([kept_spans, noise_spans], axis=1).reshape(-1)
    span_starts = np.zeros(length, dtype=np.int64)
    span_starts[np.cumsum(interleaved)[:-1]] = 1
    return np.cumsum(span_starts) % 2 == 1


def corrupt(
    block: np.ndarray,
    noise_mask: np.ndarray,
    sentinel_ids: np.ndarray,
    eos_id: int,
    targets: SpanTargets = "spans",
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels): span k becomes ``sentinel_ids[k]`` in the input; the labels list
    the spans after their sentinels (``targets="spans"``) or are the whole block (``"text"``)."""
    span_start = noise_mask & ~np.concatenate([[False], noise_mask[:-1]])
    sentinels = sentinel_ids[: int(span_start.sum())]
    inputs = block.copy()
    inputs[span_start] = sentinels
    inputs = np.append(inputs[~noise_mask | span_start], eos_id)
    if targets == "text":
        return inputs, np.append(block, eos_id)
    labels = np.insert(block[noise_mask], np.flatnonzero(span_start[noise_mask]), sentinels)
    return inputs, np.append(labels, eos_id)


def label_length(expanded: int, cfg: ObjectiveConfig) -> int:
    """Labels per block (eos included) for blocks of ``expanded`` raw tokens."""
    if cfg.span_targets == "text":
        return expanded + 1
    return corrupted_lengths(expanded, cfg.noise_density, cfg.mean_span_length)[1]


def sentinel_token_ids(
    tokenizer: PreTrainedTokenizerBase, needed: int, block_size: int
) -> np.ndarray:
    """Ids of ``<extra_id_0>``, ``<extra_id_1>``...: T5 gives the first span ``<extra_id_0>``."""
    vocab = tokenizer.get_vocab()
    ids = []
    while f"<extra_id_{len(ids)}>" in vocab:
        ids.append(vocab[f"<extra_id_{len(ids)}>"])
    if len(ids) < needed:
        raise UserError(
            f"span corruption with objective.block_size={block_size} makes {needed} spans per "
            f"block, but the tokenizer has only {len(ids)} sentinel tokens (<extra_id_N>); "
            "lower block_size or use a tokenizer with more sentinels"
        )
    return np.array(ids, dtype=np.int64)


def prepare(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: ObjectiveConfig, seed: int
) -> Dataset:
    """Pack ``text`` into blocks of the expanded length; ``seed`` is unused (not random)."""
    expanded, _ = expanded_lengths(cfg.block_size, cfg.noise_density, cfg.mean_span_length)
    blocks = pack_texts(dataset, tokenizer, expanded, NAME, "objective.block_size")
    length = cfg.block_size + label_length(expanded, cfg)
    return blocks.add_column("length", [length] * len(blocks))


class SpanCorruptionCollator:
    """Blocks -> input_ids (block_size), attention_mask, labels (label length); no padding."""

    def __init__(
        self,
        noise_density: float,
        mean_span_length: float,
        sentinel_ids: np.ndarray,
        eos_id: int,
        seed: int,
        targets: SpanTargets = "spans",
    ) -> None:
        self.noise_density = noise_density
        self.targets = targets
        self.mean_span_length = mean_span_length
        self.sentinel_ids = sentinel_ids
        self.eos_id = eos_id
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New spans each epoch; call before iterating (DataLoader workers copy the collator)."""
        self.epoch = epoch

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        inputs, labels = [], []
        for f in features:
            block = np.asarray(f["input_ids"], dtype=np.int64)
            rng = np.random.default_rng([self.seed, self.epoch, f["idx"]])
            mask = random_spans_noise_mask(
                len(block), self.noise_density, self.mean_span_length, rng
            )
            x, y = corrupt(block, mask, self.sentinel_ids, self.eos_id, self.targets)
            inputs.append(x)
            labels.append(y)
        input_ids = torch.tensor(np.stack(inputs))
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": torch.tensor(np.stack(labels)),
        }


def collator(
    tokenizer: PreTrainedTokenizerBase,
    cfg: ObjectiveConfig,
    seed: int,
    model_config: PretrainedConfig | None = None,
) -> SpanCorruptionCollator:
    check_vocab(tokenizer, model_config)
    expanded, _ = expanded_lengths(cfg.block_size, cfg.noise_density, cfg.mean_span_length)
    _, num_spans = noise_counts(expanded, cfg.noise_density, cfg.mean_span_length)
    return SpanCorruptionCollator(
        cfg.noise_density,
        cfg.mean_span_length,
        sentinel_token_ids(tokenizer, num_spans, cfg.block_size),
        special_token_id(tokenizer, "eos_token", NAME),
        seed,
        cfg.span_targets,
    )
