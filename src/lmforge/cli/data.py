"""``lmforge data ...``: inspect task data and harvest datasets from the machine."""

from __future__ import annotations

import typer

from lmforge.cli.harvest import harvest_app
from lmforge.cli.main import app

data_app = typer.Typer(help="Inspect task data and harvest datasets from this machine.", no_args_is_help=True)
data_app.add_typer(harvest_app, name="harvest")
app.add_typer(data_app, name="data")
