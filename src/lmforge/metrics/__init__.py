"""Offline evaluation metrics: every score travels with a signature that says how it was made.

Text-overlap metrics (BLEU, chrF, ROUGE, CodeXGLUE's smoothed BLEU-4) and exact match score
``predictions`` (one string each) against ``references`` (one string per prediction, or one
list of strings per prediction when there are several); all report on a 0-100 scale.
Perplexity (:mod:`lmforge.metrics.perplexity`) needs a model and pass@k needs samples, so
they are called directly rather than through :func:`compute_metrics`.

Nothing is downloaded: BLEU/chrF come from sacrebleu, ROUGE from rouge-score with lmforge's
CJK-aware tokenizer (:mod:`lmforge.metrics.tokenize`). Metric modules are imported only when
used, because rouge-score pulls in NLTK (seconds of import time).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lmforge.errors import UserError
from lmforge.metrics.tokenize import detect_language


@dataclass(frozen=True)
class MetricResult:
    """One score, the signature that makes it comparable, and what it was computed from.

    ``details`` holds the metric's extra numbers (BLEU's n-gram precisions, ROUGE's mean
    precision and recall, the token count of perplexity); ``per_example`` holds one value
    per prediction, on the same scale as ``score``, where the metric has them.
    """

    name: str
    score: float
    signature: str
    details: dict[str, Any] = field(default_factory=dict)
    per_example: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for metrics.json)."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.name} = {self.score:.2f} ({self.signature})"


def references_per_prediction(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> list[list[str]]:
    """Check the shapes and return one list of references per prediction.

    ``references[i]`` belongs to ``predictions[i]``: a string (one reference) or a list of
    strings (several). Every prediction must have the same number of references. This is
    the layout people write; sacrebleu wants the transpose (one stream per reference set),
    and passing one for the other silently scores the wrong pairs, so counts are checked here
    and the metrics transpose themselves.
    """
    if isinstance(predictions, str) or not isinstance(predictions, Sequence):
        raise UserError(f"predictions must be a list of strings, got {type(predictions).__name__}")
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise UserError(f"references must be a list, got {type(references).__name__}")
    if not predictions:
        raise UserError("there are no predictions to score")
    for i, prediction in enumerate(predictions):
        if not isinstance(prediction, str):
            raise UserError(f"predictions[{i}] is {type(prediction).__name__}, not a string")
    n = len(predictions)
    if len(references) != n:
        hint = None
        if references and all(
            not isinstance(r, str) and isinstance(r, Sequence) and len(r) == n for r in references
        ):
            hint = (
                f"this looks like sacrebleu's layout of {len(references)} reference stream(s) "
                f"of {n}; give one entry per prediction instead (transpose it)"
            )
        raise UserError(
            f"{n} predictions but {len(references)} references; references[i] must hold the "
            "reference string (or list of reference strings) of predictions[i]",
            hint=hint,
        )
    nested: list[list[str]] = []
    for i, entry in enumerate(references):
        refs = [entry] if isinstance(entry, str) else entry
        if not isinstance(refs, Sequence) or not refs:
            raise UserError(
                f"references[{i}] must be a string or a non-empty list of strings, got {refs!r:.60}"
            )
        for j, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise UserError(f"references[{i}][{j}] is {type(ref).__name__}, not a string")
        if nested and len(refs) != len(nested[0]):
            raise UserError(
                f"references[{i}] has {len(refs)} reference(s) but references[0] has "
                f"{len(nested[0])}; every prediction needs the same number of references"
            )
        nested.append(list(refs))
    return nested


@dataclass(frozen=True)
class Metric:
    """A registry entry: where the metric's function lives and what it computes."""

    name: str
    function: str  # "module:function", imported on first use
    description: str

    def load(self) -> Callable[..., MetricResult | dict[str, MetricResult]]:
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)

    def options(self) -> list[str]:
        """The keyword options the metric takes (``lang`` is passed by compute_metrics)."""
        params = inspect.signature(self.load()).parameters.values()
        return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "lang"]


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric(
            "bleu",
            "lmforge.metrics.bleu:corpus_bleu",
            "corpus BLEU (sacrebleu), tokenizer from the target language",
        ),
        Metric("chrf", "lmforge.metrics.bleu:corpus_chrf", "chrF / chrF++ (sacrebleu)"),
        Metric(
            "rouge",
            "lmforge.metrics.rouge:rouge",
            "ROUGE-1/2/L/Lsum F1 (rouge-score, CJK-aware tokenizer)",
        ),
        Metric(
            "exact_match",
            "lmforge.metrics.exact_match:exact_match",
            "percentage of predictions equal to a reference after normalisation",
        ),
        Metric(
            "smoothed_bleu4",
            "lmforge.metrics.bleu:smoothed_bleu4",
            "CodeXGLUE code-to-text sentence BLEU-4 with +1 smoothing, averaged",
        ),
    ]
}


def compute_metrics(
    names: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    lang: str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, MetricResult]:
    """Score ``predictions`` with each named metric; ``rouge`` yields rouge1/2/L/Lsum.

    ``lang`` is the language of the predictions (BLEU picks its tokenizer from it; detected
    from the references when None). ``options`` maps a metric name to its keyword options,
    e.g. ``{"bleu": {"tokenize": "char"}, "exact_match": {"lowercase": True}}``.
    """
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    options = dict(options or {})
    for name, given in options.items():
        if name not in names:
            raise UserError(
                f"options were given for metric {name!r}, which is not among the metrics "
                f"asked for ({', '.join(names) or 'none'})"
            )
        valid = METRICS[name].options()
        for key in given:
            if key not in valid:
                raise UserError(
                    f"metric {name} has no option {key!r}; valid options: "
                    f"{', '.join(valid) or 'none'}"
                )
    refs = references_per_prediction(predictions, references)
    results: dict[str, MetricResult] = {}
    for name in dict.fromkeys(names):  # each once, in the order asked
        function = METRICS[name].load()
        kwargs = dict(options.get(name, {}))
        if "lang" in inspect.signature(function).parameters:
            kwargs["lang"] = lang
        out = function(list(predictions), refs, **kwargs)
        results.update({out.name: out} if isinstance(out, MetricResult) else out)
    return results


__all__ = [
    "METRICS",
    "Metric",
    "MetricResult",
    "compute_metrics",
    "detect_language",
    "references_per_prediction",
]
