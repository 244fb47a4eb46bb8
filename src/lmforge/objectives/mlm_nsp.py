"""BERT pretraining: masked language modelling plus next-sentence prediction (Devlin et al. 2019).

``prepare`` turns documents (rows of ``text``) into pairs ``[CLS] A [SEP] B [SEP]`` of at
most ``block_size`` tokens, as BERT's create_pretraining_data.py does: A is one or more
consecutive segments; B is what follows A in the same document (``next_sentence_label``
0) or, with probability ``nsp_probability``, a run of segments from another document (1),
the Hugging Face ``BertForPreTraining`` convention. Segments are a document's lines, split
again after sentence-final punctuation. Pairs are truncated from the front of A and the
back of B, so an actual-next pair is always a contiguous stretch of its document.

The collator masks ``mlm_probability`` of the non-special tokens of each pair (BERT's
exact count, at least one): 80% become [MASK], 10% a random non-special token, 10% stay.
Pair choices come from ``default_rng([seed, document])``, masks from
``default_rng([seed, epoch, idx])``: both independent of batching, workers and resumes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, PretrainedConfig, PreTrainedTokenizerBase

from lmforge.config import ObjectiveConfig
from lmforge.errors import UserError
from lmforge.objectives.causal_lm import check_vocab, require_columns, special_token_id

NAME = "mlm_nsp"

# A plain rule, not a trained sentence splitter (punkt needs a download): NSP needs
# consecutive pieces of text, not linguistically perfect sentences.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")


def split_segments(text: str) -> list[str]:
    """A document's segments: its lines, split after ``. ! ?`` (+ space) and ``。！？``."""
    pieces = (p.strip() for line in text.splitlines() for p in SENTENCE_END.split(line))
    return [p for p in pieces if p]


def truncate_pair(a: list[int], b: list[int], max_tokens: int) -> tuple[list[int], list[int]]:
    """Shorten the longer of A and B one token at a time (BERT's truncate_seq_pair).

    A loses tokens at its front and B at its back, keeping the A|B junction intact.
    """
    len_a, len_b = len(a), len(b)
    while len_a + len_b > max_tokens:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return a[len(a) - len_a :], b[:len_b]


def document_pairs(
    segments: list[list[int]],
    other_document: Callable[[], list[list[int]]],
    max_tokens: int,
    nsp_probability: float,
    rng: np.random.Generator,
) -> list[tuple[list[int], list[int], int]]:
    """(A, B, next_sentence_label) pairs from one document's tokenized segments.

    BERT's create_instances_from_document without short sequences: gather segments up to
    ``max_tokens``, cut them at a random segment boundary into A and B, or pair A with
    segments from ``other_document()`` and put the unused segments back. A single segment
    is cut at a random token when an actual-next pair is drawn, so the label rate follows
    ``nsp_probability`` even for one-sentence documents.
    """
    pairs = []
    chunk: list[list[int]] = []
    chunk_tokens = 0
    i = 0
    while i < len(segments):
        chunk.append(segments[i])
        chunk_tokens += len(segments[i])
        if i == len(segments) - 1 or chunk_tokens >= max_tokens:
            random_next = bool(rng.random() < nsp_probability) or chunk_tokens < 2
            if len(chunk) == 1 and not random_next:
                cut = int(rng.integers(1, len(chunk[0])))
                chunk = [chunk[0][:cut], chunk[0][cut:]]
            a_end = 1 if len(chunk) == 1 else int(rng.integers(1, len(chunk)))
            a = [t for segment in chunk[:a_end] for t in segment]
            if random_next:
                other = other_document()
                start = int(rng.integers(len(other)))
                b = [t for segment in other[start:] for t in segment]
                i -= len(chunk) - a_end  # the segments B did not use start the next chunk
            else:
                b = [t for segment in chunk[a_end:] for t in segment]
            pairs.append((*truncate_pair(a, b, max_tokens), int(random_next)))
            chunk, chunk_tokens = [], 0
        i += 1
    return pairs


