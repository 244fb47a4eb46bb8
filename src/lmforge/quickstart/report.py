"""The quickstart's report: what ran, what it scored against the baselines, what it cost.

``report.md`` and ``report.html`` go to the quickstart directory, plots to ``plots/``. Every
number in the report's tables is read from ``eval/metrics.json`` and the stages'
``compute.json``, formatted with two decimals, so the report and the files always agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.fsutil import write_text_atomic
from lmforge.quickstart.evaluate import BASELINE, MODELS, TASK_METRICS
from lmforge.reports.markdown import fenced

if TYPE_CHECKING:
    from lmforge.quickstart import QuickstartResult

TRAIN_STAGES = {
    "pretrain": "pretraining (span corruption)",
    "finetune": "fine-tuning (pretrained)",
    "finetune-scratch": "fine-tuning (from scratch)",
}
SAMPLES_PER_TASK = 3
SCRATCH = "fine-tuned from scratch"


def summary_rows(metrics: dict[str, Any]) -> list[tuple[str, ...]]:
    """(task, metric, pretrained, scratch, baseline, verdict) rows of the summary table."""
    model = next(iter(MODELS))
    rows = []
    for task, systems in metrics.get("tasks", {}).items():
        for name in systems[BASELINE]:
            ours, scratch, base = (systems[s][name]["score"] for s in (model, SCRATCH, BASELINE))
            verdict = "beats baseline" if ours > base else "does NOT beat baseline"
            rows.append((task, name, f"{ours:.2f}", f"{scratch:.2f}", f"{base:.2f}", verdict))
    return rows


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|") or "(empty)"


def _samples(out: Path, task: str) -> list[str]:
    path = out / "eval" / f"{task}.jsonl"
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(SAMPLES_PER_TASK), handle, strict=False)]
    lines = []
    for row in rows:
        lines += [f"Input {row['index']}:", "", fenced(row["source"]), ""]
        lines += ["| | output |", "|---|---|", f"| reference | {_cell(row['reference'])} |"]
        for system in (*MODELS, BASELINE):
            lines.append(f"| {system} | {_cell(row[system])} |")
        lines.append("")
    return lines


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def compute_rows(out: Path) -> list[tuple[str, ...]]:
    """(stage, steps, tokens, wall time, FLOPs, MFU, energy, CO2) per training stage."""
    rows = []
    for run, label in TRAIN_STAGES.items():
        compute = _read_json(out / run / "compute.json")
        if not compute:
            continue
        energy = compute.get("energy") or {}
        rows.append(
            (
                label,
                f"{compute['steps']}",
                f"{compute['tokens']:,}",
                f"{compute['wall_seconds']:.1f} s",
                f"{compute['train_flops']:.3g}",
                f"{100 * compute['mfu']:.1f} %" if compute.get("mfu") is not None else "n/a",
                f"{energy['energy_kwh']:.2g} kWh" if "energy_kwh" in energy else "n/a",
                f"{energy['co2_g']:.2g} g" if "co2_g" in energy else "n/a",
            )
        )
    return rows


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def write_plots(out: Path, metrics: dict[str, Any]) -> dict[str, Path]:
    """Loss curves of both stages and one bar chart per task; returns name -> PNG path."""
    from lmforge.reports.plots import plot_loss_curves, plot_metric_bars
    from lmforge.training.logging import read_metrics

    plots = out / "plots"
    made: dict[str, Path] = {}
    if (out / "pretrain" / "metrics.jsonl").is_file():
        made["pretrain"] = plot_loss_curves(
            {"pretrain": read_metrics(out / "pretrain")},
            plots / "loss-pretrain.png",
            title="Pretraining: span corruption loss",
        )
    curves = {
        label: read_metrics(out / run)
        for label, run in MODELS.items()
        if (out / run / "metrics.jsonl").is_file()
    }
    if curves:
        made["finetune"] = plot_loss_curves(
            curves, plots / "loss-finetune.png", title="Fine-tuning on the task mixture"
        )
    for task, systems in metrics.get("tasks", {}).items():
        table = {s: {m: v["score"] for m, v in scores.items()} for s, scores in systems.items()}
        made[task] = plot_metric_bars(table, plots / f"metrics-{task}.png", title=task)
    return made


# Below this gap (nats per target token) the report says a model does not read its input.
IGNORES_INPUT_GAP = 0.05


def reads_input(use: dict[str, float]) -> bool:
    """Whether an ``input_use`` entry of metrics.json shows a model reading its input."""
    return use["gap"] >= IGNORES_INPUT_GAP


def input_use_rows(metrics: dict[str, Any]) -> list[tuple[str, ...]]:
    """(task, system, NLL given its source, NLL given another source, gap, verdict) rows."""
    rows = []
    for task, systems in metrics.get("input_use", {}).items():
        for system, use in systems.items():
            verdict = "reads its input" if reads_input(use) else "ignores its input"
            rows.append(
                (
                    task,
                    system,
                    f"{use['matched_nll']:.3f}",
                    f"{use['shuffled_nll']:.3f}",
                    f"{use['gap']:+.3f}",
                    verdict,
                )
            )
    return rows


def _input_use_section(metrics: dict[str, Any]) -> list[str]:
    rows = input_use_rows(metrics)
    if not rows:
        return []
    return [
        "### Does the model read its input?",
        "",
        "Loss (nats per target token) of the same held-out references given their own source "
        "and given another example's source. A model that ignores its input scores both the "
        "same and answers every question alike, whatever its metrics; a gap under "
        f"{IGNORES_INPUT_GAP} is reported as ignoring it.",
        "",
        *_table(
            ("task", "model", "own source", "another source", "gap", ""),
            rows,
        ),
        "",
    ]


def render(out: Path, result: QuickstartResult, seconds: float) -> str:
    """report.md's text."""
    metrics, plan = result.metrics, result.plan
    plots = write_plots(out, metrics)
    summary = summary_rows(metrics)
    lost = sorted({f"{r[0]} ({r[1]})" for r in summary if r[5] != "beats baseline"})
    lines = [
        "# lmforge quickstart report",
        "",
        f"Preset `{plan.preset}`, budget {plan.minutes:g} minutes, seed "
        f"{json.loads((out / 'plan.json').read_text())['seed']}; the whole job took "
        f"{seconds / 60:.1f} minutes this time (stages kept from an earlier run are not "
        "counted).",
        "",
        "## Held-out scores",
        "",
        f"{plan.eval_examples} examples per task at most, from source files and catalogs that "
        "no stage trained on; all systems answer the same examples. Scores are 0-100, "
        "higher is better.",
        "",
        *_table(
            (
                "task",
                "metric",
                "pretrained + fine-tuned",
                "fine-tuned from scratch",
                "baseline",
                "",
            ),
            summary,
        ),
        "",
    ]
    if lost:
        lines += [
            f"**Not beaten: {', '.join(lost)}.** The pretrained model scores at or below the "
            "heuristic baseline there; see docs/quickstart.md for what was tried.",
            "",
        ]
    else:
        lines += ["The pretrained, fine-tuned model beats every heuristic baseline.", ""]
    lines += _input_use_section(metrics)
    lines += ["Baselines:", ""]
    lines += [f"- {task}: {name}" for task, name in metrics.get("baselines", {}).items()]
    lines += ["", "Metric signatures (how each score was computed):", ""]
    for task, systems in metrics.get("tasks", {}).items():
        for name, value in systems[BASELINE].items():
            lines.append(f"- {task} {name}: `{value['signature']}`")
    lines += [""]
    for task in metrics.get("tasks", {}):
        if task in plots:
            lines += [f"![{task}](plots/{plots[task].name})", ""]
    lines += [
        "## Data",
        "",
        *_table(
            ("task", "train", "validation", "test", "source"),
            [
                (
                    t,
                    str(c["train"]),
                    str(c["validation"]),
                    str(c["test"]),
                    "translation catalogs" if t == "translate" else "Python functions",
                )
                for t, c in result.tasks.items()
            ],
        ),
        "",
    ]
    lines += [
        f"Harvested {result.python_rows:,} documented Python functions and "
        f"{result.translation_rows:,} English -> Chinese catalog entries. Splits are by source "
        "file and by catalog (a hash of the seed and the group), so no function or catalog "
        "of the test split was seen in pretraining or fine-tuning.",
        "",
        "## Training",
        "",
        f"T5 ({plan.model_preset} preset with {plan.model_overrides or 'no changes'}), "
        f"vocabulary {plan.vocab_size}. Pretraining: {plan.pretrain_steps} steps of "
        f"{plan.pretrain_batch_size} blocks of {plan.block_size} tokens, lr {plan.pretrain_lr:g}. "
        f"Fine-tuning: {plan.finetune_steps} steps of {plan.finetune_batch_size} examples "
        f"(sources up to {plan.max_source_length} tokens), lr {plan.finetune_lr:g}, once from "
        "the pretrained model and once from random weights.",
        "",
    ]
    for name in ("pretrain", "finetune"):
        if name in plots:
            lines += [f"![loss {name}](plots/{plots[name].name})", ""]
    lines += [
        "## Compute and energy",
        "",
        *_table(
            ("stage", "steps", "tokens", "wall time", "FLOPs", "MFU", "energy", "CO2e"),
            compute_rows(out),
        ),
        "",
        "Energy and emissions are estimates from an assumed power draw and grid intensity "
        "(see docs/compute.md); FLOPs count the model's matmuls.",
        "",
    ]
    lines += [
        "## Stages",
        "",
        *_table(
            ("stage", "what", "seconds"),
            [(s, _cell(w, 200), f"{t:.1f}") for s, w, t in result.stages],
        ),
        "",
    ]
    lines += ["## Sample outputs", ""]
    for task in metrics.get("tasks", {}):
        lines += [f"### {task}", "", *_samples(out, task)]
    return "\n".join(lines).rstrip() + "\n"


def write_report(out: Path, result: QuickstartResult, seconds: float) -> Path:
    """Write report.md, report.html and the plots; returns report.md's path."""
    from lmforge.reports.html import markdown_to_html

    text = render(out, result, seconds)
    path = out / "report.md"
    write_text_atomic(path, text)
    write_text_atomic(
        path.with_suffix(".html"),
        markdown_to_html(text, "lmforge quickstart report", base_dir=out),
    )
    return path


__all__ = ["TASK_METRICS", "input_use_rows", "reads_input", "summary_rows", "write_report"]
