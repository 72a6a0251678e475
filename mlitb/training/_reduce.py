"""The reduce step: turn one iteration's results into one optimizer step (paper §3.3.1.3).

A reducer is one function of (results, parameters, optimizer). ``gradient`` projects' workers
return gradient *sums*: ``reduce_gradient_sums`` adds them, divides by the number of samples they
cover (so each sample weighs the same, whoever computed it) and lets the optimizer step.
``local`` projects' workers return parameter *deltas* after their inner steps:
``reduce_parameter_deltas`` averages them weighted by samples and lets the outer optimizer step
on minus that average (``mlitb.training``). These two are the ``mean`` aggregation, the paper's,
and the default. ``aggregate`` chooses by the project's ``Training.aggregation``: ``mean``, or a
robust reducer (``median``, ``trimmed_mean``, ``centered_clip``) after per-result checks
(docs/security.md, "Robust aggregation"): see ``aggregate``.

Every reducer steps through ``guarded_step``: a step that would leave a non-finite value in the
parameters or the optimizer's state (a float32 sum that overflowed, AdaGrad's accumulator of a
1e30 gradient) is refused with ``StepRefused`` and the parameters and optimizer are left exactly
as they were (docs/security.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from ..errors import MlitbError, OptimizerError
from ..optim import Optimizer
from ..protocol import ResultFrame, ResultKind, Training


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
    """What the reduced results covered. ``refused``, ``clipped``, ``capped``: the robust
    reducers' per-result checks (``aggregate``), as indices into the results given, with why a
    result was refused."""

    samples: int
    loss_sum: float
    correct: int
    workers: int
    stepped: bool
    refused: tuple[tuple[int, str], ...] = ()
    clipped: tuple[int, ...] = ()
    capped: tuple[int, ...] = ()


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


# == robust aggregation ==========================================================================
CLIP_ITERATIONS: Final = 3
"""CenteredClip's fixed-point iterations (Karimireddy et al. 2021 use 1-3 per round)."""


