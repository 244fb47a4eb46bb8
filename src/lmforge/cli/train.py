"""``lmforge pretrain CONFIG`` and ``lmforge finetune CONFIG``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from lmforge.cli.main import app
from lmforge.config import RunConfig, load_config

SET_HELP = "Override a config key, e.g. --set train.max_steps=200 (repeatable)."
OVERWRITE_HELP = "Delete an existing run directory with another config and start over."


def _run(config: Path, overrides: list[str], overwrite: bool, stage: str) -> None:
    from lmforge.runs import run_training  # heavy imports only when a run starts

    cfg = load_config(config, RunConfig, overrides)
    result = run_training(cfg, stage, overwrite=overwrite)  # type: ignore[arg-type]
    console = Console(stderr=True)
    console.print(f"[bold]{stage} finished[/bold] at step {result.step} in {cfg.run_dir}")
    if result.best_metric is not None:
        console.print(f"best {cfg.train.metric}: {result.best_metric:.4f}")
    console.print(f"model: {result.final_dir}")
    console.print(f"next: lmforge finetune CONFIG --set model.pretrained={result.final_dir}")


@app.command("pretrain")
def pretrain(
    config: Path = typer.Argument(..., help="Run config (YAML); see configs/."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Pretrain a model from scratch with a self-supervised objective (span corruption,
    MLM+NSP or causal LM). Running the same command again resumes from the last checkpoint."""
    _run(config, set_, overwrite, "pretrain")


@app.command("finetune")
def finetune(
    config: Path = typer.Argument(..., help="Run config (YAML); see configs/."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Fine-tune a pretrained (or new) model on labelled task data, full or LoRA, one task
    or several mixed. Running the same command again resumes from the last checkpoint."""
    _run(config, set_, overwrite, "finetune")