def prepare(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: ObjectiveConfig, seed: int
) -> Dataset:
    """Documents -> pairs with input_ids, token_type_ids, next_sentence_label, length, idx."""
    require_columns(dataset, ["text"], NAME)
    cls_id = special_token_id(tokenizer, "cls_token", NAME)
    sep_id = special_token_id(tokenizer, "sep_token", NAME)
    special_token_id(tokenizer, "mask_token", NAME)  # fail here, not in the first batch

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        per_doc = [split_segments(text or "") for text in batch["text"]]
        flat = [s for doc in per_doc for s in doc]
        ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
        docs, at = [], 0
        for doc in per_doc:
            segments = [x for x in ids[at : at + len(doc)] if x]
            at += len(doc)
            if segments:
                docs.append(segments)
        return {"segments": docs}

    docs = dataset.map(
        tokenize, batched=True, remove_columns=dataset.column_names, desc="splitting documents"
    )
    if len(docs) < 2:
        raise UserError(
            f"objective {NAME} needs at least 2 non-empty documents to draw random next "
            f"segments from; the data has {len(docs)}"
        )
    max_tokens = cfg.block_size - 3  # [CLS], [SEP], [SEP]

    def make_pairs(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            "input_ids": [],
            "token_type_ids": [],
            "next_sentence_label": [],
            "length": [],
        }
        for segments, doc in zip(batch["segments"], indices, strict=True):
            rng = np.random.default_rng([seed, doc])

            def other_document(doc: int = doc, rng: np.random.Generator = rng) -> Any:
                j = int(rng.integers(len(docs) - 1))
                return docs[j + (j >= doc)]["segments"]

            for a, b, label in document_pairs(
                segments, other_document, max_tokens, cfg.nsp_probability, rng
            ):
                out["input_ids"].append([cls_id, *a, sep_id, *b, sep_id])
                out["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
                out["next_sentence_label"].append(label)
                out["length"].append(len(a) + len(b) + 3)
        return out

    pairs = docs.map(
        make_pairs,
        batched=True,
        with_indices=True,
        remove_columns=["segments"],
        desc="building sentence pairs",
    )
    return pairs.add_column("idx", range(len(pairs)))


class MLMCollator:
    """Mask each pair, then pad: input_ids, attention_mask, token_type_ids, labels,
    next_sentence_label. Labels are -100 everywhere except the masked positions."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        mlm_probability: float,
        seed: int,
    ) -> None:
        self.mlm_probability = mlm_probability
        self.mask_id = special_token_id(tokenizer, "mask_token", NAME)
        self.special_ids = np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
        self.replacement_ids = np.setdiff1d(np.arange(len(tokenizer)), self.special_ids)
        self.pad = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, return_tensors="pt")
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New masks each epoch; call before iterating (DataLoader workers copy the collator)."""
        self.epoch = epoch

    def mask(self, input_ids: list[int], idx: int) -> tuple[list[int], list[int]]:
        """(masked input_ids, labels) for one pair, drawn from (seed, epoch, idx)."""
        rng = np.random.default_rng([self.seed, self.epoch, idx])
        ids = np.array(input_ids, dtype=np.int64)
        candidates = np.flatnonzero(~np.isin(ids, self.special_ids))
        count = min(len(candidates), max(1, int(round(len(candidates) * self.mlm_probability))))
        chosen = np.sort(rng.choice(candidates, size=count, replace=False))
        labels = np.full_like(ids, -100)
        labels[chosen] = ids[chosen]
        action = rng.random(count)  # < 0.8: [MASK]; < 0.9: random token; else unchanged
        ids[chosen[action < 0.8]] = self.mask_id
        swapped = chosen[(action >= 0.8) & (action < 0.9)]
        ids[swapped] = rng.choice(self.replacement_ids, size=len(swapped))
        return ids.tolist(), labels.tolist()

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        masked = []
        for f in features:
            input_ids, labels = self.mask(f["input_ids"], f["idx"])
            masked.append(
                {
                    "input_ids": input_ids,
                    "token_type_ids": f["token_type_ids"],
                    "labels": labels,
                    "next_sentence_label": f["next_sentence_label"],
                }
            )
        return dict(self.pad(masked))


def collator(
    tokenizer: PreTrainedTokenizerBase,
    cfg: ObjectiveConfig,
    seed: int,
    model_config: PretrainedConfig | None = None,
) -> MLMCollator:
    check_vocab(tokenizer, model_config)
    return MLMCollator(tokenizer, cfg.mlm_probability, seed)
