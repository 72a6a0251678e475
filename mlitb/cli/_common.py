"""What every command module shares: the stderr console and the error boundary."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import MlitbError

P = ParamSpec("P")
R = TypeVar("R")

err = Console(stderr=True, highlight=False)


def cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn an ``MlitbError`` raised by a command into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except MlitbError as exc:
            # One line (the terminal wraps it), the message as it is, not as markup.
            err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper
