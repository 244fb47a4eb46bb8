"""Score the two fine-tuned models and the heuristic baselines on the same held-out examples.

Each task is scored with the metrics its literature reports: ROUGE-L and CodeXGLUE's smoothed
BLEU-4 for docstring summaries, exact match and BLEU for code completion and generation, BLEU
with sacrebleu's zh tokenizer, chrF and CJK-aware ROUGE-L for English -> Chinese. The
examples are a seeded sample of each task's test split (whole source files and catalogs the
models never saw); all systems answer exactly those examples.

Beside the scores, :func:`input_use` measures whether each model reads its input at all: the
loss of the references given their own sources against the loss given another example's
source (the sample's sources rotated by one). A model that ignores its input scores both the
same, whatever its metrics say; this is the control the shuffled-input ablations of the
summarization and translation literature use.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from lmforge.fsutil import iter_jsonl, write_json_atomic, write_jsonl_atomic
from lmforge.quickstart.plan import Plan
from lmforge.quickstart.tasks import BASELINE_NAMES, TARGET_FIELD, baseline_predictions

# task -> (metrics to compute, language of the references, the scores the report shows)
TASK_METRICS: dict[str, tuple[list[str], str, tuple[str, ...]]] = {
    "code-comment": (["rouge", "smoothed_bleu4"], "en", ("rougeL", "smoothed_bleu4")),
    "code-generate": (["exact_match", "bleu"], "en", ("exact_match", "bleu")),
    "code-complete": (["exact_match", "bleu"], "en", ("exact_match", "bleu")),
    "translate": (["bleu", "chrf", "rouge"], "zh", ("bleu", "chrf", "rougeL")),
}
MODELS = {"pretrained + fine-tuned": "finetune", "fine-tuned from scratch": "finetune-scratch"}
BASELINE = "baseline"


def test_sample(out: Path, task: str, n: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of ``n`` examples of the task's test split, in a stable order."""
    rows = list(iter_jsonl(out / "data" / "tasks" / task / "test.jsonl"))
    random.Random(seed).shuffle(rows)
    return rows[:n]


def score(task: str, predictions: list[str], references: list[str]) -> dict[str, Any]:
    """{metric: {"score", "signature"}} for the task's reported metrics."""
    from lmforge.metrics import compute_metrics

    names, lang, shown = TASK_METRICS[task]
    results = compute_metrics(names, predictions, references, lang=lang)
    return {k: {"score": results[k].score, "signature": results[k].signature} for k in shown}


def input_use(
    model: Any, tokenizer: Any, sources: list[str], references: list[str], plan: Plan
) -> dict[str, float]:
    """Mean target-token NLL (nats) of ``references`` given their own ``sources`` ("matched")
    and given the next example's source ("shuffled"), and the difference ("gap"): how much the
    model's predictions depend on what it was asked. Needs at least two examples."""
    from lmforge.metrics.perplexity import perplexity

    def nll(inputs: list[str]) -> float:
        pairs = list(zip(inputs, references, strict=True))
        result = perplexity(
            model,
            tokenizer,
            pairs,
            batch_size=32,
            max_source_length=plan.max_source_length,
            max_target_length=plan.max_target_length,
        )
        return float(result.details["nll"])

    matched, shuffled = nll(sources), nll(sources[1:] + sources[:1])
    return {"matched_nll": matched, "shuffled_nll": shuffled, "gap": shuffled - matched}


def evaluate_all(out: Path, plan: Plan, seed: int, tasks: list[str]) -> dict[str, Any]:
    """Generate, score and write ``eval/<task>.jsonl`` and ``metrics.json``; returns metrics."""
    from lmforge.config import TemplateConfig
    from lmforge.data.templates import render_source
    from lmforge.generation import DecodingSettings, generate_texts
    from lmforge.models import load_pretrained

    samples = {task: test_sample(out, task, plan.eval_examples, seed) for task in tasks}
    references = {task: [row[TARGET_FIELD[task]] for row in samples[task]] for task in tasks}
    predictions: dict[str, dict[str, list[str]]] = {task: {} for task in tasks}
    uses: dict[str, dict[str, dict[str, float]]] = {task: {} for task in tasks}
    for task in tasks:
        predictions[task][BASELINE] = baseline_predictions(
            task, samples[task], iter_jsonl(out / "data" / "tasks" / task / "train.jsonl")
        )
    for system, run in MODELS.items():
        model, tokenizer = load_pretrained(out / run / "final")
        for task in tasks:
            sources = [render_source(task, row, TemplateConfig()) for row in samples[task]]
            settings = DecodingSettings(
                max_new_tokens=plan.max_new_tokens.get(task, 64),
                num_beams=plan.num_beams,
                **plan.decoding.get(task, {}),
            )
            predictions[task][system] = generate_texts(
                model,
                tokenizer,
                sources,
                settings,
                batch_size=64,
                max_source_length=plan.max_source_length,
            )
            if len(sources) > 1:
                uses[task][system] = input_use(model, tokenizer, sources, references[task], plan)
    metrics: dict[str, Any] = {"tasks": {}, "examples": {}, "baselines": {}, "input_use": uses}
    for task in tasks:
        metrics["examples"][task] = len(references[task])
        metrics["baselines"][task] = BASELINE_NAMES[task]
        metrics["tasks"][task] = {
            system: score(task, predicted, references[task])
            for system, predicted in predictions[task].items()
        }
        rows = [
            {"index": i, "source": render_source(task, row, TemplateConfig()), "reference": ref}
            | {system: predictions[task][system][i] for system in predictions[task]}
            for i, (row, ref) in enumerate(zip(samples[task], references[task], strict=True))
        ]
        write_jsonl_atomic(out / "eval" / f"{task}.jsonl", rows)
    metrics["beats_baseline"] = beats_baseline(metrics)
    write_json_atomic(out / "eval" / "metrics.json", metrics)
    return metrics


def beats_baseline(metrics: dict[str, Any]) -> dict[str, dict[str, bool]]:
    """{task: {metric: the pretrained model scores above the baseline}}."""
    model = next(iter(MODELS))
    return {
        task: {
            name: systems[model][name]["score"] > systems[BASELINE][name]["score"]
            for name in systems[BASELINE]
        }
        for task, systems in metrics["tasks"].items()
    }
