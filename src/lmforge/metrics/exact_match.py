"""Exact match: the percentage of predictions equal to one of their references.

Both sides are normalised the same way first. The steps, in SQuAD's order (lowercase,
punctuation, articles, whitespace), are each a switch: by default only surrounding
whitespace is stripped and inner runs collapsed, which keeps code and case-sensitive answers
exact; ``lowercase=True, remove_punctuation=True, remove_articles=True`` is SQuAD's
``normalize_answer``. Punctuation means every Unicode punctuation character (so CJK
marks such as ，。「」 too) plus ASCII symbols such as ``$`` and ``+`` that SQuAD removes.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import regex

from lmforge import __version__
from lmforge.metrics import MetricResult, references_per_prediction

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
# Every Unicode punctuation character, plus the ASCII symbols in string.punctuation.
_PUNCTUATION = regex.compile(rf"[\p{{P}}{regex.escape(string.punctuation)}]")
# Signature names of the normalisation steps.
_STEP_NAMES = {
    "strip": "strip",
    "lowercase": "lc",
    "remove_punctuation": "punct",
    "remove_articles": "articles",
    "collapse_whitespace": "ws",
}


def normalize_answer(
    text: str,
    *,
    strip: bool = True,
    lowercase: bool = False,
    remove_punctuation: bool = False,
    remove_articles: bool = False,
    collapse_whitespace: bool = True,
) -> str:
    """``text`` after the chosen normalisation steps (articles: a/an/the, any case)."""
    if lowercase:
        text = text.lower()
    if remove_punctuation:
        text = _PUNCTUATION.sub("", text)
    if remove_articles:
        text = _ARTICLES.sub(" ", text)
    if collapse_whitespace:
        text = " ".join(text.split())
    if strip:
        text = text.strip()
    return text


def exact_match(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    strip: bool = True,
    lowercase: bool = False,
    remove_punctuation: bool = False,
    remove_articles: bool = False,
    collapse_whitespace: bool = True,
) -> MetricResult:
    """Exact match, 0-100; ``per_example`` is 100 or 0 per prediction (100 when it matches
    any of its references)."""
    refs = references_per_prediction(predictions, references)
    steps = {
        "strip": strip,
        "lowercase": lowercase,
        "remove_punctuation": remove_punctuation,
        "remove_articles": remove_articles,
        "collapse_whitespace": collapse_whitespace,
    }
    per_example = []
    for prediction, group in zip(predictions, refs, strict=True):
        norm = normalize_answer(prediction, **steps)
        hit = any(normalize_answer(r, **steps) == norm for r in group)
        per_example.append(100.0 if hit else 0.0)
    norm_name = "+".join(_STEP_NAMES[k] for k, on in steps.items() if on) or "none"
    return MetricResult(
        name="exact_match",
        score=sum(per_example) / len(per_example),
        signature=f"nrefs:{len(refs[0])}|norm:{norm_name}|multiref:any|version:lmforge-{__version__}",
        per_example=per_example,
    )
