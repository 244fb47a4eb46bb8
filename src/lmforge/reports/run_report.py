"""``lmforge report RUN_DIR``: a run's loss curves, metrics and compute figures on one page.

A training run directory holds ``metrics.jsonl`` (train and eval events) and ``compute.json``
(tokens, time, FLOPs, MFU, energy); an evaluation run directory holds ``metrics.json``
(scores, and tokens, time, FLOPs and energy per model and dataset) and ``predictions.jsonl``.
The report (report.md, report.html and its PNG plots) goes to ``RUN_DIR/report`` or
``--out``, whole or not at all. Every number is printed from those files as they are, so the
report and the JSON always agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import UserError
from lmforge.fsutil import atomic_dir, write_text_atomic
from lmforge.reports.html import markdown_to_html
from lmforge.reports.markdown import eval_report
from lmforge.reports.plots import loss_points, plot_loss_curves, plot_metric_bars

REPORT_DIR = "report"
COMPUTE_FILE = "compute.json"  # what the training loop writes (training.loop.COMPUTE_FILE)
EVAL_METRICS_FILE = "metrics.json"
LOWER_IS_BETTER = ("loss", "ppl", "perplexity")  # metric names ending so: smaller is better


@dataclass
class RunReport:
    """Where a report went."""

    out_dir: Path
    markdown: Path
    html: Path
    plots: list[Path]


# --------------------------------------------------------------------------- numbers


def format_number(value: Any) -> str:
    """How reports print a value: integers with thousands separators, floats to 4 significant
    digits, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


def _duration(seconds: float) -> str:
    text = f"{seconds:,.1f} s"
    if seconds >= 60:
        minutes, secs = divmod(round(seconds), 60)
        hours, minutes = divmod(minutes, 60)
        text += f" ({hours}:{minutes:02d}:{secs:02d})"
    return text


# (key, label, how to show it): a key missing from compute.json is left out of the table
_COMPUTE_ROWS: list[tuple[str, str, str]] = [
    ("steps", "optimizer steps", ""),
    ("tokens", "tokens", ""),
    ("target_tokens", "target tokens", ""),
    ("prompt_tokens", "prompt tokens", ""),
    ("completion_tokens", "generated tokens", ""),
    ("wall_seconds", "wall time", "duration"),
    ("train_step_seconds", "time in training steps", "duration"),
    ("train_flops", "training FLOPs", ""),
    ("flops", "inference FLOPs", ""),
    ("params", "parameters", ""),
    ("matmul_params", "parameters in matmuls (N)", ""),
    ("trainable_matmul_params", "trainable matmul parameters", ""),
    ("precision", "precision", ""),
    ("num_processes", "processes", ""),
    ("device", "device", ""),
    ("peak_flops_per_s_per_device", "measured matmul peak per device (FLOP/s)", ""),
    ("mfu", "MFU (model FLOPs utilisation)", "percent"),
]
_ENERGY_ROWS: list[tuple[str, str, str]] = [
    ("power_watts_per_device", "power per device (W)", ""),
    ("devices", "devices", ""),
    ("energy_kwh", "energy (kWh)", ""),
    ("grid_gco2_per_kwh", "grid carbon intensity (gCO2e/kWh)", ""),
    ("co2_g", "emissions (gCO2e)", ""),
]


def _shown(value: Any, how: str) -> str:
    if value is None:
        return "n/a"
    if how == "duration":
        return _duration(float(value))
    if how == "percent":
        return f"{100 * value:.2f} %"
    return format_number(value)


