"""``lmforge quickstart``: the main job on data harvested from this machine."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from lmforge.cli.main import app


@app.command("quickstart")
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Where everything goes."),
    minutes: float = typer.Option(10.0, "--minutes", min=0.5, help="Wall-time budget."),
    seed: int = typer.Option(42, "--seed", help="Same seed, same result on this machine."),
) -> None:
    """Harvest data already on this machine (Python docstrings, translation catalogs) and
    train a tokenizer on it; no download. Running it again keeps what is done."""
    from lmforge.quickstart import run_quickstart

    console = Console(stderr=True)
    result = run_quickstart(out, minutes=minutes, seed=seed, report=console.print)
    table = Table(title="lmforge quickstart")
    for column in ("stage", "result", "seconds"):
        table.add_column(column)
    for stage, what, seconds in result.stages:
        table.add_row(stage, what, f"{seconds:.1f}")
    Console().print(table)
    Console().print(
        f"outputs: {result.out}\n"
        "next: lmforge data inspect "
        f"{result.out / 'data' / 'python.jsonl'} --task code-comment --column docstring=summary\n"
        f"      lmforge pretrain configs/pretrain-t5-small.yaml"
    )
