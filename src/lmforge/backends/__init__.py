"""Where predictions come from: a local model directory or an OpenAI-compatible endpoint.

Evaluation and HumanEval talk to every model through :class:`Backend`, so a fine-tuned
checkpoint and a hosted model are scored by the same code on the same rendered sources:

* :class:`~lmforge.backends.local.LocalBackend` loads a model directory with
  :func:`lmforge.models.load_pretrained` and generates with :mod:`lmforge.generation`;
* :class:`~lmforge.backends.openai_compat.OpenAICompatBackend` calls ``/v1/chat/completions``
  or ``/v1/completions`` of OpenAI, Gemini's OpenAI-compatible endpoint, vLLM, Ollama or
  ``lmforge serve``.

Sources are already rendered with the task template (:func:`lmforge.data.templates.render_source`)
before they reach a backend; a backend adds only what its model needs around them (a local
causal model's separator, a chat message).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from lmforge.errors import UserError
from lmforge.generation import DecodingSettings
from lmforge.metrics import MetricResult


class LikelihoodUnavailable(UserError):
    """The backend cannot score the likelihood of given text (no perplexity from it)."""


@dataclass
class TokenUsage:
    """Tokens a backend read and wrote, summed over its calls (thread-safe)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.prompt_tokens, self.completion_tokens


@runtime_checkable
class Backend(Protocol):
    """A model that turns rendered sources into texts, and may score the likelihood of texts."""

    name: str
    usage: TokenUsage

    def generate(
        self,
        sources: list[str],
        settings: DecodingSettings,
        n: int = 1,
        *,
        stop: Sequence[str] = (),
        raw: bool = False,
    ) -> list[list[str]]:
        """``n`` texts per source, in the order of ``sources``, each cut at the first ``stop``
        sequence. ``raw`` sends a source exactly as given (HumanEval prompts), without the
        separator a fine-tuned causal model was trained to answer after."""
        ...

    def perplexity(self, texts_or_pairs: Sequence[str] | Sequence[Sequence[str]]) -> MetricResult:
        """Perplexity of texts, or of each target given its source (log-likelihood based).
        Raises :class:`LikelihoodUnavailable` where the model's log-probabilities are out of
        reach."""
        ...

    def unsupported(self, settings: DecodingSettings) -> list[str]:
        """The decoding settings this backend cannot apply, one sentence each."""
        ...

    def close(self) -> None:
        """Release the model or the connections."""
        ...


__all__ = ["Backend", "LikelihoodUnavailable", "TokenUsage"]
