"""report.md of an evaluation run: a models x metrics table per dataset, every score's
signature, what could not be scored and why, and a few examples with each model's answer.

Tables are drawn by ``tabulate`` (GitHub pipe tables). Sources, references and predictions go
into fenced blocks, never table cells, so code and newlines survive as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from tabulate import tabulate

LOWER_IS_BETTER = {"perplexity"}


def _escape(text: str) -> str:
    """A table cell: pipes escaped, newlines flattened."""
    return text.replace("|", "\\|").replace("\n", " ")


def fenced(text: str, info: str = "text") -> str:
    """``text`` in a code fence longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _metric_names(results: Mapping[str, Mapping[str, Any]], dataset: str) -> list[str]:
    names: dict[str, None] = {}
    for per_dataset in results.values():
        names.update(dict.fromkeys(per_dataset.get(dataset, {}).get("metrics", {})))
    return list(names)


def _score_table(results: Mapping[str, Mapping[str, Any]], dataset: str) -> str:
    metrics = _metric_names(results, dataset)
    rows = []
    for model, per_dataset in results.items():
        entry = per_dataset.get(dataset)
        if entry is None:
            continue
        scores = [entry["metrics"].get(m, {}).get("score") for m in metrics]
        rows.append([_escape(model), *scores, entry["seconds"], entry["completion_tokens"]])
    headers = ["model", *(f"{m} ↓" if m in LOWER_IS_BETTER else m for m in metrics)]
    return tabulate(
        rows,
        headers=[*headers, "seconds", "tokens out"],
        tablefmt="github",
        floatfmt=".2f",
        missingval="n/a",
    )


def _signatures(results: Mapping[str, Mapping[str, Any]], dataset: str) -> list[str]:
    lines = []
    for metric in _metric_names(results, dataset):
        by_model = {
            model: per_dataset[dataset]["metrics"][metric]["signature"]
            for model, per_dataset in results.items()
            if metric in per_dataset.get(dataset, {}).get("metrics", {})
        }
        if len(set(by_model.values())) == 1:
            lines.append(f"- {metric}: `{next(iter(by_model.values()))}`")
        else:
            lines += [f"- {metric} ({model}): `{sig}`" for model, sig in by_model.items()]
    return lines


def _examples(rows: Sequence[Mapping[str, Any]], dataset: str, count: int) -> list[str]:
    by_id: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["dataset"] == dataset and row.get("prediction") is not None:
            if row["id"] in by_id or len(by_id) < count:
                by_id.setdefault(row["id"], []).append(row)
    lines = []
    for example_id, group in by_id.items():
        lines += [f"#### {example_id}", ""]
        # models with their own templates (from their cards) saw different renderings
        seen_by: dict[str, list[str]] = {}
        for row in group:
            seen_by.setdefault(row["source"], []).append(row["model"])
        for source, models in seen_by.items():
            whose = "" if len(seen_by) == 1 else f" ({', '.join(models)})"
            lines += [f"Source{whose}:", "", fenced(source), ""]
        lines += ["Reference:", "", fenced(group[0]["reference"]), ""]
        for row in group:
            lines += [f"**{row['model']}**:", "", fenced(row["prediction"]), ""]
    return lines[:-1]


def eval_report(
    metrics: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], examples: int = 3
) -> str:
    """The Markdown report of an evaluation run from its metrics.json and predictions rows."""
    results = metrics["results"]
    lines = [
        "# Evaluation report",
        "",
        f"Run `{metrics['run_dir']}`, seed {metrics['seed']}, {metrics['created']}. "
        "Scores are 0-100, higher is better, except where marked ↓.",
        "",
        "Models:",
        "",
    ]
    for model, info in metrics["models"].items():
        where = info.get("path") or f"{info['model']} at {info['base_url']} ({info['mode']})"
        lines.append(f"- **{model}**: {info['kind']}, {where}")
    for dataset, info in metrics["datasets"].items():
        split = "test split" if info["evaluate_on"] == "test" else "all rows"
        lines += [
            "",
            f"## {dataset}",
            "",
            f"`{info['path']}`, task {info['task']}, {split}, {info['examples']} examples.",
            "",
            _score_table(results, dataset),
            "",
            "Signatures:",
            "",
            *_signatures(results, dataset),
        ]
        omitted = [
            f"- {metric} for {model}: {reason}"
            for model, per_dataset in results.items()
            for metric, reason in per_dataset.get(dataset, {}).get("omitted", {}).items()
        ]
        if omitted:
            lines += ["", "Not scored:", "", *omitted]
        shown = _examples(rows, dataset, examples)
        if shown:
            lines += ["", "### Examples", "", *shown]
    if metrics.get("warnings"):
        lines += ["", "## Warnings", "", *(f"- {w}" for w in metrics["warnings"])]
    return "\n".join(lines).rstrip() + "\n"
