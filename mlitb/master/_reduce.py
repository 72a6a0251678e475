"""The reduce step: turn one iteration's results into one optimizer step (paper §3.3.1.3).

This is the seam DESIGN.md keeps open: a reducer is one function of (results, parameters,
optimizer). Today's workers return gradient *sums*; the reducer adds them, divides by the number of
samples they cover (so each sample weighs the same, whoever computed it) and lets the optimizer
step. A later reducer (parameter deltas, robust aggregation) has the same signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..optim import Optimizer
from ..protocol import ResultFrame, ResultKind


@dataclass(frozen=True)
class ReduceSummary:
    """What the reduced results covered."""

    samples: int
    loss_sum: float
    correct: int
    workers: int
    stepped: bool


def reduce_gradient_sums(results: Sequence[ResultFrame], params: np.ndarray,
                         optimizer: Optimizer) -> ReduceSummary:
    """Sum gradient sums, divide by the total sample count, step ``params`` in place.

    Results with no samples count as present but add nothing; with no samples at all the
    parameters stay as they are (``stepped`` is False).
    """
    useful = [r for r in results if r.samples > 0 and r.kind is ResultKind.GRADIENT_SUM]
    samples = sum(r.samples for r in useful)
    summary = ReduceSummary(samples=samples, loss_sum=sum(r.loss_sum for r in useful),
                            correct=sum(r.correct for r in useful), workers=len(results),
                            stepped=samples > 0)
    if not useful:
        return summary
    total = np.zeros_like(params, dtype=np.float32)
    for r in useful:  # a fixed order (the caller's) keeps the sum reproducible
        total += r.vector
    total /= np.float32(samples)
    optimizer.step(params, total)
    return summary
