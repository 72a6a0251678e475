"""``mlitb project ...`` and ``mlitb model download``: operator requests from the shell."""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict
from pathlib import Path
from collections.abc import Sequence
from typing import Annotated, Any

import trio
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._common import cli_errors
from ..client import OperatorClient, open_operator
from ..errors import MlitbError
from ..optim import OPTIMIZERS
from ..protocol import (
    MAX_ITERATION_TIME,
    MIN_ITERATION_TIME,
    CreateProject,
    DeleteProject,
    Pause,
    ProjectSummary,
    Resume,
    SetAccess,
    SetOperatorToken,
    SetHyperparameters,
    Training,
)
from ..training import training_from_json

MasterOption = Annotated[str, typer.Option("--master", "-m", envvar="MLITB_MASTER",
                                           help="The master's WebSocket URL.")]
TokenOption = Annotated[str | None, typer.Option("--token", envvar="MLITB_OPERATOR_TOKEN",
                                                 help="The master's operator token.")]
DEFAULT_MASTER = "ws://127.0.0.1:8000"

project_app = typer.Typer(help="Create, list and steer projects on a master.",
                          no_args_is_help=True)
model_app = typer.Typer(help="Download a project's model.", no_args_is_help=True)
out = Console()


def _run(url: str, token: str | None, need_token: bool, action: Any) -> Any:
    async def main() -> Any:
        async with open_operator(url, token, need_token=need_token) as op:
            return await action(op)

    return trio.run(main)


def _hyperparameters(pairs: list[str]) -> dict[str, float]:
    result: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            if not sep:
                raise ValueError
            result[key.strip()] = float(value)
        except ValueError:
            raise MlitbError(f"--set takes NAME=NUMBER, got {pair!r}") from None
    return result


TRAINING_HELP = ("Training setting NAME=VALUE (repeatable): algorithm=local|gradient, "
                 "batch_size, outer_optimizer=average|nesterov, outer_learning_rate, "
                 "outer_momentum, schedule=constant|cosine|linear, horizon, "
                 "horizon_unit=samples|seconds, warmup, final_lr, shift, flip=true|false, "
                 "aggregation, wire=float32|float16|int8 (docs/protocol.md).")


