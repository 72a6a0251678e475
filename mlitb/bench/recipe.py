"""What each ingredient of a training recipe buys, in samples rather than seconds.

``mlitb/bench/train.py`` measures the real system against the clock, where a busy machine moves the
figures by several points. This benchmark takes the clock out: simulated trainers drive a real
``Project`` (the master's functional core: allocation, work orders, the schedule, the reduce and
the outer optimizer) with a simulated clock, each computing what a node computes
(``training._compute``) on exactly ``--round-samples`` samples per round, drawn from its passes over
its share as a node draws them (``training.Passes``, seeded). A minute of the real system on
this 2-core machine is ~60 s of 2 trainers at ~1,400 samples/s each with the paper's net
(``--net paper``) and ~2,800 with the demo's (``--net fast``, the default: it costs half as much
per sample), so the defaults stand for it; the test accuracy it prints is on all 10,000 test
images.
Same arguments, same figures, whatever else the machine is doing.

Variants (``--variants``, comma-separated; each one run after the other, the recipe's first):

    recipe      the demo's CIFAR-10 recipe (``mlitb.recipes.cifar10_recipe``)
    previous    the recipe before: momentum 0.9 at learning rate 0.03, T = 1 s
    constant    the recipe without its schedule (no warmup, no decay)
    no-flip     the recipe without horizontal flips
    one         the recipe on one trainer with twice the samples per round (no averaging)
    paper       the paper's algorithm: AdaGrad 0.01 on the averaged gradient, T = 1 s

Data: ../shared/data/cifar10-{train,test}.zip (skips with a reason when missing).

    python -m mlitb.bench.recipe [--variants recipe,previous] [--rounds 60] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlitb.bench.engine import blas_info, one_thread
from mlitb.bench.train import DATA, Recipe, _accuracy, _decode
from mlitb.datasets import CIFAR10_NETS

VARIANTS = ("recipe", "previous", "constant", "no-flip", "one", "paper")
PER_SECOND = {"paper": 1400, "fast": 2800}
"""Samples one trainer computes per second of T (a node beside another on this machine), by
net: the demo's net costs less per sample than the paper's (docs/performance.md)."""


@dataclass(frozen=True)
class Setup(Recipe):
    """One variant: the project's recipe and how many trainers share the rounds."""

    trainers: int = 2


def setup(variant: str, seconds: float, trainers: int, net: str = "fast") -> Setup:
    """The recipe of ``variant`` for a run of ``seconds`` of simulated time, training ``net``
    (a name of ``mlitb.datasets.CIFAR10_NETS``)."""
    from mlitb.recipes import cifar10_recipe

    if variant == "paper":
        optimizer, hp, training, t = cifar10_recipe("gradient", seconds, net=net)
        return Setup(optimizer, hp, training, t, net, trainers)
    optimizer, hp, training, t = cifar10_recipe("local", seconds, net=net)
    if variant == "previous":
        hp = {**hp, "learning_rate": 0.03, "momentum": 0.9}
        t = 1.0
    elif variant == "constant":
        training = dataclasses.replace(training, schedule="constant", horizon=None)
    elif variant == "no-flip":
        training = dataclasses.replace(training, flip=False)
    elif variant == "one":
        trainers = 1
    elif variant != "recipe":
        raise ValueError(f"variant: one of {', '.join(VARIANTS)}, got {variant!r}")
    return Setup(optimizer, hp, training, t, net, trainers)


