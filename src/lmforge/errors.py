"""User-facing errors.

A :class:`UserError` is a mistake in something the user gave us (a file, a config key,
an argument, a request). The CLI prints it as one line on stderr and exits with status 2;
it never shows a traceback. Anything else that escapes is a bug in lmforge and may show one.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit status 2."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")
