"""What the `infera` command shows besides its results: spinners on slow steps, notes and errors on stderr.

Guarantees: a spinner is drawn only when stderr is a terminal, so piped output, tests and logs get plain lines;
results go to stdout, everything else to stderr.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import typer


@contextlib.contextmanager
def spinner(message: str) -> Iterator[None]:
    """Shows `message` with a spinner while the block runs (on a terminal only)."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console  # installed with typer; imported only where it draws

    with Console(stderr=True).status(message):
        yield


def note(message: str) -> None:
    """A progress line for the operator, on stderr (never mixed into a command's result)."""
    typer.echo(message, err=True)


def warn(message: str) -> None:
    """`infera: warning: <message>` on stderr; the command goes on."""
    typer.echo(f"infera: warning: {message}", err=True)


def fail(message: str, code: int = 1) -> None:
    """Ends the command: `infera: <message>` on stderr, exit `code`."""
    typer.echo(f"infera: {message}", err=True)
    raise typer.Exit(code)
