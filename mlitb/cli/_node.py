"""``mlitb node``: headless Python workers that join a master (``node join URL``)."""

from __future__ import annotations

import os
import re
from enum import Enum
from typing import Annotated
from urllib.parse import urlsplit

import typer

from ._common import cli_errors

MAX_WORKERS = 256
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

node_app = typer.Typer(
    name="node",
    help="Join a master with headless Python workers: [bold]mlitb node join ws://HOST:8000[/].",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


class Task(str, Enum):
    train = "train"
    track = "track"
    stats = "stats"


def check_url(url: str) -> str:
    """The master's URL, checked: ``ws://`` or ``wss://``, a host, an optional port and path."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise typer.BadParameter(f"{url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("ws", "wss"):
        hint = f" (did you mean ws://{url.split('://', 1)[-1]}?)" if url else ""
        raise typer.BadParameter(f"the master's URL must start with ws:// or wss://, got "
                                 f"{url!r}{hint}")
    if not parts.hostname:
        raise typer.BadParameter(f"the master's URL has no host: {url!r} (e.g. ws://HOST:8000)")
    if port == 0:
        raise typer.BadParameter(f"the master's URL has port 0: {url!r}")
    if parts.query or parts.fragment:
        raise typer.BadParameter(f"the master's URL must not have a query or fragment: {url!r}")
    return url


def check_project(name: str | None) -> str | None:
    if name is None or name == "":
        return None
    if not _NAME.fullmatch(name):
        raise typer.BadParameter(f"{name!r} is not a project name (1-64 characters of "
                                 "A-Z a-z 0-9 _ . -, starting with a letter or digit)")
    return name


def default_workers(task: Task) -> int:
    """Trainers: one per CPU core. Trackers and stats workers: one is enough."""
    if task is not Task.train:
        return 1
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


@node_app.callback()
def _node() -> None:
    """Headless Python workers that train, track or evaluate for a master."""


@node_app.command("join")
@cli_errors
def join(
    url: Annotated[str, typer.Argument(
        envvar="MLITB_MASTER", show_default=False, callback=check_url,
        help="The master's WebSocket URL, e.g. ws://HOST:8000.")],
    project: Annotated[str | None, typer.Option(
        "--project", "-p", envvar="MLITB_PROJECT", callback=check_project,
        help="The project to join (default: the master's only project).")]
    = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", "-n", min=1, max=MAX_WORKERS, show_default=False,
        help="Worker processes, each with its own connection (default: one per CPU core for "
             "train, 1 for track and stats).")] = None,
    task: Annotated[Task, typer.Option(
        "--task", "-t", case_sensitive=False,
        help="train: compute gradients on allotted data; track: keep the latest parameters; "
             "stats: evaluate them on the project's test set.")] = Task.train,
    seed: Annotated[int | None, typer.Option(
        min=0, help="Seed the workers' random batches (and deterministic orders).")] = None,
    stats_share: Annotated[float, typer.Option(
        min=0.01, max=1.0, help="stats: the share of one core to use. It evaluates a fixed "
        "subset of 1,000 test images per report and the whole test set every 10th report, "
        "then pauses so the trainers keep the rest (1: every parameter version, at once).")]
    = 0.1,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="MLITB_JOIN_TOKEN", show_default=False,
        help="The project's join token (for a project created with --join-token).")] = None,
    cafile: Annotated[str | None, typer.Option(
        "--cafile", envvar="MLITB_CAFILE", show_default=False,
        help="A CA certificate (PEM) to verify a wss:// master and its https:// data server "
        "against (default: the system's CAs).")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Also show the workers' debug lines.")] = False,
) -> None:
    """Join a master with N worker processes until Ctrl-C, which leaves cleanly.

    Exit codes: 0 after Ctrl-C; 2 refused (no such project, version mismatch, a missing or
    wrong join token); 3 removed; 1 other.
    """
    from mlitb.nodes._supervisor import NodeConfig, run_node

    config = NodeConfig(url=url, project=project, task=task.value,
                        workers=workers if workers is not None else default_workers(task),
                        seed=seed, verbose=verbose, stats_share=stats_share,
                        join_token=token or None, cafile=cafile)
    code = run_node(config)
    raise typer.Exit(code)
