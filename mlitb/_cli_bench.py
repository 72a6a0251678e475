"""``mlitb bench``: the benchmarks of bench/, runnable from an installed package."""

from __future__ import annotations

import typer

bench_app = typer.Typer(help="Measure speed: figures and ratios to a reference in the same run.",
                        no_args_is_help=True)
