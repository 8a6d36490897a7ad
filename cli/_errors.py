"""Errors the CLI reports as one clear line and an exit code, never as a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

P = ParamSpec("P")
R = TypeVar("R")

# Exit codes: 0 all good, 1 the run completed with failed sessions, 2 anything else went wrong.
EXIT_FAILURES = 1
EXIT_ERROR = 2

# Messages are single lines (soft wrap) so they stay greppable in logs and pipes.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class CliError(Exception):
    """A problem the user can act on; `message` says what happened and what to do."""

    def __init__(self, message: str, *, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def report_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Run a command; a CliError becomes `error: …` on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CliError as error:
            err_console.print(f"[bold red]error:[/] {escape(error.message)}")
            raise typer.Exit(error.exit_code) from None

    return wrapper
