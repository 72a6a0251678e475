"""``mlitb zoo ...``: a directory of research closures (the model zoo)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ._common import cli_errors
from ..errors import MlitbError

zoo_app = typer.Typer(
    help="The model zoo: a directory of verified research closures to keep, share and start "
    "projects from (mlitb closure resume ZOO/NAME.closure.json).", no_args_is_help=True)
out = Console(highlight=False)

ZooOption = Annotated[Path | None, typer.Option(
    "--zoo", envvar="MLITB_ZOO", file_okay=False, show_default=False,
    help="The zoo directory (default: DATA_DIR/zoo, with DATA_DIR from MLITB_DATA_DIR or "
    "./mlitb-data, the master's default data dir).")]


def zoo_dir(zoo: Path | None) -> Path:
    """``--zoo`` / MLITB_ZOO, else the data dir's ``zoo`` folder."""
    if zoo is not None:
        return zoo
    return Path(os.environ.get("MLITB_DATA_DIR") or "mlitb-data") / "zoo"


def _model(s: dict[str, Any]) -> str:
    m = s["model"]
    shape = "×".join(str(x) for x in m["input_shape"])
    kind = {"softmax": "softmax", "svm": "svm", "regression": "regression"}.get(m["kind"],
                                                                             m["kind"])
    labels = f" → {len(s['labels'])} labels" if s["labels"] else ""
    return f"{kind}, {shape}{labels}, {m['num_params']:,} params"


@zoo_app.command("list")
@cli_errors
def list_(
    zoo: ZooOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the zoo: name, model, iterations, test error, created."""
    from ..closure import Zoo, summary

    z = Zoo(zoo_dir(zoo))
    rows: list[dict[str, Any]] = []
    for entry in z.entries():
        if entry.closure is None:
            rows.append({"name": entry.name, "path": str(entry.path), "error": entry.error})
            continue
        s = summary(entry.closure)
        test = s["history"]["last_test_error"]
        rows.append({"name": entry.name, "path": str(entry.path), "project": s["name"],
                     "model": _model(s), "labels": s["labels"], "iteration": s["iteration"],
                     "parameter_version": s["parameter_version"],
                     "optimizer": s["optimizer"]["name"],
                     "test_error": None if test is None else test["error"],
                     "deterministic": s["loop"]["deterministic"],
                     "replay_steps": s["replay"]["steps"] if s["replay"] else None,
                     "created": s["created"], "updated": s["updated"]})
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        out.print(f"the zoo at {z.root} is empty (add closures with mlitb zoo add FILE)")
        return
    table = Table("name", "model", "iterations", "test error", "created",
                  title=f"zoo: {z.root}", title_justify="left", show_edge=False)
    for r in rows:
        if "error" in r:
            table.add_row(r["name"], f"[red]unreadable:[/] {r['error']}", "", "", "")
            continue
        name = r["name"] + (f" ({r['project']})" if r["project"] != r["name"] else "")
        table.add_row(name, r["model"], f"{r['iteration']:,}",
                      "–" if r["test_error"] is None else f"{100 * r['test_error']:.1f}%",
                      r["created"][:19].replace("T", " "))
    out.print(table)


@zoo_app.command("add")
@cli_errors
def add(
    file: Annotated[Path, typer.Argument(help="A research closure (JSON file).",
                                         dir_okay=False)],
    name: Annotated[str | None, typer.Option(
        "--name", help="The entry's name (default: the closure's project name).")] = None,
    zoo: ZooOption = None,
) -> None:
    """Verify a closure and add it to the zoo (never twice, by name or by content)."""
    from ..closure import Zoo

    z = Zoo(zoo_dir(zoo))
    try:
        entry = z.add(file, name)
    except OSError as exc:
        raise MlitbError(f"cannot add {file}: {exc.strerror or exc}") from None
    closure = entry.closure
    assert closure is not None
    out.print(f"added {entry.name} to the zoo ({entry.path}): iteration {closure.iteration:,}, "
              f"{closure.num_params:,} parameters, verified")


@zoo_app.command("remove")
@cli_errors
def remove(
    name: Annotated[str, typer.Argument(help="The entry to remove.")],
    zoo: ZooOption = None,
) -> None:
    """Remove an entry from the zoo (its file is deleted)."""
    from ..closure import Zoo

    try:
        path = Zoo(zoo_dir(zoo)).remove(name)
    except OSError as exc:
        raise MlitbError(f"cannot remove {name}: {exc.strerror or exc}") from None
    out.print(f"removed {name} ({path})")
