"""BLEU and chrF through sacrebleu, and the smoothed sentence BLEU-4 of code summarization.

``corpus_bleu`` and ``corpus_chrf`` use sacrebleu's metric classes and report sacrebleu's
own signature (``nrefs:1|case:mixed|eff:no|tok:zh|smooth:exp|version:2.6.0``). BLEU's
tokenizer follows the target language unless the caller names one: ``zh`` for Chinese,
``char`` for Japanese (MeCab, sacrebleu's ``ja-mecab``, is not installed offline), ``intl``
for Korean (written with spaces; ``ko-mecab`` is not installed either), ``13a`` otherwise.

``smoothed_bleu4`` is a different number: the mean of per-sentence BLEU-4 with +1 smoothing
that CodeXGLUE code-to-text papers report. It is not corpus BLEU; never compare the two.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from lmforge import __version__
from lmforge.errors import UserError
from lmforge.metrics import MetricResult, references_per_prediction
from lmforge.metrics.tokenize import detect_language

# Target language (primary subtag) -> sacrebleu tokenizer; anything else gets 13a.
BLEU_TOKENIZERS = {"zh": "zh", "ja": "char", "ko": "intl"}


def bleu_tokenizer_for(lang: str) -> str:
    """The sacrebleu tokenizer for a target language code such as ``zh``, ``zh-Hant``, ``en``."""
    primary = lang.replace("_", "-").split("-")[0].lower()
    return BLEU_TOKENIZERS.get(primary, BLEU.TOKENIZER_DEFAULT)


def _streams(refs: list[list[str]]) -> list[list[str]]:
    """Per-prediction references -> sacrebleu's streams (stream k = every prediction's k-th)."""
    return [list(stream) for stream in zip(*refs, strict=True)]


def corpus_bleu(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    lang: str | None = None,
    tokenize: str | None = None,
    lowercase: bool = False,
    smooth_method: str = "exp",
    smooth_value: float | None = None,
) -> MetricResult:
    """Corpus BLEU, 0-100. The tokenizer is ``tokenize`` if given, else the one for ``lang``,
    else the one for the language detected in the references."""
    refs = references_per_prediction(predictions, references)
    if lang is None:
        lang = detect_language(r for group in refs for r in group)
    if tokenize is None:
        tokenize = bleu_tokenizer_for(lang)
    if tokenize not in BLEU.TOKENIZERS:
        raise UserError(
            f"unknown BLEU tokenizer {tokenize!r}; choose one of {', '.join(BLEU.TOKENIZERS)}"
        )
    if smooth_method not in BLEU.SMOOTH_DEFAULTS:
        raise UserError(
            f"unknown BLEU smooth_method {smooth_method!r}; choose one of "
            f"{', '.join(BLEU.SMOOTH_DEFAULTS)}"
        )
    try:
        metric = BLEU(
            tokenize=tokenize,
            lowercase=lowercase,
            smooth_method=smooth_method,
            smooth_value=smooth_value,
        )
    except (ImportError, RuntimeError) as exc:  # ja-mecab, ko-mecab, spm need extra packages
        raise UserError(
            f"BLEU tokenizer {tokenize!r} needs packages that are not installed",
            hint="use tokenize='char' or 'intl' for Japanese and Korean",
        ) from exc
    score = metric.corpus_score(list(predictions), _streams(refs))
    return MetricResult(
        name="bleu",
        score=score.score,
        signature=metric.get_signature().format(),
        details={
            "lang": lang,
            "precisions": score.precisions,
            "counts": score.counts,
            "totals": score.totals,
            "bp": score.bp,
            "sys_len": score.sys_len,
            "ref_len": score.ref_len,
        },
    )


def corpus_chrf(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    char_order: int = CHRF.CHAR_ORDER,
    word_order: int = CHRF.WORD_ORDER,
    beta: int = CHRF.BETA,
    lowercase: bool = False,
) -> MetricResult:
    """Corpus chrF, 0-100 (``word_order=2`` is chrF++). Characters need no tokenizer, so it
    works for every script as it is."""
    refs = references_per_prediction(predictions, references)
    metric = CHRF(char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase)
    score = metric.corpus_score(list(predictions), _streams(refs))
    return MetricResult(name="chrf", score=score.score, signature=metric.get_signature().format())


# --- CodeXGLUE smoothed BLEU-4 ------------------------------------------------------------
# Written by hand because the reference implementation is a script in the CodeXGLUE
# repository (Code-Text/code-to-text/evaluator/bleu.py: computeMaps + bleuFromMaps), not a
# package. Its semantics, reproduced here:
#   * each text is stripped, lowercased and split into \w+ runs and single other characters
#     (splitPuncts), then NIST-normalised (mteval's rules: sacrebleu's 13a tokenizer, which
#     after splitPuncts only still splits "_");
#   * per sentence: clipped n-gram matches against the max count over references, n = 1..4;
#     precision p_n = (matches_n + s) / (guesses_n + s) with s = 1 for n > 1 and s = 0 for
#     n = 1 (Lin & Och 2004 "smoothing 1" style); both sides carry a float_info.min, so an
#     empty prediction does not fail;
#   * brevity penalty exp(min(0, 1 - (r + 1) / (c + 1))), r the shortest reference length;
#   * the score is the mean over sentences of exp(mean log p_n + log BP), times 100.
SMOOTHED_BLEU4_SIGNATURE = (
    "codexglue-smooth-bleu-4|nrefs:{nrefs}|case:lc|tok:splitpuncts+13a|smooth:add-1(n>1)"
    "|bp:(r+1)/(c+1),shortest|agg:mean-sentence|version:lmforge-{version}"
)
_SPLIT_PUNCTS = re.compile(r"[\w]+|[^\s\w]")
_MTEVAL = Tokenizer13a()
_TINY = sys.float_info.min
MAX_ORDER = 4


def codexglue_tokens(text: str) -> list[str]:
    """The tokens CodeXGLUE's evaluator scores: lowercased, punctuation split off."""
    split = " ".join(_SPLIT_PUNCTS.findall(text.strip().lower()))
    return _MTEVAL(split).split()


