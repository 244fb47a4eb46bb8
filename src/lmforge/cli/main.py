"""The ``lmforge`` command: a thin face over the library. Parses, calls, prints; no logic."""

from __future__ import annotations

import os
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
    # docstrings are wrapped at 100 columns in the source: let the terminal re-wrap paragraphs
    rich_markup_mode="markdown",
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
    import lmforge.cli.serve
    import lmforge.cli.tokenizer
    import lmforge.cli.train  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user mistakes become one line on stderr and exit status 2."""
    _register()
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        # What click's main() does, in its two steps: run by hand because typer's main would
        # print a usage error as a multi-line boxed panel and turn Ctrl-C into a silent exit.
        with command.make_context("lmforge", args) as ctx:
            command.invoke(ctx)
    except typer.Exit as exc:  # --help, --version, typer.Exit(code)
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # click's errors: bad option, missing argument, ...
        if type(exc).__name__ == "NoArgsIsHelpError":  # typer checks it by name too (#1278)
            message = exc.format_message()  # the help; rich has printed it already
            if message:
                print(message, file=sys.stderr)
            sys.exit(exc.exit_code)
        _fail(_usage_message(exc), exc.exit_code)
    except UserError as exc:
        _fail(exc.message if exc.hint is None else f"{exc.message} ({exc.hint})", exc.exit_code)
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # output piped into a reader that quit (| head)
        # Python's advice (signal module docs, "Note on SIGPIPE"): point stdout at devnull so
        # the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def _usage_message(exc: typer.TyperException) -> str:
    """One line for a click usage error: the command, what was wrong, where to find help."""
    message = " ".join(exc.format_message().split()).rstrip(".")  # click's words, one line
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    return f"{ctx.command_path}: {message} (see {ctx.command_path} --help)"


def _fail(message: str, exit_code: int) -> None:
    print(f"lmforge: error: {message}", file=sys.stderr)
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