def compute_section(compute: Mapping[str, Any], title: str = "Compute and energy") -> str:
    """Markdown: a table of a run's compute.json (training) or an evaluation's compute entry
    (inference), then where the FLOPs, power and grid figures come from."""
    energy = compute.get("energy") or {}
    rows = [(label, _shown(compute[k], how)) for k, label, how in _COMPUTE_ROWS if k in compute]
    rows += [(label, _shown(energy[k], how)) for k, label, how in _ENERGY_ROWS if k in energy]
    lines = [f"## {title}", "", "| quantity | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in rows]
    notes = []
    if compute.get("flops_formula"):
        notes.append(f"- FLOPs {compute['flops_formula']}.")
    if energy:
        notes.append(f"- Energy is estimated, not measured: {energy['formula']}.")
        notes.append(f"- Power: {energy['power_source']}.")
        notes.append(f"- Grid intensity: {energy['grid_source']}.")
        notes.append(
            "- Set your own with `LMFORGE_POWER_WATTS` and `LMFORGE_GRID_GCO2_PER_KWH` "
            "(see docs/compute.md)."
        )
    elif "energy" in compute:
        notes.append("- No energy estimate: a remote endpoint's hardware is unknown.")
    return "\n".join([*lines, "", *notes]).rstrip() + "\n"


# --------------------------------------------------------------------------- training runs


def _lower_is_better(name: str) -> bool:
    return name.endswith(LOWER_IS_BETTER)


def metrics_section(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: the last train event, and each eval metric's last and best value."""
    lines = ["## Metrics", ""]
    train = [r for r in rows if r.get("event") == "train"]
    if train:
        last = train[-1]
        shown = [
            ("step", last.get("step")),
            ("train loss (mean since the previous log)", last.get("loss")),
            ("learning rate", last.get("lr")),
            ("tokens per second", last.get("tokens_per_s")),
        ]
        lines += ["| last train log | value |", "|---|---|"]
        lines += [f"| {label} | {format_number(v)} |" for label, v in shown if v is not None]
        lines.append("")
    evals = [r for r in rows if r.get("event") == "eval"]
    names = list(dict.fromkeys(k for r in evals for k in r if k.startswith("eval_")))
    if not names:
        lines.append("No evaluation was logged.")
        return "\n".join(lines) + "\n"
    lines += ["| eval metric | last | at step | best | at step |", "|---|---|---|---|---|"]
    for name in names:
        points = [(r["step"], r[name]) for r in evals if isinstance(r.get(name), (int, float))]
        if not points:
            continue
        pick = min if _lower_is_better(name) else max
        best = pick(points, key=lambda p: p[1])
        arrow = " ↓" if _lower_is_better(name) else ""
        lines.append(
            f"| {name}{arrow} | {format_number(points[-1][1])} | {points[-1][0]} "
            f"| {format_number(best[1])} | {best[0]} |"
        )
    lines += ["", "↓: lower is better (loss, perplexity); otherwise higher is better."]
    return "\n".join(lines) + "\n"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _training_report(run_dir: Path, out: Path) -> tuple[str, list[Path]]:
    from lmforge.training.logging import read_metrics

    rows = read_metrics(run_dir)
    lines = [f"# Training run `{run_dir}`", ""]
    plots = []
    train, evals = loss_points(rows)
    if train or evals:
        plots.append(plot_loss_curves({"": rows}, out / "loss.png", title="Loss"))
        lines += ["## Loss", "", "![train and eval loss](loss.png)", ""]
    else:
        lines += ["No loss was logged (metrics.jsonl is missing or empty).", ""]
    lines.append(metrics_section(rows))
    compute_path = run_dir / COMPUTE_FILE
    if compute_path.is_file():
        lines.append(compute_section(_read_json(compute_path)))
    else:
        lines.append("No compute.json: the run has not finished yet.\n")
    return "\n".join(lines), plots


# --------------------------------------------------------------------------- evaluation runs


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60] or "data"


def inference_compute_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: tokens, time, FLOPs and energy of each model on each dataset."""
    lines = [
        "## Compute and energy",
        "",
        "| model | dataset | tokens | wall time | FLOPs | energy (kWh) | gCO2e |",
        "|---|---|---|---|---|---|---|",
    ]
    sources: dict[str, None] = {}
    for model, per_dataset in results.items():
        for dataset, entry in per_dataset.items():
            compute = entry.get("compute") or {}
            energy = compute.get("energy") or {}
            cells = [
                format_number(compute.get("tokens")),
                _shown(compute.get("wall_seconds"), "duration"),
                format_number(compute.get("flops")),
                format_number(energy.get("energy_kwh")),
                format_number(energy.get("co2_g")),
            ]
            lines.append(f"| {model} | {dataset} | " + " | ".join(cells) + " |")
            if energy:
                sources[f"- Power: {energy['power_source']}."] = None
                sources[f"- Grid intensity: {energy['grid_source']}."] = None
    notes = ["- FLOPs: 2N per token read (forward only); n/a for remote endpoints.", *sources]
    return "\n".join([*lines, "", *notes]) + "\n"


def _read_predictions(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    return rows


def _evaluation_report(run_dir: Path, metrics: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    rows = _read_predictions(run_dir / "predictions.jsonl")
    plots = []
    figures = ["## Plots", ""]
    for dataset in metrics.get("datasets", {}):
        table = {
            model: {m: r["score"] for m, r in per[dataset]["metrics"].items()}
            for model, per in metrics["results"].items()
            if dataset in per and per[dataset]["metrics"]
        }
        if table:
            name = f"scores-{_slug(dataset)}.png"
            plots.append(plot_metric_bars(table, out / name, title=dataset))
            figures += [f"![scores on {dataset}]({name})", ""]
    text = eval_report(metrics, rows).rstrip() + "\n\n"
    if plots:
        text += "\n".join(figures) + "\n"
    return text + inference_compute_table(metrics["results"]), plots


# --------------------------------------------------------------------------- the verb


def write_run_report(
    run_dir: str | Path, out_dir: str | Path | None = None, *, overwrite: bool = False
) -> RunReport:
    """Render ``run_dir`` (a training or evaluation run) as report.md, report.html and PNGs in
    ``out_dir`` (default ``RUN_DIR/report``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    out = Path(out_dir) if out_dir is not None else run_dir / REPORT_DIR
    if out.resolve() == run_dir.resolve() or out.resolve() in run_dir.resolve().parents:
        raise UserError(f"--out {out} would replace the run directory {run_dir}; choose another")
    eval_metrics = run_dir / EVAL_METRICS_FILE
    training = (run_dir / "metrics.jsonl").is_file() or (run_dir / COMPUTE_FILE).is_file()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if training:
            text, plots = _training_report(run_dir, tmp)
            title = f"Training run {run_dir.name}"
        elif eval_metrics.is_file() and "results" in (metrics := _read_json(eval_metrics)):
            text, plots = _evaluation_report(run_dir, metrics, tmp)
            title = f"Evaluation run {run_dir.name}"
        else:
            raise UserError(
                f"{run_dir} is not an lmforge run directory: it has no metrics.jsonl or "
                "compute.json (training) and no metrics.json with results (evaluation)"
            )
        write_text_atomic(tmp / "report.md", text)
        write_text_atomic(tmp / "report.html", markdown_to_html(text, title, base_dir=tmp))
    return RunReport(out, out / "report.md", out / "report.html", [out / p.name for p in plots])
