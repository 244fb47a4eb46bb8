"""``lmforge explain MODEL TEXT``: attention maps of one input, as heatmaps and numbers.

lmforge explain runs/sum/final "The weather is nice today" --output explain/weather
lmforge explain runs/mt/final "今天天气很好" --output explain/zh --max-new-tokens 10
"""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.main import app


@app.command("explain")
def explain(
    model_dir: Path = typer.Argument(..., metavar="MODEL", help="A model directory."),
    text: str = typer.Argument(..., metavar="TEXT", help="The input: the main field of the task."),
    output: Path = typer.Option(
        Path("explain"), "--output", "-o", help="Directory to write the maps and index.html to."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --output if it exists."),
    task: str | None = typer.Option(
        None, "--task", help="Task template to use (default: the one the model was tuned on)."
    ),
    max_new_tokens: int = typer.Option(
        20, "--max-new-tokens", help="Output tokens to generate and show (0: the input only)."
    ),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Load .bin/.pt weights (pickle can run code)."
    ),
) -> None:
    """Write attention heatmaps (per layer, per head and averaged) for TEXT and the model's
    greedy output, an index.html to browse them, and attentions.npz with the weights."""
    from lmforge.explain import explain as run_explain

    result = run_explain(
        model_dir,
        text,
        output,
        task=task,
        max_new_tokens=max_new_tokens,
        overwrite=overwrite,
        allow_pickle=allow_pickle,
    )
    for warning in result.warnings:
        typer.echo(f"lmforge: warning: {warning}", err=True)
    if result.output is not None:
        typer.echo(f"output: {result.output}")
    shapes = ", ".join(f"{m.name} {'x'.join(str(n) for n in m.weights.shape)}" for m in result.maps)
    typer.echo(f"attention maps ({shapes}) in {output}; open {output / 'index.html'}")
