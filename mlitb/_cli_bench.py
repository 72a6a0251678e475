"""``mlitb bench``: the benchmarks of bench/, runnable from an installed package."""

from __future__ import annotations

from typing import Annotated

import typer

bench_app = typer.Typer(help="Measure speed: figures and ratios to a reference in the same run.",
                        no_args_is_help=True)


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
