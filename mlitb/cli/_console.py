"""``mlitb console [ws://HOST:8000] [--token TOKEN]``: the Textual operator console."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import cli_errors

DEFAULT_MASTER = "ws://127.0.0.1:8000"


def register_console(app: typer.Typer) -> None:
    """Add the ``console`` command to ``app``."""

    @app.command()
    @cli_errors
    def console(
        master: Annotated[str, typer.Argument(
            envvar="MLITB_MASTER", show_default=True,
            help="The master's WebSocket URL (env MLITB_MASTER).")] = DEFAULT_MASTER,
        token: Annotated[str | None, typer.Option(
            "--token", envvar="MLITB_OPERATOR_TOKEN",
            help="The master's operator token; without it the console is read-only.")] = None,
        project: Annotated[str | None, typer.Option(
            "--project", "-p", help="Open this project's view at start.")] = None,
        interval: Annotated[float, typer.Option(
            min=0.1, max=60.0, help="Seconds between status snapshots from the master.")] = 1.0,
        cafile: Annotated[str | None, typer.Option(
            "--cafile", envvar="MLITB_CAFILE", show_default=False,
            help="A CA certificate (PEM) to verify a wss:// master and its https:// data "
            "server against.")] = None,
        replay: Annotated[bool, typer.Option(
            "--replay", help="Show recorded sample data instead of connecting (a tour of the "
            "console without a master).")] = False,
    ) -> None:
        """Watch and steer training: projects, workers, curves, data, events (Textual)."""
        from ..console import ConsoleApp, LiveBackend, ReplayBackend, sample_status

        backend = (ReplayBackend([sample_status()]) if replay
                   else LiveBackend(master, token, interval=interval, cafile=cafile))
        ConsoleApp(backend, project=project).run()
