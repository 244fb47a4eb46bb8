"""``lmforge tokenizer ...``: train tokenizers on your own data."""

from __future__ import annotations

import typer

from lmforge.cli.main import app

tokenizer_app = typer.Typer(help="Train tokenizers on your own data.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")
