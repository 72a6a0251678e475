"""The reduce step: turn one iteration's results into one optimizer step (paper §3.3.1.3).

A reducer is one function of (results, parameters, optimizer). ``gradient`` projects' workers
return gradient *sums*: ``reduce_gradient_sums`` adds them, divides by the number of samples they
cover (so each sample weighs the same, whoever computed it) and lets the optimizer step.
``local`` projects' workers return parameter *deltas* after their inner steps:
``reduce_parameter_deltas`` averages them weighted by samples and lets the outer optimizer step
on minus that average (``mlitb.training``). A later reducer (robust aggregation) has the same
signature.
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


def _useful(results: Sequence[ResultFrame], kind: ResultKind
            ) -> tuple[list[ResultFrame], ReduceSummary]:
    """The results of ``kind`` that cover samples, and what they cover together. Results with
    no samples (or of the other algorithm's kind) count as present but add nothing."""
    useful = [r for r in results if r.samples > 0 and r.kind is kind]
    samples = sum(r.samples for r in useful)
    return useful, ReduceSummary(samples=samples, loss_sum=sum(r.loss_sum for r in useful),
                                 correct=sum(r.correct for r in useful), workers=len(results),
                                 stepped=samples > 0)


def reduce_gradient_sums(results: Sequence[ResultFrame], params: np.ndarray,
                         optimizer: Optimizer) -> ReduceSummary:
    """Sum gradient sums, divide by the total sample count, step ``params`` in place.

    Results with no samples count as present but add nothing; with no samples at all the
    parameters stay as they are (``stepped`` is False).
    """
    useful, summary = _useful(results, ResultKind.GRADIENT_SUM)
    if not useful:
        return summary
    samples = summary.samples
    total = np.zeros_like(params, dtype=np.float32)
    for r in useful:  # a fixed order (the caller's) keeps the sum reproducible
        total += r.vector
    total /= np.float32(samples)
    optimizer.step(params, total)
    return summary


def reduce_parameter_deltas(results: Sequence[ResultFrame], params: np.ndarray,
                            optimizer: Optimizer) -> ReduceSummary:
    """Average the parameter deltas weighted by samples, step ``params`` in place with the
    outer ``optimizer`` on minus that average (outer SGD with learning rate 1 and no momentum
    makes the new parameters the workers' weighted average)."""
    useful, summary = _useful(results, ResultKind.PARAMETER_DELTA)
    if not useful:
        return summary
    samples = summary.samples
    total = np.zeros_like(params, dtype=np.float32)
    for r in useful:  # the caller's order, for a reproducible sum
        total += np.float32(r.samples) * r.vector
    total /= np.float32(samples)
    optimizer.step(params, np.negative(total))
    return summary
