"""``lmforge data harvest ...``: turn knowledge already on the machine into datasets."""

from __future__ import annotations

import typer

harvest_app = typer.Typer(
    help="Turn knowledge already on this machine into JSONL datasets (no download).",
    no_args_is_help=True,
)
