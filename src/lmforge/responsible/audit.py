"""``lmforge audit bias``: what a model does with prompts that differ only in a demographic term.

Two measurements per model, on the templates of :mod:`lmforge.responsible.bias_templates`:

* **likelihood** (CrowS-Pairs style; Nangia et al. 2020): the log-likelihood the model gives
  each side of a minimal pair, as the mean log-probability of its tokens (minus the log of
  the perplexity lmforge's perplexity metric gives it: a causal model scores the sentence and
  its eos, a seq2seq model the sentence as the target of an empty source, a remote model the
  endpoint's prompt log-probabilities). Per token, so a term that splits into more tokens
  does not lose for its length alone. A masked LM (BERT) has no left-to-right likelihood: it
  gets CrowS-Pairs' own score, the pseudo-log-likelihood of the tokens both sides share, each
  masked in turn (:func:`masked_lm_logliks`); it does not generate, so its generation part
  is reported as not measured. Per category: how many pairs the stereotyped side is
  more likely in, that rate with a Wilson interval (an unbiased model sits near 50%), and the
  mean log-likelihood difference (stereotyped minus anti-stereotyped, nats per token) with a
  seeded percentile bootstrap interval.
* **generation**: ``samples`` sampled continuations (seeded) of both prompts of each pair;
  per category, group and lexicon, the share of continuations that use at least one word of
  the lexicon (whole words in English, substrings in Chinese), with Wilson intervals, and
  the difference between the two groups with Newcombe's interval.

Remote models generate; their likelihoods need ``/v1/completions`` with echo and logprobs, and
where the endpoint cannot, the report says so instead of a number.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from lmforge import __version__
from lmforge.backends import Backend, LikelihoodUnavailable
from lmforge.errors import UserError
from lmforge.evaluation import ModelSpec, make_backend
from lmforge.fsutil import refuse_to_overwrite
from lmforge.generation import DecodingSettings
from lmforge.metrics.tokenize import tokenize
from lmforge.models import resolve_checkpoint
from lmforge.responsible.bias_templates import (
    LANGUAGES,
    MinimalPair,
    PromptPair,
    Templates,
    load_lexicons,
    load_templates,
)
from lmforge.responsible.intervals import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    bootstrap_mean,
    newcombe,
    wilson,
)

ALL = "all"  # the summary over every category
Lexicons = dict[str, dict[str, frozenset[str]]]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class AuditSettings:
    """How generations are sampled, and the seed of sampling and of the bootstrap."""

    seed: int = 0
    samples: int = 10
    max_new_tokens: int = 20
    temperature: float = 1.0
    top_p: float = 1.0

    def decoding(self) -> DecodingSettings:
        settings = DecodingSettings(
            max_new_tokens=self.max_new_tokens,
            do_sample=True,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=["\n"],  # a continuation ends with its line
            seed=self.seed,
        )
        settings.check()
        if self.samples < 1:
            raise UserError(f"--samples must be at least 1, got {self.samples}")
        return settings


@dataclass
class AuditResult:
    out_dir: Path
    results: dict[str, Any]


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No "tokenizing" progress bar from scoring (seq2seq scoring maps a small dataset)."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


# --------------------------------------------------------------------------- likelihood


def mean_logliks(backend: Backend, texts: Sequence[str]) -> list[float]:
    """Mean log-probability per token (nats) the model gives each text: minus the log of its
    perplexity, scored as :meth:`Backend.perplexity` scores texts (one batched call)."""
    items: Any = [("", t) for t in texts] if getattr(backend, "kind", None) == "seq2seq" else texts
    with _quiet_datasets():
        scored = backend.perplexity(list(items))
    return [-math.log(ppl) for ppl in scored.per_example or []]


def _pair_token_ids(tokenizer: Any, text: str) -> list[int]:
    """The text's tokens between the tokenizer's [CLS] and [SEP] (lmforge's tokenizers add no
    special tokens; a Hub BERT tokenizer's own are dropped and put back the same way)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]


def _shared_positions(a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
    """Positions of the tokens the two sequences share, aligned by difflib as CrowS-Pairs does
    (Nangia et al. 2020, metric.py ``get_span``), without the first and last ([CLS], [SEP])."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    left: list[int] = []
    right: list[int] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            left += range(i1, i2)
            right += range(j1, j2)
    inner = [(i, j) for i, j in zip(left, right, strict=True) if 0 < i < len(a) - 1]
    return [i for i, _ in inner], [j for _, j in inner]


def masked_lm_logliks(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 64
) -> list[tuple[float, float]]:
    """CrowS-Pairs' score for a masked LM (Nangia et al. 2020), per token: for each side, the
    mean log-probability of each token the two sentences share, predicted with that one token
    masked. Scoring only the shared tokens keeps the demographic term, which one side may make
    rarer, out of the score; both sides score the same number of tokens. A pair with no shared
    token (a template that is only ``{term}``) scores 0 on both sides: a tie.

    Written here because no maintained library scores MLM pseudo-likelihoods of aligned minimal
    pairs offline; the CrowS-Pairs reference code is a script, not a package."""
    import torch

    from lmforge.generation import pad_prompts
    from lmforge.training.loop import lm_logits

    if tokenizer.mask_token_id is None or tokenizer.cls_token_id is None:
        raise UserError("the masked LM's tokenizer has no [MASK] or [CLS] token to score with")
    # one row per (sentence, shared position): the sentence with that token masked
    rows: list[tuple[int, list[int], int]] = []  # (score slot, ids, masked position)
    counts = [0] * (2 * len(pairs))
    for k, (first, second) in enumerate(pairs):
        a, b = _pair_token_ids(tokenizer, first), _pair_token_ids(tokenizer, second)
        for slot, ids, positions in zip(
            (2 * k, 2 * k + 1), (a, b), _shared_positions(a, b), strict=True
        ):
            counts[slot] = len(positions)
            rows += [(slot, ids, position) for position in positions]
    totals = [0.0] * (2 * len(pairs))
    device = next(model.parameters()).device
    model.eval()  # a masked LM loaded for scoring; nothing trains it afterwards
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        masked = [
            [tokenizer.mask_token_id if i == position else t for i, t in enumerate(ids)]
            for _, ids, position in chunk
        ]
        input_ids, attention = pad_prompts(masked, tokenizer.pad_token_id, False, device)
        with torch.no_grad():
            logits = lm_logits(model(input_ids=input_ids, attention_mask=attention))
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for r, (slot, ids, position) in enumerate(chunk):
            totals[slot] += logprobs[r, position, ids[position]].item()
    means = [t / n if n else 0.0 for t, n in zip(totals, counts, strict=True)]
    return [(means[2 * k], means[2 * k + 1]) for k in range(len(pairs))]


def score_pairs(backend: Backend, pairs: Sequence[MinimalPair]) -> list[dict[str, Any]]:
    """Both sides' mean token log-likelihoods, per pair (raises LikelihoodUnavailable)."""
    if getattr(backend, "kind", None) == "encoder":
        local: Any = backend
        sides = masked_lm_logliks(
            local.model, local.tokenizer, [(p.stereotyped, p.anti_stereotyped) for p in pairs]
        )
        scores = [score for pair in sides for score in pair]
    else:
        scores = mean_logliks(
            backend, [text for p in pairs for text in (p.stereotyped, p.anti_stereotyped)]
        )
    return [
        {
            "id": pair.id,
            "category": pair.category,
            "lang": pair.lang,
            "stereotyped": pair.stereotyped,
            "anti_stereotyped": pair.anti_stereotyped,
            "ll_stereotyped": scores[2 * i],
            "ll_anti_stereotyped": scores[2 * i + 1],
        }
        for i, pair in enumerate(pairs)
    ]


def likelihood_summary(rows: Sequence[dict[str, Any]], seed: int) -> dict[str, dict[str, Any]]:
    """Per category (and ``all``): pairs, stereotyped side preferred, ties, the rate with its
    Wilson interval, and the mean log-likelihood difference with its bootstrap interval."""
    categories = list(dict.fromkeys(r["category"] for r in rows))
    groups = {c: [r for r in rows if r["category"] == c] for c in categories}
    if len(categories) > 1:
        groups[ALL] = list(rows)
    summary = {}
    for category, members in groups.items():
        differences = [r["ll_stereotyped"] - r["ll_anti_stereotyped"] for r in members]
        preferred = sum(d > 0 for d in differences)
        n = len(differences)
        summary[category] = {
            "pairs": n,
            "stereotyped_preferred": preferred,
            "ties": sum(d == 0 for d in differences),
            "rate": preferred / n,
            "ci": list(wilson(preferred, n)),
            "mean_difference": sum(differences) / n,
            "mean_difference_ci": _listed(bootstrap_mean(differences, seed)),
        }
    return summary


def _listed(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else list(interval)


# --------------------------------------------------------------------------- generation


def uses_lexicon(text: str, words: frozenset[str], lang: str) -> bool:
    """Whether ``text`` has a word of the lexicon: whole words in English (case-insensitive,
    lmforge's metric tokenizer), substrings in Chinese (no spaces to split on)."""
    if lang == "zh":
        return any(word in text for word in words)
    return not words.isdisjoint(tokenize(text))


def generate_pairs(
    backend: Backend, prompts: Sequence[PromptPair], settings: AuditSettings
) -> list[dict[str, Any]]:
    """``settings.samples`` continuations of each side of each prompt pair."""
    sources = [prompt for pair in prompts for prompt in pair.prompts]
    texts = backend.generate(sources, settings.decoding(), settings.samples, raw=True)
    rows = []
    for i, pair in enumerate(prompts):
        for side in (0, 1):
            rows.append(
                {
                    "id": pair.id,
                    "category": pair.category,
                    "lang": pair.lang,
                    "group": pair.groups[side],
                    "prompt": pair.prompts[side],
                    "texts": texts[2 * i + side],
                }
            )
    return rows


def generation_summary(
    rows: Sequence[dict[str, Any]], prompts: Sequence[PromptPair], lexicons: Lexicons
) -> dict[str, dict[str, Any]]:
    """Per category: per group and lexicon, generations using the lexicon (count, rate,
    Wilson interval); per pair of groups and lexicon, the difference of the rates."""
    summary: dict[str, dict[str, Any]] = {}
    for category in dict.fromkeys(r["category"] for r in rows):
        members = [r for r in rows if r["category"] == category]
        names = sorted({name for r in members for name in lexicons.get(r["lang"], {})})
        counts: dict[str, dict[str, tuple[int, int]]] = {}
        for group in dict.fromkeys(r["group"] for r in members):
            counts[group] = {}
            for name in names:
                used = n = 0
                for row in members:
                    words = lexicons.get(row["lang"], {}).get(name)
                    if row["group"] != group or words is None:
                        continue
                    n += len(row["texts"])
                    used += sum(uses_lexicon(t, words, row["lang"]) for t in row["texts"])
                counts[group][name] = (used, n)
        pairs = dict.fromkeys(p.groups for p in prompts if p.category == category)
        summary[category] = {
            "groups": {
                group: {
                    name: {
                        "generations": n,
                        "with_word": used,
                        "rate": used / n if n else None,
                        "ci": list(wilson(used, n)),
                    }
                    for name, (used, n) in by_name.items()
                }
                for group, by_name in counts.items()
            },
            "differences": [
                _difference(a, b, name, counts[a][name], counts[b][name])
                for a, b in pairs
                for name in names
            ],
        }
    return summary


def _difference(
    a: str, b: str, name: str, counts_a: tuple[int, int], counts_b: tuple[int, int]
) -> dict[str, Any]:
    (used_a, n_a), (used_b, n_b) = counts_a, counts_b
    measured = n_a > 0 and n_b > 0
    return {
        "groups": [a, b],
        "lexicon": name,
        "difference": used_a / n_a - used_b / n_b if measured else None,
        "ci": list(newcombe(used_a, n_a, used_b, n_b)) if measured else None,
    }


# --------------------------------------------------------------------------- models


def scoring_method(backend: Backend) -> str:
    """How the likelihood part scored this model's sentences, in words for the report."""
    kind = getattr(backend, "kind", "remote")
    if kind == "encoder":
        return "pseudo-log-likelihood of the shared tokens, each masked in turn (CrowS-Pairs)"
    if kind == "seq2seq":
        return "mean token log-likelihood as the target of an empty source"
    if kind == "causal":
        return "mean token log-likelihood of the sentence and its end-of-sequence token"
    return "mean token log-likelihood from the endpoint's prompt log-probabilities"


def audit_backend(
    backend: Backend,
    templates: Templates,
    lexicons: Lexicons,
    settings: AuditSettings,
    progress: Progress = lambda message: None,
) -> dict[str, Any]:
    """Both measurements for one model; what cannot be measured carries its reason."""
    result: dict[str, Any] = {"name": backend.name, "kind": getattr(backend, "kind", "remote")}
    if not templates.pairs:
        result["likelihood"] = {"measured": False, "reason": "no minimal pairs in the templates"}
    else:
        progress(f"{backend.name}: scoring {len(templates.pairs)} minimal pairs")
        try:
            rows = score_pairs(backend, templates.pairs)
        except LikelihoodUnavailable as exc:
            result["likelihood"] = {"measured": False, "reason": exc.message}
        else:
            result["likelihood"] = {
                "measured": True,
                "score": scoring_method(backend),
                "categories": likelihood_summary(rows, settings.seed),
                "pairs": rows,
            }
    if not templates.prompts:
        result["generation"] = {"measured": False, "reason": "no generation prompts"}
    elif result["kind"] == "encoder":
        result["generation"] = {
            "measured": False,
            "reason": "an encoder (masked LM) does not generate continuations",
        }
    else:
        progress(
            f"{backend.name}: sampling {settings.samples} continuations of "
            f"{2 * len(templates.prompts)} prompts"
        )
        rows = generate_pairs(backend, templates.prompts, settings)
        result["generation"] = {
            "measured": True,
            "categories": generation_summary(rows, templates.prompts, lexicons),
            "prompts": rows,
        }
    return result


def run_audit(
    backends: Iterable[Backend],
    templates: Templates,
    lexicons: Lexicons,
    settings: AuditSettings,
    *,
    sources: dict[str, Any] | None = None,
    progress: Progress = lambda message: None,
) -> dict[str, Any]:
    """The audit of every backend, as the JSON that results.json holds."""
    return {
        "lmforge_version": __version__,
        "settings": {
            "seed": settings.seed,
            "samples": settings.samples,
            "max_new_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
        },
        "intervals": {
            "confidence": CONFIDENCE,
            "rate": "Wilson score interval",
            "difference": "Newcombe hybrid score interval (method 10) from Wilson intervals",
            "mean_difference": (
                f"percentile bootstrap, {BOOTSTRAP_RESAMPLES} resamples, seed {settings.seed}"
            ),
        },
        "templates": {
            **(sources or {}),
            "pairs": len(templates.pairs),
            "prompt_pairs": len(templates.prompts),
        },
        "models": [audit_backend(b, templates, lexicons, settings, progress) for b in backends],
    }


def _loaded(models: Sequence[ModelSpec], progress: Progress) -> Iterator[Backend]:
    """Each model's backend in turn, closed before the next is loaded."""
    for spec in models:
        progress(f"loading {spec.label}")
        backend = make_backend(spec, allow_encoder=True)  # a masked LM scores pairs
        try:
            yield backend
        finally:
            backend.close()


def audit_bias(
    models: Sequence[ModelSpec],
    out: str | Path,
    *,
    templates_file: str | Path | None = None,
    lexicons_file: str | Path | None = None,
    builtin: bool = True,
    languages: Sequence[str] = LANGUAGES,
    settings: AuditSettings | None = None,
    overwrite: bool = False,
    progress: Progress = lambda message: None,
) -> AuditResult:
    """Audit ``models`` and write report.md, results.json and bias.png into ``out``.

    Inputs are checked before any model is loaded; the output directory appears whole or not
    at all, and an existing one is replaced only with ``overwrite``."""
    from lmforge.responsible.audit_report import write_report

    if not models:
        raise UserError("give at least one model to audit")
    settings = settings or AuditSettings()
    settings.decoding()
    out = Path(out)
    refuse_to_overwrite(out, overwrite)
    for spec in models:
        if spec.path is not None:
            resolve_checkpoint(spec.path)  # a missing model fails now, not after the others
    templates = load_templates(templates_file, builtin=builtin, languages=languages)
    lexicons = load_lexicons(lexicons_file)  # a user's words add to the project's
    missing = sorted({p.lang for p in templates.prompts} - set(lexicons))
    if missing:
        raise UserError(
            f"the generation prompts in {missing[0]} have no lexicon to count words of; "
            "give --lexicons with that language"
        )
    sources = {
        "builtin": builtin,
        "user_templates": None if templates_file is None else str(templates_file),
        "user_lexicons": None if lexicons_file is None else str(lexicons_file),
        "languages": sorted(set(languages)),
    }
    results = run_audit(
        _loaded(models, progress), templates, lexicons, settings, sources=sources, progress=progress
    )
    write_report(results, out, overwrite=overwrite)
    return AuditResult(out, results)
