"""The reduce step: turn one iteration's results into one optimizer step (paper §3.3.1.3).

A reducer is one function of (results, parameters, optimizer). ``gradient`` projects' workers
return gradient *sums*: ``reduce_gradient_sums`` adds them, divides by the number of samples they
cover (so each sample weighs the same, whoever computed it) and lets the optimizer step.
``local`` projects' workers return parameter *deltas* after their inner steps:
``reduce_parameter_deltas`` averages them weighted by samples and lets the outer optimizer step
on minus that average (``mlitb.training``). A later reducer (robust aggregation) has the same
signature.

Every reducer steps through ``guarded_step``: a step that would leave a non-finite value in the
parameters or the optimizer's state (a float32 sum that overflowed, AdaGrad's accumulator of a
1e30 gradient) is refused with ``StepRefused`` and the parameters and optimizer are left exactly
as they were (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import MlitbError, OptimizerError
from ..optim import Optimizer
from ..protocol import ResultFrame, ResultKind


class StepRefused(MlitbError):
    """The reduced step would have made the model or its optimizer non-finite; nothing changed."""


def _finite(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all())


def guarded_step(optimizer: Optimizer, params: np.ndarray, direction: np.ndarray,
                 what: str = "gradient") -> None:
    """``optimizer.step(params, direction)``, committed only if every parameter and every
    accumulator of the optimizer stays finite; otherwise ``StepRefused`` and the parameters,
    the optimizer's state and its (decayed) learning rate are restored as they were."""
    if not _finite(direction):
        raise StepRefused(f"the reduced {what} is not finite (a float32 overflow of the "
                          "results' sum?); the step was refused and the model kept as it was")
    saved_params = params.copy()
    saved_state = optimizer.state()
    saved_hp = optimizer.hyperparameters()
    reason = None
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            optimizer.step(params, direction)
    except OptimizerError as exc:
        reason = str(exc)
    if reason is None:
        if not _finite(params):
            reason = "the step would make parameters NaN or infinite"
        else:
            bad = [k for k, v in optimizer.state().items()
                   if isinstance(v, np.ndarray) and not _finite(v)]
            if bad:
                reason = (f"the step would make the {optimizer.name} state "
                          f"{', '.join(bad)} NaN or infinite")
    if reason is not None:
        params[...] = saved_params
        optimizer.load_state(saved_state)
        optimizer.set_hyperparameters(**saved_hp)
        raise StepRefused(f"{reason}; the step was refused and the model kept as it was")


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
    with np.errstate(over="ignore", invalid="ignore"):  # guarded_step refuses a non-finite sum
        for r in useful:  # a fixed order (the caller's) keeps the sum reproducible
            total += r.vector
        total /= np.float32(samples)
    guarded_step(optimizer, params, total)
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
    with np.errstate(over="ignore", invalid="ignore"):  # guarded_step refuses a non-finite sum
        for r in useful:  # the caller's order, for a reproducible sum
            total += np.float32(r.samples) * r.vector
        total /= np.float32(samples)
    guarded_step(optimizer, params, np.negative(total), "parameter delta")
    return summary
