"""What a worker computes, without I/O: budgeted gradient sums, local steps, test evaluation.

``compute_gradient`` answers one ``work`` order. With a time budget it loops
``accumulate_gradient`` over small random batches of the cache, checking the clock between batches
and sizing the last ones from the measured rate so the budget is respected; in deterministic mode
it processes exactly ``samples`` samples in an order fixed by a seed and the iteration.
``compute_local`` answers a ``local`` project's order with inner optimizer steps over the same
batches and returns the parameter delta. The clock
is injected (``time.perf_counter`` in production), so tests run budgets of any length instantly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..nn import BatchStats
from ..optim import Optimizer
from ..protocol import MAX_STEPS
from ._cache import CacheView
from ._settings import augment

Clock = Callable[[], float]

MAX_BATCH = 32
"""The largest batch: big enough for the engine's GEMMs, small enough to keep to a budget."""
FIRST_BATCH = 8
"""The first batch while the worker's speed is unknown."""


class Trainable(Protocol):
    """What computation needs of ``mlitb.nn.Net``."""

    @property
    def num_params(self) -> int: ...
    @property
    def params(self) -> npt.NDArray[np.float32]: ...
    @property
    def grads(self) -> npt.NDArray[np.float32]: ...
    def zero_grads(self) -> None: ...
    def accumulate_gradient(self, x: np.ndarray, y: np.ndarray) -> BatchStats: ...
    def evaluate(self, x: np.ndarray, y: np.ndarray) -> BatchStats: ...


@dataclass(frozen=True, eq=False)
class ComputeResult:
    """The content of one RESULT frame (the caller adds the parameter version)."""

    samples: int
    correct: int
    loss_sum: float
    compute_seconds: float
    vector: npt.NDArray[np.float32]
    steps: int = 0
    """Inner optimizer steps (local steps; 0 for a gradient sum)."""

    @property
    def loss(self) -> float | None:
        """Mean loss per sample, or None when nothing was computed."""
        return self.loss_sum / self.samples if self.samples else None


@dataclass
class Pacer:
    """The worker's measured speed (samples per second), kept across work orders to size batches.

    An exponential moving average over batches; ``None`` until the first batch is measured."""

    rate: float | None = None
    smoothing: float = 0.3
    history: list[float] = field(default_factory=list, repr=False)

    def update(self, samples: int, seconds: float) -> None:
        if samples <= 0 or seconds <= 0:
            return
        measured = samples / seconds
        self.rate = measured if self.rate is None else \
            (1 - self.smoothing) * self.rate + self.smoothing * measured

    def batch_for(self, remaining: float, max_batch: int = MAX_BATCH) -> int:
        """How many samples fit into ``remaining`` seconds (0: stop), at most ``max_batch``."""
        if remaining <= 0:
            return 0
        if self.rate is None:
            return min(FIRST_BATCH, max_batch)
        return max(0, min(max_batch, int(remaining * self.rate)))


def empty_result(num_params: int, compute_seconds: float = 0.0) -> ComputeResult:
    """The answer when nothing could be computed: 0 samples and a zero vector."""
    return ComputeResult(samples=0, correct=0, loss_sum=0.0, compute_seconds=compute_seconds,
                         vector=np.zeros(num_params, dtype=np.float32))


def deterministic_order(view: CacheView, samples: int, seed: int, iteration: int
                        ) -> npt.NDArray[np.intp]:
    """Exactly ``samples`` rows of ``view``: passes over the usable ids, each pass in an order
    drawn from ``seed`` and ``iteration``. Depends only on which ids are usable, not on when they
    arrived, so two workers (or two runs) with the same cache compute the same thing."""
    base = view.sorted_rows()
    if base.size == 0 or samples <= 0:
        return np.empty(0, dtype=np.intp)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, iteration & 0xFFFFFFFF])
    passes = math.ceil(samples / base.size)
    order = np.concatenate([base[rng.permutation(base.size)] for _ in range(passes)])
    return order[:samples]


