"""``lmforge data harvest ...``: turn knowledge already on the machine into datasets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from lmforge.data.harvest import HarvestStats, Row

harvest_app = typer.Typer(
    help="Turn knowledge already on this machine into JSONL datasets (no download).",
    no_args_is_help=True,
)

_OUT = typer.Option(..., "--out", help="The JSONL file to write (atomically).")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace --out if it exists.")


@harvest_app.command("python")
def python(
    paths: list[Path] | None = typer.Argument(
        None, help="Source files or trees. Default: this Python's stdlib and site-packages."
    ),
    out: Path = _OUT,
    overwrite: bool = _OVERWRITE,
    max_lines: int = typer.Option(200, "--max-lines", min=1, help="Skip longer functions."),
    limit_files: int | None = typer.Option(
        None, "--limit-files", min=1, help="Read only the first N files (sorted by path)."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Parsing processes (default: one per CPU)."
    ),
) -> None:
    """Functions with docstrings (name, signature, code, body, docstring, summary)."""
    from lmforge.data.harvest.python import harvest_python

    rows, stats = harvest_python(
        paths, max_lines=max_lines, limit_files=limit_files, workers=workers
    )
    _write(rows, stats, out, overwrite, "functions", "Python files")


@harvest_app.command("gettext")
def gettext(
    paths: list[Path] | None = typer.Argument(
        None, help="Catalogs (.po/.mo) or folders. Default: system and site-packages locales."
    ),
    lang: str = typer.Option(..., "--lang", help="Target language, e.g. zh_CN, de, pt_BR."),
    out: Path = _OUT,
    overwrite: bool = _OVERWRITE,
) -> None:
    """Source -> translation pairs from gettext catalogs of one language."""
    from lmforge.data.harvest.gettext import harvest_gettext

    rows, stats = harvest_gettext(lang, paths)
    _write(rows, stats, out, overwrite, "translation pairs", f"{lang} catalogs")


@harvest_app.command("manpages")
def manpages(
    paths: list[Path] | None = typer.Argument(
        None, help="Man pages or folders. Default: $MANPATH, else the system man folders."
    ),
    out: Path = _OUT,
    overwrite: bool = _OVERWRITE,
    limit_files: int | None = typer.Option(
        None, "--limit-files", min=1, help="Read only the first N pages (sorted by path)."
    ),
) -> None:
    """NAME one-line summaries paired with DESCRIPTION text."""
    from lmforge.data.harvest.manpages import harvest_manpages

    rows, stats = harvest_manpages(paths, limit_files=limit_files)
    _write(rows, stats, out, overwrite, "summary/description pairs", "man pages")


def _write(
    rows: Iterator[Row], stats: HarvestStats, out: Path, overwrite: bool, what: str, files: str
) -> None:
    from lmforge.data.harvest import write_harvest

    written = write_harvest(rows, out, overwrite)
    where = ", ".join(stats.sources) or "(no such folders on this machine)"
    if written:
        typer.echo(f"wrote {written:,} {what} to {out}")
    else:
        typer.echo(f"nothing found: no {what} in {files} under {where}; no file written")
    typer.echo(f"scanned {stats.files_scanned:,} {files} in {stats.seconds:.1f} s from {where}")
    for label, counts in (("skipped files", stats.files_skipped), ("skipped", stats.items_skipped)):
        if counts:
            typer.echo(f"{label}: " + ", ".join(f"{n:,} {why}" for why, n in counts.most_common()))
    if stats.duplicates:
        typer.echo(f"removed {stats.duplicates:,} exact duplicates")
