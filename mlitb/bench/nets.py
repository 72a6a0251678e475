"""Which CIFAR-10 net reaches a test accuracy soonest: samples to the target times cost per sample.

The time to 70% on this machine is (samples the net needs) x (seconds per sample the engine
takes), and nets trade one against the other. For each candidate (``NETS``, all within the
engine's layers: conv, max pool, fc, relu, softmax) this benchmark measures

- our engine's training cost per sample relative to the paper's net (``Net.accumulate_gradient``
  at batch 32, one thread, the two nets in alternating rounds, the process's CPU clock);
- the samples it needs for the target in PyTorch on one thread, training as a worker of the
  CIFAR-10 recipe does (``mlitb.recipes.cifar10_recipe``: Nesterov SGD at 0.015, momentum 0.95,
  weight decay 5e-4 on the weights, batch 32, 10% warmup and a cosine to 0 over the horizon,
  horizontal flips), the twin built by ``torch_model`` from the engine's own initialisation,
  evaluated on all 10,000 test images every ``--every`` samples.

The horizon is ``--samples`` for every net, or with ``--budget N`` what N samples of the paper's
net cost (``N / cost``): ``--budget 180000`` is what two nodes of this machine train of the paper's
net in 60 s, so each net then trains for what a minute gives it. PyTorch is a reference only
(``pip install torch==2.13.0``); one trainer stands for the averaged two (``mlitb/bench/recipe.py``
measures what averaging costs).

Data: ../shared/data/cifar10-{train,test}.zip (skips with a reason when missing).

    python -m mlitb.bench.nets [--nets fast,paper] [--samples 150000 | --budget 180000] [--json]
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # pragma: no cover - before numpy loads
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlitb.bench.engine import blas_info, one_thread, rate, torch_model
from mlitb.bench.train import DATA, _decode
from mlitb.datasets import CIFAR10_FAST_SPEC, CIFAR10_SPEC
from mlitb.nn import Net


def _inp() -> dict[str, Any]:
    return {"type": "input", "out_sx": 32, "out_sy": 32, "out_depth": 3}


def _conv(filters: int, sx: int = 3, stride: int = 1) -> dict[str, Any]:
    return {"type": "conv", "sx": sx, "filters": filters, "stride": stride, "pad": sx // 2,
            "activation": "relu"}


_POOL: dict[str, Any] = {"type": "pool", "sx": 2, "stride": 2}
_SOFTMAX: dict[str, Any] = {"type": "softmax", "num_classes": 10}

NETS: dict[str, list[dict[str, Any]]] = {
    "paper": CIFAR10_SPEC,  # c5x16-p-c5x20-p-c5x20-p
    "fast": CIFAR10_FAST_SPEC,  # c5/2x32-p-c3x48-p-c3x96
    "c3x16p-32p-64p": [_inp(), _conv(16), _POOL, _conv(32), _POOL, _conv(64), _POOL, _SOFTMAX],
    "c3x32p-64p-128p": [_inp(), _conv(32), _POOL, _conv(64), _POOL, _conv(128), _POOL,
                        _SOFTMAX],
    "c3/2x32-p-64-p-128-p": [_inp(), _conv(32, 3, 2), _POOL, _conv(64), _POOL, _conv(128),
                             _POOL, _SOFTMAX],
    "c5/2x24-p-48-p-96-p": [_inp(), _conv(24, 5, 2), _POOL, _conv(48), _POOL, _conv(96), _POOL,
                            _SOFTMAX],
    "c5/2x32-p-48-p-96-p": [_inp(), _conv(32, 5, 2), _POOL, _conv(48), _POOL, _conv(96), _POOL,
                            _SOFTMAX],
    "c5/2x32-p-64-p-128-p": [_inp(), _conv(32, 5, 2), _POOL, _conv(64), _POOL, _conv(128),
                             _POOL, _SOFTMAX],
    "c5/2x32-p-64-p-128": [_inp(), _conv(32, 5, 2), _POOL, _conv(64), _POOL, _conv(128),
                           _SOFTMAX],
}
"""Candidates by name: c5/2x32 is a 5x5 conv of 32 filters at stride 2, p a 2x2 max pool; every
conv pads to keep its size and is followed by a relu; the softmax has its fc layer."""


def macs(net: Net) -> int:
    """Multiply-adds of one sample's forward pass (conv and fc layers)."""
    total = 0
    for layer in net.layers:
        if layer.definition["type"] in ("conv", "fc"):
            total += int(np.prod(layer.out_shape)) * int(np.prod(layer.params[0].shape[1:]))
    return total


