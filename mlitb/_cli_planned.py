"""Commands that are planned but not built yet: each says so plainly and exits non-zero."""

from __future__ import annotations

from collections.abc import Callable

import typer

from . import __version__
from ._cli_common import cli_errors
from .errors import NotBuiltError

# (command, help, the issue that builds it)
PLANNED: list[tuple[str, str, str]] = [
    ("console", "Open the Textual operator console.", "operator console"),
]


def _planned_command(name: str, issue: str) -> Callable[[typer.Context], None]:
    @cli_errors
    def command(ctx: typer.Context) -> None:
        raise NotBuiltError(
            f"'mlitb {name}' is not built yet in mlitb {__version__} (it arrives with the "
            f"{issue} work)"
        )

    return command


def register_planned(app: typer.Typer) -> None:
    for name, help_text, issue in PLANNED:
        app.command(
            name=name,
            help=f"{help_text} [dim](not built yet)[/]",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            rich_help_panel="Coming next",
        )(_planned_command(name, issue))
