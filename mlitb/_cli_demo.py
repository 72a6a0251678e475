"""``mlitb demo``: the README's main job.

Until the master, data server and nodes land, the demo runs the same algorithm in one process: each
iteration sums the gradients of a batch, divides by its size and lets the optimizer step, exactly
as the master will with its workers' results.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ._cli_common import cli_errors
from .errors import MlitbError


def _status(rows: list[tuple[str, str]]) -> Table:
    table = Table(title="mlitb demo: digits", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right", min_width=10)
    for key, value in rows:
        table.add_row(key, value)
    return table


def register_demo(app: typer.Typer) -> None:
    @app.command()
    @cli_errors
    def demo(
        minutes: Annotated[float, typer.Option(min=0.05, max=600,
                                               help="Stop after this many minutes.")] = 2.0,
        target: Annotated[float, typer.Option(min=0.0, max=1.0,
                                              help="Stop at this test accuracy.")] = 0.95,
        output: Annotated[Path, typer.Option("--output", "-o",
                                             help="Where to save the model JSON.")] =
        Path("mlitb-demo-model.json"),
        optimizer: Annotated[str, typer.Option(help="sgd, nesterov, adagrad, adadelta or adam.")]
        = "adagrad",
        learning_rate: Annotated[float, typer.Option(min=0.0)] = 0.05,
        batch: Annotated[int, typer.Option(min=1, max=4096,
                                           help="Samples averaged per step.")] = 32,
        seed: Annotated[int, typer.Option(help="Seed of the split, init and order.")] = 0,
    ) -> None:
        """Train a small conv net on scikit-learn's bundled digits and save the model."""
        from .datasets import DIGITS_SPEC, digits, to_input
        from .nn import Net, save_model
        from .optim import make_optimizer

        out = Console()
        train, test, labels = digits(seed=seed)
        x_train, x_test = to_input(train.images), to_input(test.images)
        net = Net(DIGITS_SPEC, seed=seed, labels=labels)
        l1_mul, l2_mul = net.decay_multipliers()
        opt = make_optimizer(optimizer, net.num_params, learning_rate=learning_rate,
                             l2_decay=1e-4, l1_mul=l1_mul, l2_mul=l2_mul)
        rng = np.random.default_rng(seed)
        out.print(f"{len(train.labels)} training and {len(test.labels)} test images, "
                  f"{net.num_params} parameters, {optimizer} lr {learning_rate}, batch {batch}")
        start, deadline = time.monotonic(), time.monotonic() + minutes * 60
        iteration = epoch = 0
        accuracy, loss_avg = 0.0, float("nan")
        with Live(_status([]), console=out, refresh_per_second=4, transient=False) as live:
            while accuracy < target and time.monotonic() < deadline:
                order = rng.permutation(len(train.labels))
                loss_sum = count = 0.0
                for i in range(0, len(order), batch):
                    idx = order[i:i + batch]
                    net.zero_grads()
                    stats = net.accumulate_gradient(x_train[idx], train.labels[idx])
                    opt.step(net.params, net.grads / stats.count)
                    loss_sum, count = loss_sum + stats.loss, count + stats.count
                    iteration += 1
                epoch += 1
                loss_avg = loss_sum / count
                accuracy = net.evaluate(x_test, test.labels).correct / len(test.labels)
                live.update(_status([
                    ("iteration", str(iteration)),
                    ("epoch", str(epoch)),
                    ("training loss", f"{loss_avg:.4f}"),
                    ("test accuracy", f"{accuracy:.1%}"),
                    ("elapsed", f"{time.monotonic() - start:.1f} s"),
                ]))
        out.print()
        try:
            save_model(net, output)
        except OSError as exc:
            raise MlitbError(f"cannot save the model to {output}: {exc.strerror}") from None
        reached = "reached" if accuracy >= target else "did not reach"
        out.print(f"{reached} the target {target:.0%}: test accuracy {accuracy:.1%} after "
                  f"{epoch} epochs ({iteration} iterations)")
        out.print(f"model saved to {output}")
