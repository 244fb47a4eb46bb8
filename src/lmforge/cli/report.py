"""``lmforge report RUN_DIR``: a run's loss curves, metrics and compute figures as Markdown,
HTML and PNG plots.

    lmforge report runs/sum
    lmforge report runs/eval --out reports/eval
"""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.main import app


@app.command("report")
def report(
    run_dir: Path = typer.Argument(
        ..., metavar="RUN_DIR", help="A training or evaluation run directory."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Directory for the report (default: RUN_DIR/report)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Render RUN_DIR's loss curves, metrics and compute/energy figures as report.md,
    report.html and PNG plots."""
    from lmforge.reports.run_report import write_run_report

    result = write_run_report(run_dir, out, overwrite=overwrite)
    typer.echo(f"wrote {result.markdown} and {result.html}")
