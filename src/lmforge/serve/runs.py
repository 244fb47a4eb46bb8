"""What the playground's runs view shows: the run directories directly under a folder.

A training run (``metrics.jsonl``, from :mod:`lmforge.training.logging`) gives its loss
curves: ``train`` events' ``loss`` and ``eval`` events' numbers by step, plus ``compute.json``
and its last events. An evaluation run (``metrics.json``, from :mod:`lmforge.evaluation`)
gives its scores as (model, dataset, metric, score) rows. The browser draws the curves.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lmforge.training.logging import METRICS_FILE, read_metrics

EVAL_METRICS_FILE = "metrics.json"
COMPUTE_FILE = "compute.json"
# compute.json entries worth a line in the runs view (the rest is in the file).
COMPUTE_SHOWN = ("steps", "tokens", "wall_seconds", "train_flops", "mfu")


class RunNotFound(Exception):
    """No run directory of that name under the runs folder."""


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is missing or torn (a run still being written)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _is_run(path: Path) -> bool:
    return path.is_dir() and (
        (path / METRICS_FILE).is_file() or (path / EVAL_METRICS_FILE).is_file()
    )


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """A summary of every run under ``runs_dir``, most recently changed first."""
    if not runs_dir.is_dir():
        return []
    runs = []
    for path in runs_dir.iterdir():
        if path.name.startswith(".") or not _is_run(path):
            continue
        events = read_metrics(path)
        train = [e for e in events if e.get("event") == "train"]
        evals = [e for e in events if e.get("event") == "eval"]
        changed = max(p.stat().st_mtime for p in path.iterdir())
        runs.append(
            {
                "name": path.name,
                "kind": "training" if events else "evaluation",
                "steps": train[-1].get("step") if train else None,
                "loss": train[-1].get("loss") if train else None,
                "eval_loss": evals[-1].get("eval_loss") if evals else None,
                "has_final_model": (path / "final" / "config.json").is_file(),
                "modified": changed,
            }
        )
    return sorted(runs, key=lambda r: -r["modified"])


def run_detail(runs_dir: Path, name: str) -> dict[str, Any]:
    """Curves and metrics of the run ``name`` (a direct child of ``runs_dir``)."""
    path = runs_dir / name
    if "/" in name or "\\" in name or name.startswith(".") or not _is_run(path):
        raise RunNotFound(name)
    events = read_metrics(path)
    train = [e for e in events if e.get("event") == "train"]
    evals = [e for e in events if e.get("event") == "eval"]
    compute = _read_json(path / COMPUTE_FILE)
    return {
        "name": name,
        "train": [{"step": e["step"], "loss": e["loss"]} for e in train if _numbers(e, "loss")],
        "eval": [_numeric(e) for e in evals],
        "last_train": _numeric(train[-1]) if train else {},
        "last_eval": _numeric(evals[-1]) if evals else {},
        "compute": {k: compute[k] for k in COMPUTE_SHOWN if k in compute},
        "scores": _scores(_read_json(path / EVAL_METRICS_FILE)),
    }


def _numbers(event: dict[str, Any], key: str) -> bool:
    value = event.get(key)
    return isinstance(event.get("step"), int) and isinstance(value, (int, float))


def _numeric(event: dict[str, Any]) -> dict[str, float]:
    """The numbers of one event (JSON has no NaN or infinity: those are left out)."""
    return {
        k: v
        for k, v in event.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def _scores(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """(model, dataset, metric, score) rows of an evaluation run's metrics.json."""
    rows = []
    for model, datasets in (metrics.get("results") or {}).items():
        for dataset, entry in (datasets or {}).items():
            for metric, result in ((entry or {}).get("metrics") or {}).items():
                score = result.get("score") if isinstance(result, dict) else None
                if isinstance(score, (int, float)):
                    rows.append(
                        {"model": model, "dataset": dataset, "metric": metric, "score": score}
                    )
    return rows
