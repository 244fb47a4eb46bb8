"""``lmforge quickstart``: the main job on data harvested from this machine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from lmforge.cli.main import app

if TYPE_CHECKING:
    from lmforge.quickstart.plan import Plan


@app.command("quickstart")
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Where everything goes."),
    minutes: float = typer.Option(
        None, "--minutes", min=0.1, help="Wall-time budget (default: the preset's own)."
    ),
    preset: str = typer.Option(
        "laptop",
        "--preset",
        help="laptop (10 min on 2 CPU cores), small (an hour), base (a GPU), test (seconds).",
    ),
    seed: int = typer.Option(42, "--seed", help="Same seed, same result on this machine."),
    overrides: list[str] = typer.Option(
        None, "--set", help="Change one field of the plan (see plan.json), e.g. finetune_steps=800."
    ),
) -> None:
    """Harvest Python docstrings and translation catalogs already on this machine, pretrain a
    small T5 on them, fine-tune it on four tasks, evaluate it against baselines and write a
    report. No download. Running the same command again resumes where it stopped."""
    from lmforge.quickstart import run_quickstart
    from lmforge.quickstart.evaluate import MODELS
    from lmforge.quickstart.report import reads_input, summary_rows

    console = Console(stderr=True)
    result = run_quickstart(
        out, minutes=minutes, seed=seed, report=console.print, preset=preset, overrides=overrides
    )
    table = Table(
        title=f"lmforge quickstart: held-out scores ({result.plan.eval_examples} per task)"
    )
    for column in ("task", "metric", "pretrained + fine-tuned", "from scratch", "baseline", ""):
        table.add_column(column)
    for row in summary_rows(result.metrics):
        table.add_row(*row)
    stdout = Console()
    stdout.print(table)
    pretrained = next(iter(MODELS))
    ignored = sorted(
        task
        for task, systems in result.metrics.get("input_use", {}).items()
        if pretrained in systems and not reads_input(systems[pretrained])
    )
    if ignored:
        stdout.print(
            f"the pretrained model does not yet read its input on: {', '.join(ignored)} "
            "(same loss given another example's source; see the report)"
        )
    final = result.out / "finetune" / "final"
    stdout.print(
        f"report: {result.report} (open {result.report.with_suffix('.html')} in a browser)\n"
        "next:\n"
        f"  lmforge generate {final} --task code-comment {_decoding_flags(result.plan)} "
        '"def add(a, b):\\n    return a + b"\n'
        f"  lmforge serve {final}\n"
        f"  lmforge eval run {result.out / 'eval.yaml'}"
    )


def _decoding_flags(plan: Plan) -> str:
    """The `lmforge generate` options of the decoding the evaluation used for code-comment."""
    names = {
        "no_repeat_ngram_size": "--no-repeat-ngram-size",
        "repetition_penalty": "--repetition-penalty",
    }
    flags = [f"--max-new-tokens {plan.max_new_tokens.get('code-comment', 64)}"]
    for field, value in plan.decoding.get("code-comment", {}).items():
        if field in names:
            flags.append(f"{names[field]} {value:g}")
    return " ".join(flags)
