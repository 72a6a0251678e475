"""``mlitb closure ...``: inspect, verify, predict with and export research closures.

``closure resume`` (which needs a master) is not here yet.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from ._cli_common import cli_errors
from .closure import (
    Closure,
    closure_from_dict,
    parse_closure_json,
    predict_images,
    summary,
    verify_manifest,
)
from .errors import ClosureError, MlitbError

closure_app = typer.Typer(
    help="Inspect, verify, predict with and export research closures (one JSON file holding a "
    "model, its training state, a data manifest and the metric history).",
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


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        from .nn import to_convnetjs

        text = json.dumps(to_convnetjs(closure.net()))
        what = "ConvNetJS Net.toJSON() (labels are not part of that format)"
    else:
        text = json.dumps(closure.model_dict(), indent=1, ensure_ascii=False)
        what = "mlitb model"
    if str(output) == "-":
        typer.echo(text)
        return
    try:
        _write_text(output, text + "\n")
    except OSError as exc:
        raise MlitbError(f"cannot write {output}: {exc.strerror or exc}") from None
    out.print(f"wrote {output}: {what}, {closure.num_params:,} parameters")
