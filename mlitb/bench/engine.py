"""Training speed of the numpy engine against PyTorch, on one thread, in the same run.

Measures samples/s of a training step (forward + backward, i.e. ``Net.accumulate_gradient``) of the
CIFAR-10 demo net at a few batch sizes and, when PyTorch is installed, the same figure for the same
net in PyTorch (float32, ``torch.set_num_threads(1)``, forward + backward + ``zero_grad``), and the
ratio ours/PyTorch. The machine is shared and noisy, so the two engines are measured in alternating
rounds and each reports its best round; only the ratio is meant to travel between machines.

Run ``python -m mlitb.bench.engine --help`` or ``mlitb bench engine --help``.

BLAS threads are pinned to one with threadpoolctl (a dependency of scikit-learn, so normally
present); without it, running this file as a script sets the usual thread variables before numpy
loads. ``OPENBLAS_CORETYPE`` forces OpenBLAS's kernel for a given core (some hosts set it for old
builds), which can slow a current numpy: the output says which kernel numpy really runs.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # pragma: no cover - only when run as a script, before numpy loads
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mlitb.datasets import CIFAR10_SPEC
from mlitb.nn import Net

DEMO_NET = CIFAR10_SPEC  # the CIFAR-10 demo net of the paper (22,466 parameters)


# -- the PyTorch twin of a Net ---------------------------------------------------------------------
def torch_model(net: Net) -> Any:
    """A ``torch.nn.Sequential`` computing what ``net`` computes, with a copy of its parameters.

    The loss layer becomes nothing: the model returns the loss layer's *input* (for softmax, the
    logits), so the caller picks the matching torch loss. Supports the layers a conv net for
    images uses: conv, pool, fc, relu, sigmoid, tanh.
    """
    import torch
    from torch import nn

    modules: list[Any] = []
    flat = False
    for layer in net.layers[1:-1]:
        d = layer.definition
        kind = d["type"]
        if kind == "conv":
            conv = nn.Conv2d(layer.in_shape[0], d["filters"], (d["sy"], d["sx"]),
                             stride=d["stride"], padding=d["pad"])
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(layer.params[0]))
                conv.bias.copy_(torch.from_numpy(layer.params[1]))  # type: ignore[union-attr]
            modules.append(conv)
        elif kind == "pool":
            # Padding never wins in ConvNetJS; torch pads max-pooling with -inf: the same.
            modules.append(nn.MaxPool2d((d["sy"], d["sx"]), stride=d["stride"], padding=d["pad"]))
        elif kind == "fc":
            if not flat:
                modules.append(nn.Flatten())  # (N, C, H, W) -> (N, C*H*W): fc's input order
                flat = True
            fc = nn.Linear(layer.params[0].shape[1], layer.params[0].shape[0])
            with torch.no_grad():
                fc.weight.copy_(torch.from_numpy(layer.params[0]))
                fc.bias.copy_(torch.from_numpy(layer.params[1]))
            modules.append(fc)
        elif kind in ("relu", "sigmoid", "tanh"):
            modules.append({"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[kind]())
        else:
            raise NotImplementedError(f"no PyTorch twin for a {kind} layer")
    return nn.Sequential(*modules)


def torch_loss(net: Net, out: Any, y: Any) -> Any:
    """The summed loss of ``net``'s loss layer in torch, over the model's output ``out``."""
    import torch.nn.functional as F

    kind = net.loss_layer.type
    if kind == "softmax":
        return F.cross_entropy(out, y, reduction="sum")
    if kind == "svm":
        return F.multi_margin_loss(out, y, margin=1.0, reduction="sum") * out.shape[1]
    if kind == "regression":
        return 0.5 * ((out - y) ** 2).sum()
    raise NotImplementedError(kind)


# -- environment facts -----------------------------------------------------------------------------
@contextlib.contextmanager
def one_thread() -> Iterator[str]:
    """Pin numpy's BLAS (and torch) to one thread; yields how it was done."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        how = "env vars (threadpoolctl missing)"
        if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
            how = "NOT pinned: install threadpoolctl or run mlitb/bench/engine.py as a script"
        yield how
        return
    with threadpool_limits(limits=1):
        yield "threadpoolctl"


