"""``mlitb closure ...``: inspect, verify, predict with, export, replay and resume research
closures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from ._common import cli_errors
from .._files import atomic_write
from ..closure import (
    Closure,
    closure_from_dict,
    parse_closure_json,
    predict_images,
    summary,
    verify_manifest,
)
from ..errors import ClosureError, MlitbError
from ..protocol import MAX_ITERATION_TIME, MIN_ITERATION_TIME

closure_app = typer.Typer(
    help="Inspect, verify, predict with, export, replay and resume research closures (one JSON "
    "file holding a model, its training state, a data manifest and the metric history).",
    no_args_is_help=True)
out = Console(highlight=False)

ClosureFile = Annotated[Path, typer.Argument(help="A research closure (JSON file).",
                                             dir_okay=False)]


def _read(path: Path) -> tuple[Closure, dict[str, Any]]:
    """The checked closure and its raw JSON object; every failure one MlitbError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MlitbError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        d = parse_closure_json(raw)
        return closure_from_dict(d), d
    except ClosureError as exc:
        raise ClosureError(f"{path}: {exc}") from None


def _shape(shape: list[int]) -> str:
    return "×".join(str(s) for s in shape)


def _number(x: float) -> str:
    return f"{x:.4g}"


def _percent(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _labels(labels: list[str], limit: int = 20) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (f", … (+{len(labels) - limit} more)" if len(labels) > limit else "")


def _counts(counts: dict[str, int], limit: int = 12) -> str:
    items = [f"{k}: {v:,}" for k, v in list(counts.items())[:limit]]
    more = f", … (+{len(counts) - limit} labels)" if len(counts) > limit else ""
    return ", ".join(items) + more


def _print_summary(s: dict[str, Any]) -> None:
    m, o, loop, h = s["model"], s["optimizer"], s["loop"], s["history"]
    out.print(f"[bold]{s['name']}[/]  research closure ({s['format']}), written by "
              f"{s['software']}")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold cyan", no_wrap=True)
    facts.add_column()
    facts.add_row("created", s["created"])
    facts.add_row("updated", s["updated"])
    facts.add_row("content sha256", s["content_sha256"])
    kind = {"softmax": "softmax classifier", "svm": "svm classifier",
            "regression": "regression"}.get(m["kind"], m["kind"])
    facts.add_row("model", f"{kind}, input {_shape(m['input_shape'])}, "
                  f"{m['num_params']:,} parameters (sha256 {m['parameters_sha256'][:16]}…)")
    facts.add_row(f"labels ({len(s['labels'])})", _labels(s["labels"]) or "– (regression)")
    hp = "  ".join(f"{k}={v}" for k, v in o["hyperparameters"].items())
    state = ", ".join(o["state"]) or "none"
    facts.add_row("optimizer", f"{o['name']}, {o['step']:,} steps; state: {state}")
    facts.add_row("hyperparameters", hp)
    if o["custom_decay_multipliers"]:
        facts.add_row("", "custom per-parameter decay multipliers")
    budget = (f"{loop['samples_per_iteration']:,} samples per iteration"
              if loop["samples_per_iteration"] is not None else "budgets in seconds (latency)")
    seeds = ", ".join(f"{k}={v}" for k, v in loop["seeds"].items()) or "none recorded"
    facts.add_row("event loop", f"T={loop['iteration_time']:g} s, {budget}, allocation "
                  f"{loop['allocation']}, {'deterministic' if loop['deterministic'] else 'not deterministic'}"
                  f", seeds: {seeds}")
    facts.add_row("progress", f"iteration {s['iteration']:,}, parameter version "
                  f"{s['parameter_version']:,}")
    r = s.get("replay")
    if r is not None:
        span = (f"iterations {r['first_iteration']:,}–{r['last_iteration']:,}"
                if r["steps"] else "no step yet")
        facts.add_row("replay record", f"{_plural(r['steps'], 'step')} from iteration "
                      f"{r['origin_iteration']:,} ({span}), {_plural(r['shares'], 'share')}, "
                      f"order seed {r['seed']}, batch {r['max_batch']}")
    last, test = h["last"], h["last_test_error"]
    facts.add_row("last loss", "–" if last is None else
                  f"{_number(last['loss'])} (accuracy {_percent(last['accuracy'])}) at iteration "
                  f"{last['iteration']:,}; {_plural(h['points'], 'point')}")
    facts.add_row("test error", "–" if test is None else
                  f"{_percent(test['error'])} at iteration {test['iteration']:,} "
                  f"({test['samples']:,} samples); {_plural(h['test_error_points'], 'point')}")
    data = s["data"]
    if data is None:
        facts.add_row("data", "no manifest")
    else:
        for split in ("train", "test"):
            d = data[split]
            facts.add_row(f"data: {split}", _plural(d['count'], 'sample')
                          + (f" ({_counts(d['counts'])})" if d["count"] else "")
                          + (f", digest {d['digest'][:16]}…" if d["count"] else ""))
    out.print(facts)
    table = Table(title="layers", title_justify="left", show_edge=False)
    table.add_column("#", justify="right")
    table.add_column("type")
    table.add_column("output", justify="right")
    table.add_column("parameters", justify="right")
    for i, layer in enumerate(m["layers"]):
        table.add_row(str(i), layer["type"], _shape(layer["out_shape"]),
                      f"{layer['parameters']:,}" if layer["parameters"] else "")
    out.print(table)


@closure_app.command("inspect")
@cli_errors
def inspect(
    file: ClosureFile,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Summarize a closure: model, labels, optimizer, progress, data manifest, versions, times."""
    closure, _ = _read(file)
    s = summary(closure)
    if as_json:
        typer.echo(json.dumps(s, indent=2, ensure_ascii=False))
    else:
        _print_summary(s)


@closure_app.command("verify")
@cli_errors
def verify(
    file: ClosureFile,
    data: Annotated[Path | None, typer.Option(
        "--data", help="An upload-format zip (one folder per label) to compare with the "
        "closure's data manifest.", dir_okay=False)] = None,
    split: Annotated[str | None, typer.Option(
        help="Compare --data with the 'train' or 'test' data, or 'all' of it (default: "
        "whichever matches).")] = None,
) -> None:
    """Check a closure against its schema and hashes, and optionally the data manifest
    against a zip. Prints OK and exits 0, or names what is wrong and exits 1."""
    if split not in (None, "train", "test", "all"):
        raise MlitbError(f"--split must be train, test or all, got {split!r}")
    closure, d = _read(file)
    checks = [f"schema (format {d['version']})", "model parameters sha256",
              f"{len(closure.optimizer_state)} optimizer state vector(s)"]
    if closure.data is not None:
        checks.append("data manifest counts and digests")
    checks.append("content sha256" if "content_sha256" in d else
                  "no content sha256 in the file (fields were checked one by one)")
    out.print(f"OK {file}: " + ", ".join(checks))
    if data is not None:
        which: Literal["train", "test", "all"] | None = split  # type: ignore[assignment]
        try:
            match = verify_manifest(closure, data, which)
        except OSError as exc:
            raise MlitbError(f"cannot read {data}: {exc.strerror or exc}") from None
        except ClosureError as exc:
            raise ClosureError(f"{data}: {exc}") from None
        what = {"train": "training data", "test": "test data",
                "all": "training and test data together"}[match.split]
        out.print(f"OK {data}: its {match.count:,} images match the manifest's {what}")


@closure_app.command("predict")
@cli_errors
def predict(
    file: ClosureFile,
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, ...).",
                                                 dir_okay=False)],
    top: Annotated[int, typer.Option("--top", "-k", min=1,
                                     help="How many labels to show per image.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the predictions as JSON.")]
    = False,
) -> None:
    """Classify images with the closure's net; they are converted as the data server converts
    uploads (grayscale or RGB, scaled to cover the input and center-cropped)."""
    closure, _ = _read(file)
    net = closure.net()
    results = predict_images(net, images, top)
    if as_json:
        typer.echo(json.dumps([{"image": r.path,
                                "top": [{"label": k, "value": v} for k, v in r.top],
                                **({} if net.is_classifier else {"outputs": list(r.outputs)})}
                               for r in results], indent=2, ensure_ascii=False))
        return
    table = Table(show_edge=False)
    table.add_column("image", overflow="fold")
    if not net.is_classifier:
        table.add_column("outputs")
        for r in results:
            table.add_row(r.path, ", ".join(_number(v) for v in r.outputs))
    else:
        value = (lambda v: f"{100 * v:.1f}%") if net.loss_layer.type == "softmax" else _number
        for i in range(min(top, len(net.labels))):
            table.add_column(f"#{i + 1}")
        for r in results:
            table.add_row(r.path, *(f"[bold]{label}[/] {value(v)}" for label, v in r.top))
    out.print(table)




@closure_app.command("export")
@cli_errors
def export(
    file: ClosureFile,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write ('-': stdout).",
                                         dir_okay=False)],
    convnetjs: Annotated[bool, typer.Option("--convnetjs", help="ConvNetJS's Net.toJSON() "
                                            "format (net.fromJSON reads it).")] = False,
    model: Annotated[bool, typer.Option("--model", help="mlitb's model format "
                                        "(docs/formats.md).")] = False,
) -> None:
    """Write the closure's model alone, for ConvNetJS or as an mlitb model file."""
    if convnetjs == model:
        raise MlitbError("choose one of --convnetjs or --model")
    closure, _ = _read(file)
    if convnetjs:
        from ..nn import to_convnetjs

        text = json.dumps(to_convnetjs(closure.net()))
        what = "ConvNetJS Net.toJSON() (labels are not part of that format)"
    else:
        text = json.dumps(closure.model_dict(), indent=1, ensure_ascii=False)
        what = "mlitb model"
    if str(output) == "-":
        typer.echo(text)
        return
    try:
        atomic_write(output, text + "\n")
    except OSError as exc:
        raise MlitbError(f"cannot write {output}: {exc.strerror or exc}") from None
    out.print(f"wrote {output}: {what}, {closure.num_params:,} parameters")


@closure_app.command("replay")
@cli_errors
def replay_command(
    file: ClosureFile,
    data: Annotated[list[Path], typer.Option(
        "--data", help="The training data as upload zip(s) (repeatable); checked against the "
        "closure's manifest.", dir_okay=False)],
    iterations: Annotated[int | None, typer.Option(
        "--iterations", "-n", min=1, help="Replay the first N recorded steps (default: all).")]
    = None,
    keep_going: Annotated[bool, typer.Option(
        "--keep-going", help="Go on after a step that differs.")] = False,
) -> None:
    """Re-run a deterministic run from its closure, in-process, and compare the parameters
    after every step with the recorded hashes. Exit 0 if bit-identical, 1 if not."""
    from ..closure import record_of, replay, training_data

    closure, _ = _read(file)
    record = record_of(closure)
    try:
        train = training_data(closure, data)
    except OSError as exc:
        raise MlitbError(f"cannot read the data: {exc.strerror or exc}") from None
    total = len(record.steps) if iterations is None else min(iterations, len(record.steps))
    out.print(f"replaying {_plural(total, 'step')} of {len(record.steps)} recorded from "
              f"iteration {record.origin.iteration:,} ({train.images.shape[0]:,} training "
              f"samples, order seed {record.seed}, batch {record.max_batch})")
    report = replay(closure, train, iterations=iterations, keep_going=keep_going)
    if not report.checks:
        out.print("nothing to replay: the record has no step yet")
        return
    last = report.checks[-1]
    mismatch = report.first_mismatch
    if mismatch is None:
        ending = ("the closure's parameters" if report.complete
                  else f"the recorded hash after iteration {last.iteration:,}")
        out.print(f"OK {len(report.checks)} steps replayed in {report.seconds:.1f} s: "
                  f"parameters bit-identical to {ending} (sha256 {last.actual[:16]}…)")
        return
    bad = sum(not c.identical for c in report.checks)
    diff = (f"; largest difference {report.max_abs_difference:.3g}"
            if report.max_abs_difference == report.max_abs_difference
            and report.max_abs_difference else "")
    raise ClosureError(f"the parameters differ from the record at iteration "
                       f"{mismatch.iteration:,} (step {report.checks.index(mismatch) + 1}; "
                       f"sha256 {mismatch.actual[:16]}… instead of {mismatch.expected[:16]}…)"
                       f"{diff}; {bad} of {len(report.checks)} replayed steps differ")


@closure_app.command("resume")
@cli_errors
def resume(
    file: ClosureFile,
    master: Annotated[str, typer.Option("--master", "-m", envvar="MLITB_MASTER",
                                        help="The master's WebSocket URL.")]
    = "ws://127.0.0.1:8000",
    token: Annotated[str | None, typer.Option("--token", envvar="MLITB_OPERATOR_TOKEN",
                                              help="The master's operator token.")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="The new project's name (default: the closure's).")] = None,
    iteration_time: Annotated[float | None, typer.Option(
        min=MIN_ITERATION_TIME, max=MAX_ITERATION_TIME,
        help="T, seconds per iteration (default: the closure's).")] = None,
    samples_per_iteration: Annotated[int | None, typer.Option(
        min=1, help="Deterministic mode with this many samples per iteration (default: the "
        "closure's setting).")] = None,
) -> None:
    """Create a project on a master from a closure; it continues training where the closure
    stopped once it has data and trainers."""
    import trio

    from ..client import open_operator
    from ..closure import closure_from_dict
    from ..protocol import CreateProject

    closure, d = _read(file)
    project = name or closure.name

    async def main() -> dict[str, Any] | None:
        async with open_operator(master, token, need_token=True) as op:
            await op.request(CreateProject(request_id="-", name=project, closure=d,
                                           iteration_time=iteration_time,
                                           samples_per_iteration=samples_per_iteration))
            try:  # what the master's data server holds for that name now
                return await op.get_model(project, "closure")
            except MlitbError:
                return None

    now = trio.run(main)
    out.print(f"created project {project} on {master} from {file.name}: iteration "
              f"{closure.iteration:,}, parameter version {closure.parameter_version:,}, "
              f"{closure.optimizer_name}, T={iteration_time or closure.loop.iteration_time:g} s")
    theirs = closure_from_dict(now).data if now is not None else None
    mine = closure.data
    if mine is None:
        out.print("the closure has no data manifest: upload training data with "
                  f"[bold]mlitb data upload TRAIN.zip -p {project}[/]")
    elif theirs is None or theirs.train.count + theirs.test.count == 0:
        out.print(f"next: upload its data ({mine.train.count:,} training and {mine.test.count:,} "
                  f"test images in the manifest; [bold]mlitb closure verify {file} --data ZIP[/] "
                  f"checks a zip first):\n  mlitb data upload TRAIN.zip -p {project}\n"
                  f"  mlitb data upload TEST.zip -p {project} --test")
    else:
        same = [split for split in ("train", "test")
                if theirs.split(split).digest() == mine.split(split).digest()]
        if len(same) == 2:
            out.print(f"the master's data server holds the closure's data for {project} "
                      f"({mine.train.count:,} training, {mine.test.count:,} test images)")
        else:
            differ = [s for s in ("train", "test") if s not in same]
            out.print(f"[bold yellow]warning:[/] the master's data server holds other data for "
                      f"{project} than the closure's manifest ({', '.join(differ)} differ: "
                      f"{theirs.train.count:,} training and {theirs.test.count:,} test images "
                      f"there, {mine.train.count:,} and {mine.test.count:,} in the closure)")
    out.print(f"then add trainers: [bold]mlitb node join {master} --project {project}[/]")