def engine_cost(spec: list[dict[str, Any]], rounds: int = 5, seconds: float = 1.0,
                batch: int = 32) -> float:
    """Our engine's CPU seconds per training sample of ``spec`` over the paper net's, median of
    ``rounds`` alternating rounds."""
    rng = np.random.default_rng(0)
    steps = []
    for s in (CIFAR10_SPEC, spec):
        net = Net(s, seed=0)
        x = rng.standard_normal((batch, *net.input_shape), dtype=np.float32)
        y = rng.integers(0, net.num_outputs, batch)

        def step(net: Net = net, x: np.ndarray = x, y: np.ndarray = y) -> None:
            net.zero_grads()
            net.accumulate_gradient(x, y)

        rate(step, batch, 0.3, time.process_time)  # warm up
        steps.append(step)
    ratios = []
    for _ in range(rounds):
        ref = rate(steps[0], batch, seconds, time.process_time)
        ratios.append(ref / rate(steps[1], batch, seconds, time.process_time))
    return statistics.median(ratios)


def samples_to(spec: list[dict[str, Any]], horizon: int, train: tuple[np.ndarray, np.ndarray],
               test: tuple[np.ndarray, np.ndarray], target: float, every: int, stop: bool,
               seed: int = 0, log: Any = sys.stderr, name: str = "") -> dict[str, Any]:
    """Train the PyTorch twin of ``spec`` as a recipe worker does, for ``horizon`` samples (or
    until ``target`` with ``stop``); the test curve every ``every`` samples."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = torch_model(Net(spec, seed=seed))
    weights = [p for p in model.parameters() if p.dim() > 1]
    biases = [p for p in model.parameters() if p.dim() <= 1]
    peak, batch = 0.015, 32
    opt = torch.optim.SGD([{"params": weights, "weight_decay": 5e-4},
                           {"params": biases, "weight_decay": 0.0}],
                          lr=peak, momentum=0.95, nesterov=True)
    x_train = torch.from_numpy(train[0].astype(np.float32) / 255.0 - 0.5)
    y_train = torch.from_numpy(train[1])
    x_test = torch.from_numpy(test[0].astype(np.float32) / 255.0 - 0.5)
    y_test = torch.from_numpy(test[1])

    def accuracy() -> float:
        with torch.no_grad():
            correct = sum(int((model(x_test[i:i + 1000]).argmax(1) == y_test[i:i + 1000]).sum())
                          for i in range(0, len(y_test), 1000))
        return correct / len(y_test)

    seen, pos, hit, seconds = 0, 0, None, 0.0
    order = rng.permutation(len(y_train))
    curve: list[tuple[int, float]] = []
    while seen < horizon:
        if pos + batch > len(order):
            order, pos = rng.permutation(len(y_train)), 0
        idx = torch.from_numpy(order[pos:pos + batch])
        pos += batch
        tick = time.perf_counter()
        frac = seen / horizon
        lr = peak * (frac / 0.1 if frac < 0.1
                     else 0.5 * (1 + math.cos(math.pi * (frac - 0.1) / 0.9)))
        for group in opt.param_groups:
            group["lr"] = lr
        flip = torch.from_numpy(rng.random(batch) < 0.5)
        xb = torch.where(flip[:, None, None, None], x_train[idx].flip(3), x_train[idx])
        opt.zero_grad()
        F.cross_entropy(model(xb), y_train[idx]).backward()
        opt.step()
        seconds += time.perf_counter() - tick
        seen += batch
        if seen % every < batch or seen >= horizon:
            curve.append((seen, accuracy()))
            print(f"  {name} {seen:8,} samples  test accuracy {curve[-1][1]:.1%}", file=log,
                  flush=True)
            if hit is None and curve[-1][1] >= target:
                hit = seen
                if stop:
                    break
    return {"horizon": horizon, "samples_to_target": hit, "best": max(a for _, a in curve),
            "final": curve[-1][1], "curve": curve, "torch_us_per_sample": 1e6 * seconds / seen}


def run(names: Sequence[str], samples: int = 150_000, budget: int | None = None,
        target: float = 0.7, every: int = 10_000, stop: bool = True,
        log: Any = sys.stderr) -> dict[str, Any]:
    train_zip, test_zip = DATA / "cifar10-train.zip", DATA / "cifar10-test.zip"
    if not (train_zip.exists() and test_zip.exists()):
        return {"skipped": f"no CIFAR-10 zips in {DATA}"}
    out: dict[str, Any] = {"target": target, "budget": budget, "nets": {}}
    with one_thread():
        out["blas"] = blas_info()
        print("measuring the engine's cost per sample", file=log, flush=True)
        costs = {n: (1.0 if n == "paper" else engine_cost(NETS[n])) for n in names}
        train, test = _decode(train_zip), _decode(test_zip)
        for n in names:
            net = Net(NETS[n])
            horizon = samples if budget is None else int(budget / costs[n])
            print(f"{n}: cost x{costs[n]:.2f}, {horizon:,} samples", file=log, flush=True)
            r = samples_to(NETS[n], horizon, train, test, target, every, stop and budget is None,
                           log=log, name=n)
            hit = r["samples_to_target"]
            out["nets"][n] = {"params": net.num_params, "macs": macs(net),
                              "engine_cost": costs[n], **r,
                              "paper_samples_to_target": hit * costs[n] if hit else None}
    return out


def _print(result: dict[str, Any]) -> None:
    if "skipped" in result:
        print(f"skipped: {result['skipped']}")
        return
    t = result["target"]
    print(f"\n{'net':<22} {'params':>8} {'MACs':>6} {'cost':>5} {'horizon':>8} "
          f"{'to ' + format(t, '.0%'):>8} {'x cost':>8} {'best':>6}")
    for n, r in result["nets"].items():
        hit, paper = r["samples_to_target"], r["paper_samples_to_target"]
        print(f"{n:<22} {r['params']:>8,} {r['macs'] / 1e6:>5.2f}M {r['engine_cost']:>5.2f} "
              f"{r['horizon']:>8,} {'-' if hit is None else format(hit, ','):>8} "
              f"{'-' if paper is None else format(round(paper), ','):>8} {r['best']:>6.1%}")
    print("cost: our engine's seconds per training sample over the paper net's (batch 32, one "
          "thread);\nx cost: samples to the target times cost, in samples of the paper's net")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--nets", default="paper,fast",
                        help=f"comma-separated, from {', '.join(NETS)} (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=150_000,
                        help="the schedule's horizon for every net (default: %(default)s)")
    parser.add_argument("--budget", type=int, default=None,
                        help="instead: samples of the paper's net; each net trains for what "
                             "they cost (e.g. 180000, a minute of two nodes here)")
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--every", type=int, default=10_000, help="samples between evaluations")
    parser.add_argument("--no-stop", action="store_true", help="train to the horizon")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.nets.split(",") if n.strip()]
    bad = [n for n in names if n not in NETS]
    if bad or not names:
        parser.error(f"--nets: unknown {', '.join(bad) or '(none)'}; choose from "
                     f"{', '.join(NETS)}")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("skipped: PyTorch is not installed (pip install torch==2.13.0)")
        return 0
    result = run(names, args.samples, args.budget, args.target, args.every, not args.no_stop)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
