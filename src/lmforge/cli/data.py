"""``lmforge data ...``: inspect task data and harvest datasets from the machine."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lmforge.cli.harvest import harvest_app
from lmforge.cli.main import app
from lmforge.config import DataSource, validate
from lmforge.errors import UserError

data_app = typer.Typer(
    help="Inspect task data and harvest datasets from this machine.", no_args_is_help=True
)
data_app.add_typer(harvest_app, name="harvest")
app.add_typer(data_app, name="data")


def _columns(items: list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        field, sep, column = item.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise UserError(
                f"--column {item!r}: expected FIELD=COLUMN, e.g. --column docstring=summary"
            )
        mapping[field.strip()] = column.strip()
    return mapping


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


@data_app.command("inspect")
def inspect(
    path: str = typer.Argument(..., help="A file, glob, directory or save_to_disk directory."),
    task: str = typer.Option("text", "--task", help="Task template to render rows with."),
    column: list[str] = typer.Option(
        [], "--column", help="FIELD=COLUMN: read a template field from your column (repeatable)."
    ),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="Count tokens with this tokenizer directory (else words)."
    ),
    max_length: int | None = typer.Option(
        None, "--max-length", min=1, help="Report how many examples this length would truncate."
    ),
    show: int = typer.Option(3, "--show", min=0, help="How many rendered examples to print."),
    fmt: str = typer.Option(
        "auto", "--format", help="auto, jsonl, json, csv, tsv, parquet, text, arrow."
    ),
    text_unit: str = typer.Option(
        "line", "--text-unit", help="Plain text: one row per line or file."
    ),
    max_rows: int | None = typer.Option(
        None, "--max-rows", min=1, help="Look at the first N rows only."
    ),
) -> None:
    """Row count, token lengths of rendered source and target, truncation, examples."""
    from lmforge.data.inspect import inspect_source

    fields = {"path": path, "task": task, "format": fmt, "text_unit": text_unit}
    fields |= {"columns": _columns(column), "max_rows": max_rows}
    source = validate(DataSource, fields, "lmforge data inspect")
    report = inspect_source(source, tokenizer=tokenizer, max_length=max_length, show=show)

    console = Console(highlight=False)
    console.print(f"rows: {report.rows}", markup=False)
    console.print(f"task: {report.task}", markup=False)
    console.print(f"lengths in: {report.unit}", markup=False)
    table = Table("")
    for heading in ("min", "mean", "median", "p95", "max"):
        table.add_column(heading, justify="right")
    for name, stats in (("source", report.source), ("target", report.target)):
        table.add_row(
            name,
            str(stats.min),
            f"{stats.mean:.1f}",
            f"{stats.median:.1f}",
            f"{stats.p95:.1f}",
            str(stats.max),
        )
    console.print(table)
    if report.max_length is not None:
        console.print(
            f"max length {report.max_length} truncates {report.truncated} of {report.rows} "
            f"examples (source: {report.truncated_source}, target: {report.truncated_target})",
            markup=False,
        )
    for number, (source_text, target_text) in enumerate(report.examples, start=1):
        console.rule(f"example {number}")
        console.print(Text("source: ", style="bold") + Text(_shorten(source_text)))
        console.print(Text("target: ", style="bold") + Text(_shorten(target_text)))