def blas_info() -> dict[str, Any]:
    """Which BLAS numpy calls, its kernel (core type) and thread count, as threadpoolctl sees them."""
    info: dict[str, Any] = {
        "numpy": np.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        info["blas"] = "unknown (threadpoolctl missing)"
        return info
    for pool in threadpool_info():
        if pool.get("user_api") == "blas" and "numpy" in pool.get("filepath", ""):
            info["blas"] = f"{pool.get('internal_api')} {pool.get('version')}"
            info["core_type"] = pool.get("architecture")
            info["blas_threads"] = pool.get("num_threads")
    return info


def torch_module() -> Any | None:
    try:
        import torch
    except ImportError:
        return None
    return torch


# -- measurement -----------------------------------------------------------------------------------
@dataclass
class Row:
    batch: int
    ours: float  # best samples/s
    ours_rounds: list[float] = field(default_factory=list)
    torch: float | None = None
    torch_rounds: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        return self.ours / self.torch if self.torch else None

    @property
    def median_ratio(self) -> float | None:
        """Median over rounds of ours/torch measured back to back: a check on the best-of ratio."""
        if not self.torch_rounds:
            return None
        return statistics.median(o / t for o, t in zip(self.ours_rounds, self.torch_rounds))


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def rate(step: Callable[[], None], batch: int, seconds: float,
         clock: Callable[[], float] = time.perf_counter) -> float:
    """Samples/s of ``step`` (one batch each) run back to back for about ``seconds`` of ``clock``."""
    steps = 0
    start = clock()
    while True:
        step()
        steps += 1
        elapsed = clock() - start
        if elapsed >= seconds:
            return steps * batch / elapsed


def make_steps(batch: int, seed: int = 0,
               with_torch: bool = True) -> tuple[Callable[[], None], Callable[[], None] | None]:
    """One training step of our engine and of PyTorch's twin, on the same data and weights."""
    rng = np.random.default_rng(seed)
    net = Net(DEMO_NET, seed=seed)
    x = rng.standard_normal((batch, *net.input_shape), dtype=np.float32)
    y = rng.integers(0, net.num_outputs, batch)

    def ours() -> None:
        net.zero_grads()
        net.accumulate_gradient(x, y)

    torch = torch_module() if with_torch else None
    if torch is None:
        return ours, None
    model = torch_model(net)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def theirs() -> None:
        loss = torch_loss(net, model(tx), ty)
        loss.backward()
        model.zero_grad()

    return ours, theirs


def measure(batch_sizes: Sequence[int], seconds: float, rounds: int, with_torch: bool = True,
            progress: Callable[[str], None] | None = None, clock: str = "wall") -> list[Row]:
    torch = torch_module() if with_torch else None
    if torch is not None:
        torch.set_num_threads(1)
    rows = []
    for batch in batch_sizes:
        ours, theirs = make_steps(batch, with_torch=torch is not None)
        # Warm up: caches, allocator, OpenBLAS buffers, torch's first-call dispatch.
        tick = CLOCKS[clock]
        rate(ours, batch, min(0.5, seconds), tick)
        if theirs is not None:
            rate(theirs, batch, min(0.5, seconds), tick)
        row = Row(batch=batch, ours=0.0)
        for r in range(rounds):
            if progress:
                progress(f"batch {batch}: round {r + 1}/{rounds}")
            # Alternate which engine goes first so a slow spell of the box hurts both alike.
            order = [("ours", ours), ("torch", theirs)]
            if r % 2:
                order.reverse()
            for name, step in order:
                if step is None:
                    continue
                (row.ours_rounds if name == "ours" else row.torch_rounds).append(
                    rate(step, batch, seconds, tick))
        row.ours = max(row.ours_rounds)
        row.torch = max(row.torch_rounds) if row.torch_rounds else None
        rows.append(row)
    return rows


# -- reporting -------------------------------------------------------------------------------------
def report(rows: list[Row], env: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out = {"env": env, "rows": [
            {**asdict(r), "ratio": r.ratio, "median_ratio": r.median_ratio} for r in rows]}
        print(json.dumps(out, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    per = "CPU second" if env["clock"] == "cpu" else "s"
    table = Table(title=f"Training samples/{per}, CIFAR-10 demo net, one thread (best of "
                        f"{env['rounds']} rounds of {env['seconds']:g} s)")
    table.add_column("batch", justify="right")
    table.add_column("mlitb.nn", justify="right")
    table.add_column("PyTorch", justify="right")
    table.add_column("ours / PyTorch", justify="right")
    table.add_column("median round ratio", justify="right")
    for r in rows:
        table.add_row(str(r.batch), f"{r.ours:,.0f}",
                      "-" if r.torch is None else f"{r.torch:,.0f}",
                      "-" if r.ratio is None else f"{r.ratio:.2f}",
                      "-" if r.median_ratio is None else f"{r.median_ratio:.2f}")
    console.print(table)
    blas = (f"numpy {env['numpy']} with {env.get('blas', '?')}, core type "
            f"{env.get('core_type', '?')}, {env.get('blas_threads', '?')} BLAS thread(s) "
            f"({env['pinned_by']})")
    console.print(blas, highlight=False)
    if env.get("torch"):
        console.print(f"torch {env['torch']}, {env['torch_threads']} thread(s)", highlight=False)
    else:
        console.print("PyTorch " + ("skipped" if env.get("torch_skipped") else "not installed")
                      + ": no reference figures", highlight=False)
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if env.get(var):
            console.print(f"[yellow]{var}={env[var]} is set: it can slow numpy's BLAS; unset it "
                          "in this command alone to measure the default kernel[/]")


def run(batch_sizes: Sequence[int] = (1, 32), seconds: float = 1.0, rounds: int = 5,
        as_json: bool = False, with_torch: bool = True, clock: str = "wall") -> list[Row]:
    """Measure and print; what ``mlitb bench engine`` and ``python -m mlitb.bench.engine`` call."""
    with one_thread() as how:
        env = blas_info()
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
        env.update(pinned_by=how, seconds=seconds, rounds=rounds, cpus=os.cpu_count(),
                   clock=clock)
        torch = torch_module() if with_torch else None
        env["torch"] = torch.__version__ if torch is not None else None
        env["torch_skipped"] = not with_torch
        show_progress = not as_json and sys.stderr.isatty()

        def progress(msg: str) -> None:
            print(f"\r{msg}   ", end="", file=sys.stderr, flush=True)

        rows = measure(batch_sizes, seconds, rounds, with_torch=with_torch,
                       progress=progress if show_progress else None, clock=clock)
        if show_progress:
            print("\r" + " " * 40 + "\r", end="", file=sys.stderr)
        if torch is not None:
            env["torch_threads"] = torch.get_num_threads()
        env.update(blas_info())  # the thread count as it was while measuring
    report(rows, env, as_json)
    return rows


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"batch sizes must be positive integers, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated (default 1,32)")
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement (default 1)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating rounds per engine and batch size; best counts (default 5)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time (default), or the process's CPU time, which other "
                             "programs on a busy machine disturb less")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        sizes = parse_batch_sizes(args.batch_sizes)
    except ValueError as exc:
        parser.error(str(exc))
    run(sizes, args.seconds, args.rounds, args.json, with_torch=not args.no_torch,
        clock=args.clock)


if __name__ == "__main__":
    main()
