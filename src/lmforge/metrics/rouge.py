"""ROUGE-1/2/L/Lsum through rouge-score, with a tokenizer that is right for every script.

rouge-score's default tokenizer keeps only ``[a-z0-9]``, so Chinese scores 0 even against
itself. :class:`CJKTokenizer` plugs lmforge's tokenizer (:mod:`lmforge.metrics.tokenize`)
into rouge-score's ``RougeScorer``; on ASCII text it gives the same tokens as the default.

ROUGE-Lsum treats each sentence separately; rouge-score finds sentences only at newlines
(its other option needs NLTK's punkt data, which is never downloaded), so texts are split
here at newlines and at sentence punctuation (。！？ always; . ! ? before whitespace), then
joined with newlines.

Reported: F1 on a 0-100 scale, the mean over examples (not rouge-score's bootstrap);
with several references, each example takes the reference with the highest F1, per ROUGE
type (rouge-score's ``score_multi``). Mean precision and recall are in ``details``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import metadata
from statistics import fmean

from nltk.stem import porter
from rouge_score import rouge_scorer, tokenizers

from lmforge.metrics import MetricResult, references_per_prediction
from lmforge.metrics.tokenize import tokenize, tokenizer_name

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# Zero-width split points: after 。！？, or after . ! ? when whitespace follows.
_SENTENCE_END = re.compile(r"(?<=[。！？])|(?<=[.!?])(?=\s)")


class CJKTokenizer(tokenizers.Tokenizer):
    """rouge-score tokenizer: CJK characters (or jieba words) and lowercased Unicode words.

    With ``use_stemmer``, words longer than 3 characters are Porter-stemmed as rouge-score
    does; the stemmer is English, so only ASCII words are stemmed.
    """

    def __init__(self, cjk: str = "char", use_stemmer: bool = False) -> None:
        self.cjk = cjk
        self.name = tokenizer_name(cjk)  # also rejects an unknown mode
        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens = tokenize(text, self.cjk)
        if self._stemmer is not None:
            stem = self._stemmer.stem
            tokens = [stem(t) if len(t) > 3 and t.isascii() else t for t in tokens]
        return tokens


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split at newlines and sentence-final punctuation."""
    pieces = (s.strip() for line in text.splitlines() for s in _SENTENCE_END.split(line))
    return [s for s in pieces if s]


def rouge(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    cjk: str = "char",
    use_stemmer: bool = False,
) -> dict[str, MetricResult]:
    """ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F1 (0-100), keyed by rouge-score's names."""
    refs = references_per_prediction(predictions, references)
    tokenizer = CJKTokenizer(cjk, use_stemmer)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=tokenizer)
    rows = [
        scorer.score_multi(
            ["\n".join(split_sentences(r)) for r in group], "\n".join(split_sentences(pred))
        )
        for pred, group in zip(predictions, refs, strict=True)
    ]
    base = (
        f"nrefs:{len(refs[0])}|tok:{tokenizer.name}|case:lc"
        f"|stem:{'porter' if use_stemmer else 'no'}"
    )
    tail = f"|multiref:max-f|agg:mean|version:rouge-score-{metadata.version('rouge-score')}"
    results = {}
    for rouge_type in ROUGE_TYPES:
        scores = [row[rouge_type] for row in rows]
        lsum = "|lsum:newline+punct" if rouge_type == "rougeLsum" else ""
        results[rouge_type] = MetricResult(
            name=rouge_type,
            score=fmean(100.0 * s.fmeasure for s in scores),
            signature=base + lsum + tail,
            details={
                "precision": fmean(100.0 * s.precision for s in scores),
                "recall": fmean(100.0 * s.recall for s in scores),
            },
            per_example=[100.0 * s.fmeasure for s in scores],
        )
    return results
