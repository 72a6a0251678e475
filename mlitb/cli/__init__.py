"""The ``mlitb`` command: a typer app of sub-apps, one module per command group.

Errors of the ``MlitbError`` tree become one clear line on stderr and exit code 1 (see
``_common.cli_errors``); usage errors are typer's (exit code 2).
"""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from ._bench import bench_app
from ._demo import register_demo
from ._closure import closure_app
from ._console import register_console
from ._master import data_app, register_master
from ._node import node_app
from ._project import model_app, project_app, register_operator_token
from ._zoo import zoo_app

app = typer.Typer(
    name="mlitb",
    help="Machine Learning in the Browser, in Python: train neural networks on every device that "
    "reaches a master server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlitb {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Machine Learning in the Browser, in Python."""


register_master(app)
register_demo(app)
register_console(app)
register_operator_token(app)
app.add_typer(data_app, name="data")
app.add_typer(node_app, name="node")
app.add_typer(closure_app, name="closure")
app.add_typer(zoo_app, name="zoo")
app.add_typer(project_app, name="project")
app.add_typer(model_app, name="model")
app.add_typer(bench_app, name="bench")


def main() -> None:
    """Entry point of the console script."""
    app()