def _training(pairs: list[str], base: dict[str, Any] | None = None) -> Training:
    """``NAME=VALUE`` pairs (values as JSON, or plain words) over ``base``, checked."""
    values = dict(base or {})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MlitbError(f"--training takes NAME=VALUE, got {pair!r}")
        try:
            values[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            values[key.strip()] = value.strip()
    return training_from_json(values)


def check_optimizer(name: str) -> str:
    """The optimizer's name, or a usage error that names the valid ones and the nearest."""
    if name in OPTIMIZERS:
        return name
    near = difflib.get_close_matches(name, list(OPTIMIZERS), n=1, cutoff=0.5)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise typer.BadParameter(f"unknown optimizer {name!r}; {hint}choose one of "
                             f"{', '.join(OPTIMIZERS)}")


def read_spec(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise MlitbError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise MlitbError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and "layers" in data:  # a model file: take its layers
        data = data["layers"]
    if not isinstance(data, list):
        raise MlitbError(f"{path}: a model spec is a JSON list of layer definitions")
    return data


@project_app.command("create")
@cli_errors
def create(
    name: Annotated[str, typer.Argument(help="Project name.")],
    model: Annotated[Path, typer.Option("--model", help="Layer spec (JSON list, makeLayers "
                                        "form) or a model file.", exists=True, dir_okay=False)],
    iteration_time: Annotated[float, typer.Option(min=MIN_ITERATION_TIME, max=MAX_ITERATION_TIME,
                                                  help="T, seconds per iteration.")] = 2.0,
    optimizer: Annotated[str, typer.Option(help=f"One of {', '.join(OPTIMIZERS)}.",
                                           callback=check_optimizer)] = "adagrad",
    learning_rate: Annotated[float | None, typer.Option(min=0.0)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Hyperparameter NAME=VALUE "
                                                   "(repeatable).")] = None,
    samples_per_iteration: Annotated[int | None, typer.Option(
        min=1, help="Deterministic mode: budgets in samples (split over the trainers) instead "
        "of seconds, so the run can be replayed bit for bit from its closure.")] = None,
    training: Annotated[list[str] | None, typer.Option("--training", help=TRAINING_HELP)]
    = None,
    wire: Annotated[str | None, typer.Option(
        "--wire", help="How results travel: float32 (default), float16, or int8 blocks, with "
        "error feedback on the workers; parameters go as float16 for both compressed kinds. "
        "The same as --training wire=KIND; chosen for good (docs/protocol.md).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new project as JSON (the "
                                          "row `project list --json` gives).")] = False,
    join_token: Annotated[bool, typer.Option(
        "--join-token", help="Trainers, trackers and stats workers need a join token (one is "
        "generated and printed once; default: open to anyone, the paper's way).")] = False,
    join_token_value: Annotated[str | None, typer.Option(
        "--join-token-value", envvar="MLITB_NEW_JOIN_TOKEN", show_default=False,
        help="Use this join token instead of generating one (implies --join-token).")] = None,
    contributor_token: Annotated[bool, typer.Option(
        "--contributor-token", help="Let holders of a contributor token (generated, printed "
        "once) add data: uploads and the browser's teach.")] = False,
    contributor_token_value: Annotated[str | None, typer.Option(
        "--contributor-token-value", show_default=False,
        help="Use this contributor token (implies --contributor-token).")] = None,
    master: MasterOption = DEFAULT_MASTER,
    token: TokenOption = None,
) -> None:
    """Create a project from a model spec."""
    join, contribute = _new_tokens(join_token, join_token_value, contributor_token,
                                   contributor_token_value)
    spec = read_spec(model)
    pairs = list(training or []) + ([f"wire={wire}"] if wire is not None else [])
    settings = _training(pairs) if pairs else None
    hp = _hyperparameters(set_ or [])
    if learning_rate is not None:
        hp["learning_rate"] = learning_rate

    async def action(op: OperatorClient) -> ProjectSummary | None:
        await op.request(CreateProject(request_id="-", name=name, spec=tuple(spec),
                                       iteration_time=iteration_time, optimizer=optimizer,
                                       hyperparameters=hp,
                                       samples_per_iteration=samples_per_iteration,
                                       training=settings, join_token=join,
                                       contributor_token=contribute))
        links["data_url"] = op.welcome.data_url or ""
        if not as_json:
            return None
        return next((p for p in await op.list_projects() if p.name == name), None)

    links: dict[str, str] = {}
    created = _run(master, token, True, action)
    if as_json:
        body = asdict(created) if created else {"name": name}
        body |= {k: v for k, v in (("join_token", join), ("contributor_token", contribute)) if v}
        typer.echo(json.dumps(body, indent=2))
        return
    out.print(f"created project {name}")
    _print_tokens(name, master, links.get("data_url", ""), join, contribute)


def _new_tokens(join: bool, join_value: str | None, contribute: bool,
                contribute_value: str | None) -> tuple[str | None, str | None]:
    """The join and contributor tokens to set: given, generated, or None."""
    import secrets

    def one(wanted: bool, value: str | None, what: str) -> str | None:
        if value is not None:
            if not 8 <= len(value) <= 256 or not value.isprintable() or " " in value:
                raise MlitbError(f"a {what} token must be 8-256 printable characters without "
                                 "spaces")
            return value
        return secrets.token_urlsafe(18) if wanted else None

    return one(join, join_value, "join"), one(contribute, contribute_value, "contributor")


def _print_tokens(name: str, master: str, data_url: str, join: str | None,
                  contribute: str | None) -> None:
    """The tokens, once (the master keeps only their hashes), and how to use them."""
    from urllib.parse import quote

    base = data_url.rstrip("/")
    if join is not None:
        out.print(f"join token: [bold]{escape(join)}[/] (shown once; the master keeps only its "
                  "hash)", soft_wrap=True)
        out.print(f"  nodes:   mlitb node join {master} --project {name} --token {escape(join)}",
                  soft_wrap=True)
        out.print(f"  browser: {base}/?project={name}&join={quote(join)}", soft_wrap=True)
    if contribute is not None:
        out.print(f"contributor token: [bold]{escape(contribute)}[/] (shown once)",
                  soft_wrap=True)
        out.print(f"  browser: {base}/?project={name}&contribute={quote(contribute)}",
                  soft_wrap=True)


@project_app.command("access")
@cli_errors
def access(
    name: Annotated[str, typer.Argument(help="Project name.")],
    join_token: Annotated[bool, typer.Option(
        "--join-token", help="A new join token (generated, printed once); without it or "
        "--join-token-value the project becomes open.")] = False,
    join_token_value: Annotated[str | None, typer.Option(
        "--join-token-value", envvar="MLITB_NEW_JOIN_TOKEN", show_default=False,
        help="Use this join token.")] = None,
    contributor_token: Annotated[bool, typer.Option(
        "--contributor-token", help="A new contributor token (without it or "
        "--contributor-token-value only the operator adds data).")] = False,
    contributor_token_value: Annotated[str | None, typer.Option(
        "--contributor-token-value", show_default=False,
        help="Use this contributor token.")] = None,
    keep_join_token: Annotated[bool, typer.Option(
        "--keep-join-token", help="Leave the join token as it is (rotate the contributor "
        "token alone).")] = False,
    keep_contributor_token: Annotated[bool, typer.Option(
        "--keep-contributor-token", help="Leave the contributor token as it is (rotate the "
        "join token alone).")] = False,
    drop_members: Annotated[bool, typer.Option(
        "--drop-members", help="Also remove the project's connected workers: they must join "
        "again with the new token.")] = False,
    master: MasterOption = DEFAULT_MASTER,
    token: TokenOption = None,
) -> None:
    """Replace a project's join and contributor tokens (rotate a leaked one, or open it)."""
    if keep_join_token and (join_token or join_token_value is not None):
        raise MlitbError("--keep-join-token keeps the join token: do not give a new one")
    if keep_contributor_token and (contributor_token or contributor_token_value is not None):
        raise MlitbError("--keep-contributor-token keeps the contributor token: do not give a "
                         "new one")
    join, contribute = _new_tokens(join_token, join_token_value, contributor_token,
                                   contributor_token_value)
    keep = tuple(kept for kept, wanted in (("join", keep_join_token),
                                           ("contributor", keep_contributor_token)) if wanted)
    links: dict[str, str] = {}

    async def action(op: OperatorClient) -> None:
        await op.request(SetAccess(request_id="-", project=name, join_token=join,
                                   contributor_token=contribute, keep=keep,  # type: ignore[arg-type]
                                   drop_members=drop_members))
        links["data_url"] = op.welcome.data_url or ""

    _run(master, token, True, action)
    said = ["its join token unchanged" if keep_join_token else
            "open to every trainer" if join is None else "needs the new join token",
            "its contributor token unchanged" if keep_contributor_token else
            "takes contributions" if contribute else "only the operator adds data"]
    out.print(f"project {name}: " + ", ".join(said)
              + (" (its workers were removed)" if drop_members else ""))
    _print_tokens(name, master, links.get("data_url", ""), join, contribute)


def register_operator_token(app: typer.Typer) -> None:
    @app.command("operator-token")
    @cli_errors
    def operator_token(
        value: Annotated[str | None, typer.Option(
            "--value", envvar="MLITB_NEW_OPERATOR_TOKEN", show_default=False,
            help="Use this token (8-256 printable characters, no spaces) instead of "
            "generating one.")] = None,
        drop_operators: Annotated[bool, typer.Option(
            "--drop-operators", help="Also close every other operator connection (consoles, "
            "CLIs, Design tabs, standalone data servers): they must connect again with the "
            "new token.")] = False,
        master: MasterOption = DEFAULT_MASTER,
        token: TokenOption = None,
    ) -> None:
        """Give the running master a new operator token (rotate a leaked one, no restart).

        The old token stops working at once, for operators and for uploads to the master's \
own data server. Start the master with the new one next time (--operator-token or \
MLITB_OPERATOR_TOKEN): a restart reads the token again from there."""
        import secrets

        if value is not None and (not 8 <= len(value) <= 256 or not value.isprintable()
                                  or " " in value):
            raise MlitbError("an operator token must be 8-256 printable characters without "
                             "spaces")
        new = value if value is not None else secrets.token_urlsafe(18)

        async def action(op: OperatorClient) -> None:
            await op.request(SetOperatorToken(request_id="-", operator_token=new,
                                              drop_operators=drop_operators))

        _run(master, token, True, action)
        if value is None:
            out.print(f"operator token: [bold]{escape(new)}[/] (shown once)", soft_wrap=True)
        out.print("the master takes the new operator token"
                  + (" (the other operator connections were closed)" if drop_operators else "")
                  + "; start it with --operator-token NEW (or MLITB_OPERATOR_TOKEN) next time")


@project_app.command("list")
@cli_errors
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    master: MasterOption = DEFAULT_MASTER,
    token: TokenOption = None,
) -> None:
    """List the master's projects."""
    projects = _run(master, token, False, lambda op: op.list_projects())
    if as_json:
        hashes = ("join_sha256", "contributor_sha256")  # for data servers, not for people
        typer.echo(json.dumps([{k: v for k, v in asdict(p).items() if k not in hashes}
                               for p in projects], indent=2))
        return
    if not projects:
        out.print("no projects")
        return
    table = project_table(projects)
    wanted = out.measure(table, options=out.options.update(max_width=10_000)).maximum
    if wanted > out.width:  # too narrow for a row each: a block each
        for p in projects:
            out.print(project_block(p))
        return
    out.print(table)