class Passes:
    """A worker's passes over its cache, kept from one work order to the next: each pass takes
    every usable row once, in a random order, so rows are drawn without replacement across
    rounds. A fresh order per round (what a budget of ~700 samples out of a 25,000-row share
    did before) draws some rows three times in a minute and others never. In ``mlitb/bench/recipe.py``
    the effect is within what a seed moves (67.3-69.1% at 168,000 samples against 68.0%); kept
    for what it guarantees: every row once before any row twice (docs/performance.md).

    When the usable rows change (the cache grows, the allocation moves), rows no longer usable
    leave the pass, new ones join what the pass has yet to take, and the rest keeps its order.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._rows: npt.NDArray[np.intp] | None = None
        self._order = np.empty(0, dtype=np.intp)  # this pass: taken rows, then those to come
        self._cursor = 0

    def _follow(self, rows: npt.NDArray[np.intp]) -> None:
        if self._rows is not None and np.array_equal(rows, self._rows):
            return
        taken, left = self._order[:self._cursor], self._order[self._cursor:]
        left = left[np.isin(left, rows)]
        new = rows[~np.isin(rows, self._order)]
        ahead = np.concatenate([left, new])
        self._order = np.concatenate([taken, ahead[self.rng.permutation(ahead.size)]])
        self._rows = rows.copy()

    def take(self, view: CacheView, n: int) -> npt.NDArray[np.intp]:
        """The next ``n`` rows of ``view.rows`` (fewer only if the view is empty)."""
        rows = view.rows
        if rows.size == 0 or n <= 0:
            return np.empty(0, dtype=np.intp)
        self._follow(rows)
        pieces = []
        while n > 0:
            if self._cursor >= self._order.size:  # a new pass, in a new order
                self._order, self._cursor = rows[self.rng.permutation(rows.size)], 0
            piece = self._order[self._cursor:self._cursor + n]
            self._cursor += piece.size
            n -= piece.size
            pieces.append(piece)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def _finish(net: Trainable, samples: int, correct: int, loss_sum: float,
            seconds: float) -> ComputeResult:
    vector = net.grads.copy()
    if samples and not (math.isfinite(loss_sum) and bool(np.isfinite(vector).all())):
        # A diverged net: the master would refuse the frame; say "nothing computed" instead.
        return empty_result(net.num_params, seconds)
    return ComputeResult(samples=samples, correct=correct, loss_sum=max(loss_sum, 0.0),
                         compute_seconds=seconds, vector=vector)


def _batches(view: CacheView, *, seconds: float | None, samples: int | None,
             rng: np.random.Generator | None, seed: int, iteration: int, clock: Clock,
             pacer: Pacer | None, max_batch: int, should_stop: Callable[[], bool] | None,
             start: float, passes: Passes | None = None) -> Iterator[npt.NDArray[np.intp]]:
    """The rows of each batch of one work order (see ``compute_gradient``). With a time budget
    the time from one batch to the next (the caller's work on it) feeds the pacer."""
    if (seconds is None) == (samples is None):
        raise ValueError("give exactly one of seconds and samples")
    if samples is not None:
        order = (passes.take(view, samples) if passes is not None else
                 deterministic_order(view, samples, seed, iteration))
        for i in range(0, order.size, max_batch):
            if should_stop is not None and should_stop():
                return
            yield order[i:i + max_batch]
        return
    assert seconds is not None
    pacer = pacer if pacer is not None else Pacer()
    if passes is None:
        passes = Passes(rng if rng is not None else np.random.default_rng())
    total = 0
    while True:
        if should_stop is not None and should_stop():
            return
        now = clock()
        n = pacer.batch_for(seconds - (now - start), max_batch)
        if n == 0:
            if total:
                return
            n = 1  # at least one sample, so the master always learns this worker's speed
        rows = passes.take(view, n)
        yield rows
        pacer.update(rows.size, clock() - now)
        total += rows.size


def compute_gradient(
    net: Trainable,
    view: CacheView,
    *,
    seconds: float | None = None,
    samples: int | None = None,
    rng: np.random.Generator | None = None,
    seed: int = 0,
    iteration: int = 0,
    clock: Clock = time.perf_counter,
    pacer: Pacer | None = None,
    max_batch: int = MAX_BATCH,
    should_stop: Callable[[], bool] | None = None,
    shift: int = 0,
    flip: bool = False,
    passes: Passes | None = None,
) -> ComputeResult:
    """The gradient sum over as many cached samples as the budget allows.

    Exactly one of ``seconds`` (time budget: random batches drawn with ``rng``, or from
    ``passes``, the worker's ``Passes`` kept between work orders) and ``samples``
    (deterministic mode: ``deterministic_order(view, samples, seed, iteration)``, in batches of
    ``max_batch``; or the next ``samples`` rows of ``passes``, which a replay cannot follow)
    must be given. With a time budget at least one sample is computed, and the
    last batches shrink to what the measured rate says still fits. ``net`` must already hold
    the parameters of the work order; its gradients are zeroed first. ``should_stop`` is polled
    between batches (the worker is leaving). ``shift``/``flip``: augmentation
    (``mlitb.training.augment``), drawn from ``rng`` (deterministic mode: from ``seed`` and
    ``iteration``). An empty view gives ``samples == 0`` and a zero vector.
    """
    if (seconds is None) == (samples is None):
        raise ValueError("give exactly one of seconds and samples")
    start = clock()
    net.zero_grads()
    if len(view) == 0:
        return empty_result(net.num_params, max(clock() - start, 0.0))
    aug_rng = _augment_rng(rng, samples, seed, iteration)
    total, correct, loss_sum = 0, 0, 0.0
    for rows in _batches(view, seconds=seconds, samples=samples, rng=rng, seed=seed,
                         iteration=iteration, clock=clock, pacer=pacer, max_batch=max_batch,
                         should_stop=should_stop, start=start, passes=passes):
        x, y = view.batch(rows)
        stats = net.accumulate_gradient(augment(x, aug_rng, shift=shift, flip=flip), y)
        total, correct, loss_sum = (total + stats.count, correct + stats.correct,
                                    loss_sum + stats.loss)
    return _finish(net, total, correct, loss_sum, max(clock() - start, 0.0))


def _augment_rng(rng: np.random.Generator | None, samples: int | None, seed: int,
                 iteration: int) -> np.random.Generator:
    """Augmentation's draws: from the worker's generator, or in deterministic mode from the
    seed and iteration (a stream of its own, apart from the sample order's)."""
    if samples is not None or rng is None:
        return np.random.default_rng([seed & 0xFFFFFFFF, iteration & 0xFFFFFFFF, 1])
    return rng


def compute_local(
    net: Trainable,
    view: CacheView,
    inner: Optimizer,
    *,
    learning_rate: float,
    batch_size: int,
    seconds: float | None = None,
    samples: int | None = None,
    rng: np.random.Generator | None = None,
    seed: int = 0,
    iteration: int = 0,
    clock: Clock = time.perf_counter,
    pacer: Pacer | None = None,
    should_stop: Callable[[], bool] | None = None,
    shift: int = 0,
    flip: bool = False,
    passes: Passes | None = None,
) -> ComputeResult:
    """Local steps: inner optimizer steps on batches of ``batch_size`` cached samples until the
    budget is spent; the result's vector is the parameter delta (after - before).

    Budgets, batches and ``passes`` are as in ``compute_gradient`` (``batch_size`` takes
    ``max_batch``'s place). Each batch is augmented, its gradient averaged, and ``inner`` (the worker's, whose
    state carries over between rounds) steps ``net``'s parameters with ``learning_rate``, the
    round's rate. Loss and accuracy are those of each batch before its step. At most
    ``MAX_STEPS`` steps. A diverged net (non-finite parameters) answers "nothing computed".
    """
    if (seconds is None) == (samples is None):
        raise ValueError("give exactly one of seconds and samples")
    start = clock()
    if len(view) == 0:
        return empty_result(net.num_params, max(clock() - start, 0.0))
    inner.set_hyperparameters(learning_rate=learning_rate)
    before = net.params.copy()
    aug_rng = _augment_rng(rng, samples, seed, iteration)
    total, correct, loss_sum, steps = 0, 0, 0.0, 0
    for rows in _batches(view, seconds=seconds, samples=samples, rng=rng, seed=seed,
                         iteration=iteration, clock=clock, pacer=pacer, max_batch=batch_size,
                         should_stop=should_stop, start=start, passes=passes):
        x, y = view.batch(rows)
        net.zero_grads()
        stats = net.accumulate_gradient(augment(x, aug_rng, shift=shift, flip=flip), y)
        grad = net.grads
        if not np.isfinite(grad).all():
            break  # a diverged step: keep what the earlier ones did
        grad /= np.float32(stats.count)
        inner.step(net.params, grad)
        steps += 1
        total, correct, loss_sum = (total + stats.count, correct + stats.correct,
                                    loss_sum + stats.loss)
        if steps >= MAX_STEPS:
            break
    seconds_spent = max(clock() - start, 0.0)
    delta = net.params - before
    if not (math.isfinite(loss_sum) and bool(np.isfinite(delta).all())):
        return empty_result(net.num_params, seconds_spent)
    return ComputeResult(samples=total, correct=correct, loss_sum=max(loss_sum, 0.0),
                         compute_seconds=seconds_spent, vector=delta.astype(np.float32),
                         steps=steps)


@dataclass(frozen=True)
class Evaluation:
    """A stats worker's pass over its test cache."""

    samples: int
    correct: int
    loss_sum: float
    compute_seconds: float

    @property
    def error(self) -> float:
        return 1.0 - self.correct / self.samples if self.samples else 1.0

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.samples if self.samples else None


def evaluate(net: Trainable, view: CacheView, *, chunk: int = 256,
             clock: Clock = time.perf_counter,
             should_stop: Callable[[], bool] | None = None) -> Evaluation:
    """Loss and correct count of ``net`` on every usable row of ``view`` (test mode)."""
    start = clock()
    rows = view.sorted_rows()
    samples, correct, loss_sum = 0, 0, 0.0
    for i in range(0, rows.size, chunk):
        if should_stop is not None and should_stop():
            break
        x, y = view.batch(rows[i:i + chunk])
        stats = net.evaluate(x, y)
        samples, correct, loss_sum = (samples + stats.count, correct + stats.correct,
                                      loss_sum + stats.loss)
    return Evaluation(samples=samples, correct=correct, loss_sum=loss_sum,
                      compute_seconds=max(clock() - start, 0.0))