def _lower_median(values: Sequence[float]) -> float:
    """The lower median: with two values the smaller, so one of two results cannot set it."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def aggregate(results: Sequence[ResultFrame], params: np.ndarray, optimizer: Optimizer,
              training: Training, budgets: Sequence[float | None] | None = None
              ) -> ReduceSummary:
    """The project's reduce: ``training.aggregation`` over the results in the order given.

    ``mean`` is ``reduce_gradient_sums`` / ``reduce_parameter_deltas`` exactly (the paper's, no
    checks). The robust reducers first check every result (those of the algorithm's kind with
    samples; gradient sums are divided by their samples, deltas taken as they are):

    1. **norm**: ``r`` = the lower median of the results' norms (per sample); a result beyond
       ``norm_refuse`` × r is refused (left out, listed in ``refused``: a strike for its
       worker), one beyond ``norm_clip`` × r is scaled down to that norm (``clipped``);
    2. **samples** (the weight): at most ``sample_factor`` × the median rate × the result's
       budget, the rate being samples per second of budget (``budgets``, one per result, the
       work orders' seconds; None or absent: every budget counts 1, so the cap is
       ``sample_factor`` × the median sample count; in deterministic mode the orders' equal
       sample counts make this moot). Capped results are listed in ``capped``.

    Then, over the kept per-sample results ``u_i`` with weights ``w_i``:

    - ``median``: the coordinate-wise median of the ``u_i``, each result one vote (weights do
      not count: a weighted median is only as robust as the weights are honest);
    - ``trimmed_mean``: per coordinate, the ``floor(trim_fraction × n)`` smallest and largest
      values are dropped, the rest averaged with weights ``w_i``;
    - ``centered_clip``: from the coordinate-wise median ``v``, ``CLIP_ITERATIONS`` times
      ``v += sum w_i (u_i - v) min(1, tau / |u_i - v|) / sum w_i`` with ``tau`` =
      ``clip_radius`` × the median distance of the ``u_i`` from the starting ``v``.

    With one result every reducer gives it; with two, ``median`` and ``centered_clip`` give
    their midpoint and ``trimmed_mean`` their weighted mean (nothing can tell which of two is
    lying; the norm check still bounds the larger one to ``norm_clip`` × the smaller). The
    reduced per-sample gradient steps ``optimizer`` (``local``: minus the reduced delta steps
    the outer optimizer), through ``guarded_step``. Pure and deterministic: the replay calls it
    with the recomputed results and gets the same bits.
    """
    if training.aggregation == "mean":
        if training.algorithm == "local":
            return reduce_parameter_deltas(results, params, optimizer)
        return reduce_gradient_sums(results, params, optimizer)
    kind = ResultKind.PARAMETER_DELTA if training.algorithm == "local" \
        else ResultKind.GRADIENT_SUM
    index = [i for i, r in enumerate(results) if r.samples > 0 and r.kind is kind]
    if not index:
        return ReduceSummary(samples=0, loss_sum=0.0, correct=0, workers=len(results),
                             stepped=False)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        units = [results[i].vector.astype(np.float64) / (results[i].samples
                 if kind is ResultKind.GRADIENT_SUM else 1) for i in index]
        norms = [float(np.linalg.norm(u)) for u in units]
    refused: list[tuple[int, str]] = []
    clipped: list[int] = []
    keep = list(range(len(index)))
    finite = [k for k in keep if math.isfinite(norms[k])]
    for k in keep:
        if k not in finite:
            refused.append((index[k], "its norm is not finite"))
    keep = finite
    reference = _lower_median([norms[k] for k in keep]) if keep else 0.0
    per = "per sample " if kind is ResultKind.GRADIENT_SUM else ""
    if reference > 0:
        if training.norm_refuse is not None:
            limit = training.norm_refuse * reference
            for k in keep:
                if norms[k] > limit:
                    refused.append((index[k], f"its norm {per}{norms[k]:.3g} is more than "
                                    f"{training.norm_refuse:g} x the round's median "
                                    f"{reference:.3g}"))
            keep = [k for k in keep if norms[k] <= limit]
        if training.norm_clip is not None:
            limit = training.norm_clip * reference
            for k in keep:
                if norms[k] > limit:
                    units[k] = units[k] * (limit / norms[k])
                    clipped.append(index[k])
    refused.sort()
    if not keep:
        return ReduceSummary(samples=0, loss_sum=0.0, correct=0, workers=len(results),
                             stepped=False, refused=tuple(refused), clipped=tuple(clipped))
    # The weights: sample counts, capped by the round's median rate.
    spans = [max(float(budgets[index[k]] or 1.0), 1e-9) if budgets is not None else 1.0
             for k in keep]
    claims = [results[index[k]].samples for k in keep]
    rate = float(np.median(np.asarray([c / s for c, s in zip(claims, spans)])))
    weights, capped = [], []
    for k, claim, span in zip(keep, claims, spans):
        cap = max(1, math.floor(training.sample_factor * rate * span))
        if claim > cap:
            capped.append(index[k])
        weights.append(min(claim, cap))
    kept = np.stack([units[k] for k in keep])
    w = np.asarray(weights, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if training.aggregation == "median":
            direction = np.median(kept, axis=0)
        elif training.aggregation == "trimmed_mean":
            direction = _trimmed_mean(kept, w, training.trim_fraction)
        else:
            direction = _centered_clip(kept, w, training.clip_radius)
    loss_sum = correct = 0.0
    for k, weight in zip(keep, weights):
        r = results[index[k]]
        share = weight / r.samples
        loss_sum += r.loss_sum * share
        correct += min(r.correct, r.samples) * share
    samples = int(sum(weights))
    summary = ReduceSummary(samples=samples, loss_sum=loss_sum, correct=int(round(correct)),
                            workers=len(results), stepped=True, refused=tuple(refused),
                            clipped=tuple(clipped), capped=tuple(capped))
    step = direction.astype(np.float32)
    if kind is ResultKind.GRADIENT_SUM:
        guarded_step(optimizer, params, step)
    else:
        guarded_step(optimizer, params, np.negative(step), "parameter delta")
    return summary


def _trimmed_mean(values: np.ndarray, weights: np.ndarray, fraction: float) -> np.ndarray:
    """Per coordinate: drop the ``floor(fraction × n)`` smallest and largest values, average
    the rest weighted by ``weights`` (which follow their values through the sort)."""
    n = values.shape[0]
    cut = math.floor(fraction * n)
    if n - 2 * cut < 1:  # never trims everything (fraction <= 0.45 keeps at least one)
        cut = (n - 1) // 2
    order = np.argsort(values, axis=0, kind="stable")[cut:n - cut]
    kept = np.take_along_axis(values, order, axis=0)
    w = weights[order]
    out: np.ndarray = (kept * w).sum(axis=0) / w.sum(axis=0)
    return out


def _centered_clip(values: np.ndarray, weights: np.ndarray, radius: float) -> np.ndarray:
    """CenteredClip (Karimireddy, He and Jaggi 2021) from the coordinate-wise median, the
    radius ``radius`` × the median distance of the values from that start."""
    v: np.ndarray = np.median(values, axis=0)
    distances = np.linalg.norm(values - v, axis=1)
    tau = radius * float(np.median(distances))
    if not tau > 0:  # at least half the values are the median itself
        return v
    total = weights.sum()
    for _ in range(CLIP_ITERATIONS):
        diff = values - v
        dist = np.linalg.norm(diff, axis=1)
        scale = np.minimum(1.0, tau / np.maximum(dist, 1e-300))
        v = np.asarray(v + (weights * scale) @ diff / total)
    return v