def run_variant(s: Setup, seconds: float, per_second: int,
                train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                points: int, log: Any) -> dict[str, Any]:
    """Train ``s`` for ``seconds`` of simulated time; the test accuracy at ``points`` points."""
    from mlitb.nn import Net
    from mlitb.optim import make_optimizer
    from mlitb.protocol import ResultFrame, ResultKind
    from mlitb.training import (
        CacheView,
        Member,
        Passes,
        Project,
        compute_gradient,
        compute_local,
        make_inner,
    )

    images, labels = train
    net = Net(s.spec, seed=0)
    optimizer = make_optimizer(s.optimizer, net.num_params, **s.hyperparameters)
    project = Project("recipe", net, optimizer, s.optimizer, s.iteration_time,
                      training=s.training)
    project.add_data("train", list(range(len(labels))))
    # One trainer alone computes what all the others would have: the same samples per round.
    round_samples = int(per_second * s.iteration_time * (2 if s.trainers == 1 else 1))
    local = s.training.algorithm == "local"
    workers = {w: Net(s.spec, seed=0) for w in range(s.trainers)}
    inner = {w: make_inner(s.optimizer, s.hyperparameters, n) for w, n in workers.items()}
    # Each trainer's passes over its share, kept between rounds as a node keeps them.
    passes = {w: Passes(np.random.default_rng([0, w])) for w in workers}
    for w in workers:
        project.add_member(Member(w, "trainer", "node", "sim"))
    project.admit_pending()
    ids = np.arange(len(labels), dtype=np.int64)
    rounds = max(1, round(seconds / s.iteration_time))
    marks = {round(rounds * (i + 1) / points) for i in range(points)}
    curve: list[tuple[int, float]] = []
    now, tick = 0.0, time.perf_counter()
    for r in range(rounds):
        it = project.plan_iteration(now)
        it.sent_at = now
        for w, order in it.orders.items():
            rows = np.sort(np.fromiter(project.allocator.allocation_of(w), np.int64))
            view = CacheView(images=images, labels=labels, ids=ids, rows=rows.astype(np.intp))
            worker = workers[w]
            worker.params = project.net.params.copy()
            if local:
                assert order.learning_rate is not None
                result = compute_local(worker, view, inner[w], learning_rate=order.learning_rate,
                                       batch_size=s.training.batch_size, samples=round_samples,
                                       seed=w, iteration=it.number, shift=s.training.shift,
                                       flip=s.training.flip, passes=passes[w])
            else:
                result = compute_gradient(worker, view, samples=round_samples, seed=w,
                                          iteration=it.number, shift=s.training.shift,
                                          flip=s.training.flip, passes=passes[w])
            frame = ResultFrame(
                parameter_version=it.parameter_version,
                kind=ResultKind.PARAMETER_DELTA if local else ResultKind.GRADIENT_SUM,
                samples=result.samples, correct=result.correct, loss_sum=result.loss_sum,
                compute_seconds=s.iteration_time * 0.9, vector=result.vector, steps=result.steps)
            refused = project.accept_result(w, frame, now + s.iteration_time * 0.95)
            assert refused is None, refused
        project.finish_iteration(now + s.iteration_time)
        project.admit_pending()
        now += s.iteration_time
        if r + 1 in marks:
            curve.append((project.samples_trained, _accuracy(project.net.params, *test, s.spec)))
            print(f"  {r + 1:4d} rounds  {project.samples_trained:8,} samples  "
                  f"test accuracy {curve[-1][1]:.1%}", file=log, flush=True)
    return {"net": s.net, "samples": project.samples_trained, "rounds": rounds, "trainers": s.trainers,
            "optimizer": s.optimizer, "hyperparameters": s.hyperparameters,
            "training": dataclasses.asdict(s.training), "iteration_time": s.iteration_time,
            "curve": curve, "final": curve[-1][1] if curve else 0.0,
            "wall_seconds": round(time.perf_counter() - tick, 1)}


def run(variants: Sequence[str] = ("recipe", "previous"), seconds: float = 60.0,
        trainers: int = 2, per_second: int | None = None, points: int = 4,
        log: Any = sys.stderr, net: str = "fast") -> dict[str, Any]:
    """Every variant in turn; the first is the reference of the differences printed.
    ``per_second``: samples per trainer per second of T (default: ``PER_SECOND[net]``)."""
    if per_second is None:
        per_second = PER_SECOND[net]
    train_zip, test_zip = DATA / "cifar10-train.zip", DATA / "cifar10-test.zip"
    if not (train_zip.exists() and test_zip.exists()):
        return {"skipped": f"no CIFAR-10 zips in {DATA}"}
    one_thread()
    print(f"decoding {train_zip.name} and {test_zip.name}", file=log, flush=True)
    train, test = _decode(train_zip), _decode(test_zip)
    out: dict[str, Any] = {"blas": blas_info(), "seconds": seconds, "per_second": per_second,
                           "net": net, "variants": {}}
    for v in variants:
        print(f"{v}:", file=log, flush=True)
        out["variants"][v] = run_variant(setup(v, seconds, trainers, net), seconds, per_second,
                                         train, test, points, log)
    return out


def _print(result: dict[str, Any]) -> None:
    if "skipped" in result:
        print(f"skipped: {result['skipped']}")
        return
    rows = result["variants"]
    ref = next(iter(rows.values()))["final"]
    print(f"\n{result['net']} net, {result['seconds']:.0f} s of simulated rounds at "
          f"{result['per_second']:,} samples/s per trainer; test accuracy on 10,000 images")
    print(f"{'variant':<10} {'trainers':>8} {'samples':>9} {'accuracy':>9} {'vs first':>9}")
    for name, r in rows.items():
        print(f"{name:<10} {r['trainers']:>8} {r['samples']:>9,} {r['final']:>9.1%} "
              f"{(r['final'] - ref) * 100:>+8.1f}p")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--variants", default="recipe,previous",
                        help=f"comma-separated, from {', '.join(VARIANTS)} (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="simulated training time: the schedule's horizon (default: 60)")
    parser.add_argument("--trainers", type=int, default=2, help="trainers (default: 2)")
    parser.add_argument("--round-samples", type=int, default=None, dest="per_second",
                        help="samples per trainer per second of T (default: "
                             f"{PER_SECOND['fast']} for the fast net, {PER_SECOND['paper']} "
                             "for the paper's)")
    parser.add_argument("--points", type=int, default=4, help="points of the curve")
    parser.add_argument("--net", choices=sorted(CIFAR10_NETS), default="fast",
                        help="the demo's net (fast, default) or the paper's ConvNetJS net")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        parser.error(f"--variants: unknown {', '.join(bad) or '(none)'}; "
                     f"choose from {', '.join(VARIANTS)}")
    if args.trainers < 1 or (args.per_second is not None and args.per_second < 1) \
            or args.seconds <= 0 or args.points < 1:
        parser.error("--trainers, --round-samples, --points and --seconds must be positive")
    result = run(variants, args.seconds, args.trainers, args.per_second, args.points,
                 net=args.net)
    print(json.dumps(result, indent=2) if args.json else "", end="")
    if not args.json:
        _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