def _ngrams(tokens: list[str]) -> Counter[tuple[str, ...]]:
    return Counter(
        tuple(tokens[i : i + n])
        for n in range(1, MAX_ORDER + 1)
        for i in range(len(tokens) - n + 1)
    )


def sentence_smoothed_bleu4(prediction: str, references: Sequence[str]) -> float:
    """One sentence's smoothed BLEU-4, 0-1, as CodeXGLUE's ``bleu(refs, candidate)[0]``."""
    test = codexglue_tokens(prediction)
    refs = [codexglue_tokens(r) for r in references]
    max_ref_counts: Counter[tuple[str, ...]] = Counter()
    for ref in refs:
        max_ref_counts |= _ngrams(ref)  # | keeps the larger count of each n-gram
    correct = [0] * MAX_ORDER
    for ngram, count in _ngrams(test).items():
        correct[len(ngram) - 1] += min(count, max_ref_counts[ngram])
    log_bleu = 0.0
    for k in range(MAX_ORDER):
        guess = max(len(test) - k, 0)
        smooth = 1 if k > 0 else 0
        log_bleu += math.log(correct[k] + smooth + _TINY) - math.log(guess + smooth + _TINY)
    log_bleu /= MAX_ORDER
    shortest = min(len(r) for r in refs)
    brevity = min(0.0, 1 - (shortest + 1) / (len(test) + 1))
    return math.exp(log_bleu + brevity)


def smoothed_bleu4(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> MetricResult:
    """CodeXGLUE's smoothed BLEU-4, 0-100: the mean of per-sentence scores (not corpus BLEU)."""
    refs = references_per_prediction(predictions, references)
    per_example = [
        100.0 * sentence_smoothed_bleu4(p, r) for p, r in zip(predictions, refs, strict=True)
    ]
    return MetricResult(
        name="smoothed_bleu4",
        score=sum(per_example) / len(per_example),
        signature=SMOOTHED_BLEU4_SIGNATURE.format(nrefs=len(refs[0]), version=__version__),
        per_example=per_example,
    )
