"""``mlitb bench``: the benchmarks of mlitb/bench/, runnable from an installed package."""

from __future__ import annotations

from typing import Annotated

import typer

bench_app = typer.Typer(help="Measure speed: figures and ratios to a reference in the same run.",
                        no_args_is_help=True)


def _node_counts(nodes: str) -> list[int]:
    """``--nodes``: comma-separated counts, each at least 1."""
    try:
        counts = [int(n) for n in nodes.split(",") if n.strip()]
    except ValueError:
        raise typer.BadParameter("comma-separated integers", param_hint="--nodes") from None
    if not counts or min(counts) < 1:
        raise typer.BadParameter("at least one node count >= 1", param_hint="--nodes")
    return counts


@bench_app.command()
def engine(
    batch_sizes: Annotated[str, typer.Option(
        help="Comma-separated batch sizes to measure.")] = "1,32",
    seconds: Annotated[float, typer.Option(
        min=0.01, help="Seconds per measurement (one engine, one batch size, one round).")] = 1.0,
    rounds: Annotated[int, typer.Option(
        min=1, help="Alternating rounds per engine and batch size; the best one counts.")] = 5,
    torch: Annotated[bool, typer.Option(
        "--torch/--no-torch", help="Measure PyTorch too, when it is installed.")] = True,
    clock: Annotated[str, typer.Option(
        help="wall: elapsed time; cpu: the process's CPU time, which other programs on a busy "
             "machine disturb less.")] = "wall",
    json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Training samples/s of the CIFAR-10 demo net on one thread, ours against PyTorch."""
    from mlitb.bench import engine as bench_engine

    try:
        sizes = bench_engine.parse_batch_sizes(batch_sizes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--batch-sizes") from None
    if clock not in bench_engine.CLOCKS:
        raise typer.BadParameter(f"one of {', '.join(bench_engine.CLOCKS)}", param_hint="--clock")
    bench_engine.run(sizes, seconds, rounds, as_json=json, with_torch=torch, clock=clock)


@bench_app.command()
def loop(
    iterations: Annotated[int, typer.Option(min=1, help="Iterations measured per setting.")] = 6,
    simulated: Annotated[str, typer.Option(
        help="Comma-separated counts of simulated workers for the master's round figures "
        "(empty: skip).")] = "100,250,500,1000",
    nodes: Annotated[str, typer.Option(help="Comma-separated node counts.")] = "1,2",
    json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Loop throughput with local nodes and the master's round cost with simulated workers."""
    from mlitb.bench import loop as bench_loop

    counts = _node_counts(nodes)
    try:
        workers = [int(n) for n in simulated.split(",") if n.strip()]
    except ValueError:
        raise typer.BadParameter("comma-separated integers", param_hint="--simulated") \
            from None
    if any(n < 1 for n in workers):
        raise typer.BadParameter("counts >= 1", param_hint="--simulated")
    bench_loop.run(iterations, workers, counts, as_json=json)


@bench_app.command()
def train(
    nodes: Annotated[str, typer.Option(
        help="Comma-separated node counts; the first two give the speedup.")] = "2,1",
    seconds: Annotated[float, typer.Option(
        min=5.0, max=3600.0, help="Training time of each run (the schedule's horizon).")] = 60.0,
    target: Annotated[float, typer.Option(min=0.01, max=1.0,
                                          help="The test accuracy to time.")] = 0.7,
    algorithm: Annotated[str, typer.Option(help="local (the demo's recipe) or gradient "
                                                "(the paper's AdaGrad recipe).")] = "local",
    torch: Annotated[bool, typer.Option(
        "--torch/--no-torch", help="Run PyTorch on one thread too, when it is installed.")]
    = True,
    torch_seconds: Annotated[float, typer.Option(min=5.0, max=3600.0,
                                                 help="PyTorch's training time.")] = 120.0,
    json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    net: Annotated[str, typer.Option(help="fast (the demo's net) or paper (the paper's "
                                          "ConvNetJS net).")] = "fast",
    wire: Annotated[str, typer.Option(
        help="Comma-separated wire kinds (training.wire): float32, float16, int8; each node "
        "count runs once per kind, with its bytes per round.")] = "float32",
) -> None:
    """Time to a CIFAR-10 test accuracy through master, data server and local nodes."""
    from mlitb.bench import train as bench_train

    counts = _node_counts(nodes)
    try:
        wires = bench_train.wire_kinds(wire)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--wire") from None
    if algorithm not in ("local", "gradient"):
        raise typer.BadParameter("local or gradient", param_hint="--algorithm")
    if net not in ("fast", "paper"):
        raise typer.BadParameter("fast or paper", param_hint="--net")
    bench_train.run(counts, seconds, target, algorithm, torch, torch_seconds, json, net, wires)


@bench_app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                     "help_option_names": []})
def browser(ctx: typer.Context) -> None:
    """The JS engine in headless Chromium next to ConvNetJS 0.3 and numpy (its own --help)."""
    from mlitb.bench import browser as bench_browser

    raise typer.Exit(bench_browser.main(ctx.args))


@bench_app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                     "help_option_names": []})
def recipe(ctx: typer.Context) -> None:
    """What each ingredient of the CIFAR-10 recipe buys, in samples (its own --help)."""
    from mlitb.bench import recipe as bench_recipe

    raise typer.Exit(bench_recipe.main(ctx.args))


@bench_app.command()
def protocol(
    seconds: Annotated[float, typer.Option(
        min=0.001, max=60, help="Seconds per figure (the best of three runs counts).")] = 0.3,
    json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Encode and decode cost per protocol message, next to plain json on the same text."""
    from mlitb.bench import protocol as bench_protocol

    bench_protocol.run(seconds, as_json=json)


@bench_app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                     "help_option_names": []})
def nets(ctx: typer.Context) -> None:
    """Which CIFAR-10 net reaches 70% soonest: samples x cost per sample (its own --help)."""
    from mlitb.bench import nets as bench_nets

    raise typer.Exit(bench_nets.main(ctx.args))


@bench_app.command()
def closure(
    seconds: Annotated[float, typer.Option(
        min=0.001, max=60, help="Seconds per figure (the best of three runs counts).")] = 0.5,
    json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Schema check and RFC 8785 form of a closure, next to the hand-written code they replaced."""
    from mlitb.bench import closure as bench_closure

    bench_closure.run(seconds, as_json=json)
