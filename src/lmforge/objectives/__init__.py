"""Training objectives: how data becomes model inputs, and nothing else.

An objective is a ``prepare`` step (tokenize, pack or truncate; add ``idx`` and
``length``) and a collator (batch -> tensors for the Hugging Face model's forward, with
``labels`` -100 where there is nothing to predict, so ``(labels != -100).sum()`` counts
the targets). The training loop is the same for all; only these and the model head differ.
Collators take ``seed`` and ``set_epoch(epoch)``; random choices for example ``idx`` come
from ``numpy.random.default_rng([seed, epoch, idx])``, never from global RNG state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from datasets import Dataset
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from lmforge.config import ObjectiveConfig
from lmforge.errors import UserError
from lmforge.objectives import causal_lm, mlm_nsp, sft, span_corruption
from lmforge.objectives.mixing import mix


class Collator(Protocol):
    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]: ...

    def set_epoch(self, epoch: int) -> None: ...


@dataclass(frozen=True)
class Objective:
    """One objective: its data preparation, its collator, and the model families it fits."""

    name: str
    prepare: Callable[[Dataset, PreTrainedTokenizerBase, ObjectiveConfig, int], Dataset]
    collator: Callable[
        [PreTrainedTokenizerBase, ObjectiveConfig, int, PretrainedConfig | None], Collator
    ]
    families: tuple[str, ...]  # ModelConfig.family values whose model has the right head
    columns: tuple[str, ...]  # the data columns ``prepare`` reads

    def check_family(self, family: str) -> None:
        """UserError when the model family has no head for this objective."""
        if family not in self.families:
            raise UserError(
                f"objective.name={self.name} needs model.family {' or '.join(self.families)}; "
                f"got {family}"
            )


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in [
        Objective(
            "span_corruption", span_corruption.prepare, span_corruption.collator, ("t5",), ("text",)
        ),
        Objective("mlm_nsp", mlm_nsp.prepare, mlm_nsp.collator, ("bert",), ("text",)),
        Objective("causal_lm", causal_lm.prepare, causal_lm.collator, ("gpt2", "llama"), ("text",)),
        Objective("seq2seq_sft", sft.seq2seq_prepare, sft.collator, ("t5",), ("source", "target")),
        Objective(
            "causal_sft", sft.causal_prepare, sft.collator, ("gpt2", "llama"), ("source", "target")
        ),
    ]
}


def get_objective(name: str) -> Objective:
    """The objective called ``name``, or a UserError listing the valid names."""
    if name not in OBJECTIVES:
        raise UserError(
            f"objective.name={name!r} is unknown; choose one of {', '.join(OBJECTIVES)}"
        )
    return OBJECTIVES[name]


__all__ = ["OBJECTIVES", "Collator", "Objective", "get_objective", "mix"]
