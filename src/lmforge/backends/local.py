"""A model directory on this machine: an lmforge run's ``final/`` or any compatible checkpoint.

The model is loaded once with :func:`lmforge.models.load_pretrained` (offline, safetensors
unless ``allow_pickle``) and generates with :mod:`lmforge.generation`, which encodes each
source exactly as fine-tuning encoded it. The model card (``lmforge.json``) says which task
template and source length the model was trained with; evaluation renders sources with that
template when the data leaves its own at the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from lmforge.backends import LikelihoodUnavailable, TokenUsage
from lmforge.config import TemplateConfig
from lmforge.errors import UserError
from lmforge.generation import DecodingSettings, generate
from lmforge.metrics import MetricResult
from lmforge.models import load_pretrained, model_kind
from lmforge.runs import read_model_card

DEFAULT_MAX_SOURCE_LENGTH = 512


class LocalBackend:
    """Generate with (and score likelihoods under) the model in ``model_dir``."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        name: str | None = None,
        batch_size: int = 16,
        allow_pickle: bool = False,
        max_source_length: int | None = None,
        allow_encoder: bool = False,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.name = name or str(model_dir)
        self.batch_size = batch_size
        self.model, self.tokenizer = load_pretrained(model_dir, allow_pickle=allow_pickle)
        try:
            self.kind = model_kind(self.model)
        except ValueError as exc:
            raise UserError(f"model {self.name}: {exc}") from None
        if self.kind == "encoder" and not allow_encoder:
            raise UserError(
                f"model {self.name} ({model_dir}) is an encoder (masked LM): it cannot generate; "
                "evaluate a seq2seq or causal model"
            )
        self.card: dict[str, Any] = (
            read_model_card(self.model_dir) if self.model_dir.is_dir() else {}
        )
        self.max_source_length = max_source_length or self.card.get(
            "max_source_length", DEFAULT_MAX_SOURCE_LENGTH
        )
        self.usage = TokenUsage()

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.model_dir)!r}, kind={self.kind!r})"

    def template_for(self, task: str) -> TemplateConfig | None:
        """The template this model was fine-tuned with for ``task``, if its card says."""
        for entry in self.card.get("tasks", []):
            if entry.get("task") == task and isinstance(entry.get("template"), dict):
                return TemplateConfig(**entry["template"])
        return None

    def unsupported(self, settings: DecodingSettings) -> list[str]:
        return []

    def generate(
        self,
        sources: list[str],
        settings: DecodingSettings,
        n: int = 1,
        *,
        stop: Sequence[str] = (),
        raw: bool = False,
    ) -> list[list[str]]:
        """``n`` texts per source (independent samples, or the best ``n`` beams), not stripped:
        a completion's leading whitespace can matter (HumanEval's indentation).

        ``raw`` sends a causal model the prompt's own tokens, without the fine-tuning
        separator (HumanEval completes code as given)."""
        if self.kind == "encoder":
            raise UserError(f"model {self.name} is an encoder (masked LM): it cannot generate")
        if n < 1:
            raise UserError(f"samples per source must be at least 1, got {n}")
        settings = replace(settings, num_return_sequences=n, stop=[*settings.stop, *stop])
        generations = generate(
            self.model,
            self.tokenizer,
            sources,
            settings,
            batch_size=self.batch_size,
            max_source_length=self.max_source_length,
            raw=raw,
        )
        for group in generations:
            for g in group:
                self.usage.add(g.prompt_tokens, g.completion_tokens)
        return [[g.text for g in group] for group in generations]

    def perplexity(self, texts_or_pairs: Sequence[str] | Sequence[Sequence[str]]) -> MetricResult:
        """Token-level perplexity as :func:`lmforge.metrics.perplexity.perplexity` defines it,
        with the source and target lengths the model was fine-tuned with."""
        from lmforge.metrics.perplexity import perplexity

        if self.kind == "encoder":
            raise LikelihoodUnavailable(
                f"model {self.name} is a masked LM: it has no left-to-right likelihood"
            )
        if self.kind == "seq2seq" and texts_or_pairs and isinstance(texts_or_pairs[0], str):
            raise LikelihoodUnavailable(
                f"model {self.name} is seq2seq: it scores a target given a source, not plain text"
            )
        return perplexity(
            self.model,
            self.tokenizer,
            texts_or_pairs,
            self.batch_size,
            max_source_length=self.max_source_length,
            max_target_length=self.card.get("max_target_length"),
        )

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
