"""The ``lmforge`` command: a thin face over the library. Parses, calls, prints; no logic."""

from __future__ import annotations

import sys

import typer

from lmforge import __version__
from lmforge.errors import UserError

app = typer.Typer(
    name="lmforge",
    help="Make, judge and use your own Transformer language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lmforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Make, judge and use your own Transformer language models."""


def _register() -> None:
    # Each verb group lives in its own module and adds itself to ``app``: one import per line.
    import lmforge.cli.audit
    import lmforge.cli.data
    import lmforge.cli.evaluate
    import lmforge.cli.explain
    import lmforge.cli.export
    import lmforge.cli.generate
    import lmforge.cli.quickstart
    import lmforge.cli.report
    import lmforge.cli.tokenizer
    import lmforge.cli.train  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user mistakes become one line on stderr and exit status 2."""
    _register()
    try:
        app(args=argv, prog_name="lmforge")
    except UserError as exc:
        message = exc.message if exc.hint is None else f"{exc.message} ({exc.hint})"
        print(f"lmforge: error: {message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