def _loss(p: ProjectSummary) -> str:
    return "-" if p.loss is None else f"{p.loss:.4f}"


def _error(p: ProjectSummary) -> str:
    return "-" if p.test_error is None else f"{p.test_error:.1%}"


def project_table(projects: Sequence[ProjectSummary]) -> Table:
    """One row per project, short headers, no cell wrapped (``wrk``: workers connected)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    for header in ("project", "state", "iter", "T s", "optimizer", "wrk", "train", "test",
                   "loss", "test err"):
        right = header not in ("project", "state", "optimizer")
        table.add_column(header, justify="right" if right else "left", no_wrap=True)
    for p in projects:
        table.add_row(p.name, p.state, str(p.iteration), f"{p.iteration_time:g}", p.optimizer,
                      str(p.workers), f"{p.data.total:,}", f"{p.data.test:,}", _loss(p),
                      _error(p))
    return table


def project_block(p: ProjectSummary) -> str:
    """A project in two lines, for a terminal too narrow for the table."""
    return (f"[bold]{escape(p.name)}[/]  {p.state} · iteration {p.iteration} · "
            f"T {p.iteration_time:g} s · {p.optimizer}\n"
            f"  {p.workers} workers · {p.data.total:,} train + {p.data.test:,} test ids · "
            f"loss {_loss(p)} · test error {_error(p)}")


def _simple(kind: Any, verb: str) -> Any:
    @cli_errors
    def command(name: Annotated[str, typer.Argument(help="Project name.")],
                master: MasterOption = DEFAULT_MASTER, token: TokenOption = None) -> None:
        _run(master, token, True, lambda op: op.request(kind(request_id="-", project=name)))
        out.print(f"{verb} project {name}")

    return command


project_app.command("pause", help="Pause a project's training.")(_simple(Pause, "paused"))
project_app.command("resume", help="Resume a paused project.")(_simple(Resume, "resumed"))
project_app.command("delete", help="Delete a project; its workers are told to leave.")(
    _simple(DeleteProject, "deleted"))


@project_app.command("set")
@cli_errors
def set_hyperparameters(
    name: Annotated[str, typer.Argument(help="Project name.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="NAME=VALUE (repeatable).")]
    = None,
    iteration_time: Annotated[float | None, typer.Option(
        min=MIN_ITERATION_TIME, max=MAX_ITERATION_TIME)] = None,
    training: Annotated[list[str] | None, typer.Option(
        "--training", help="Change training settings NAME=VALUE (repeatable): the schedule, "
        "augmentation, batch size, outer optimizer; the others stay.")] = None,
    master: MasterOption = DEFAULT_MASTER,
    token: TokenOption = None,
) -> None:
    """Change hyperparameters, T or training settings of a running project."""
    hp = _hyperparameters(set_ or [])
    if not hp and iteration_time is None and not training:
        raise MlitbError("nothing to change: give --set NAME=VALUE, --iteration-time or "
                         "--training NAME=VALUE")
    pairs = list(training or [])

    async def action(op: OperatorClient) -> None:
        settings = None
        if pairs:  # the project's settings now, from its closure, with the changes on top
            closure = await op.get_model(name, "closure")
            settings = _training(pairs, closure.get("loop", {}).get("training", {}))
        await op.request(SetHyperparameters(request_id="-", project=name, hyperparameters=hp,
                                            iteration_time=iteration_time, training=settings))

    _run(master, token, True, action)
    out.print(f"updated project {name}")


@model_app.command("download")
@cli_errors
def download(
    name: Annotated[str, typer.Argument(help="Project name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    convnetjs: Annotated[bool, typer.Option("--convnetjs", help="ConvNetJS Net.toJSON() "
                                            "format instead of mlitb's.")] = False,
    closure: Annotated[bool, typer.Option("--closure", help="The whole research closure "
                                          "(optimizer state, data manifest, history).")]
    = False,
    master: MasterOption = DEFAULT_MASTER,
    token: TokenOption = None,
) -> None:
    """Save a project's current model (spec, parameters, labels) to a JSON file."""
    from ..closure import closure_from_dict, save_closure
    from ..nn import load_any, save_model

    if convnetjs and closure:
        raise MlitbError("choose one of --convnetjs and --closure")
    kind = "convnetjs" if convnetjs else "closure" if closure else "model"
    model = _run(master, token, False, lambda op: op.get_model(name, kind))
    try:  # validate what came over the wire before writing it
        if closure:
            checked = closure_from_dict(model)
            save_closure(checked, output)
            net = checked.net()
        else:
            net = load_any(model)
            if convnetjs:
                output.write_text(json.dumps(model))
            else:
                save_model(net, output)
    except OSError as exc:
        raise MlitbError(f"cannot write {output}: {exc.strerror}") from None
    out.print(f"saved {name} ({net.num_params} parameters) to {output}")
