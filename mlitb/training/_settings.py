"""How a project trains, without I/O: the learning-rate schedule, augmentation, the outer step.

A project's ``Training`` settings (``mlitb.protocol.Training``, the same object on the wire, in
closures and here) choose between two algorithms:

- ``gradient`` (the paper's): every iteration, the workers' gradient sums are averaged into ONE
  optimizer step on the master;
- ``local`` (local SGD, DiLoCo): every worker takes many *inner* optimizer steps of
  ``batch_size`` samples on its own data for its whole budget and returns its parameter delta;
  the master averages the deltas, weighted by samples, and applies an *outer* optimizer to that
  average: plain averaging (outer SGD with learning rate 1), or DiLoCo's Nesterov momentum
  (Douillard et al. 2023: learning rate 0.7, momentum 0.9).

Whatever the algorithm, the schedule scales the project's learning rate by how far training has
got (samples or seconds over a horizon), and augmentation (random shifts and flips) is drawn by
the workers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import MlitbError
from ..optim import SGD, Hyperparameter, Optimizer, make_optimizer
from ..protocol import Training
from ..protocol._schema import Invalid, converter

__all__ = ["Training", "TrainingError", "augment", "inner_hyperparameters", "lr_factor",
           "make_inner", "make_outer", "progress", "training_from_json", "training_to_json"]

_FROM_JSON = converter(Training, True)
_TO_JSON = converter(Training, False)


class TrainingError(MlitbError, ValueError):
    """Training settings that are out of range or do not fit together (the message names the
    field)."""


def training_from_json(value: Mapping[str, Any]) -> Training:
    """Settings from their JSON object (every field optional), checked; ``TrainingError``
    names the field that is wrong."""
    try:
        training: Training = _FROM_JSON(dict(value))
    except Invalid as exc:
        raise TrainingError(f"training.{exc.where()}: {exc.reason}") from None
    return training


def training_to_json(training: Training) -> dict[str, Any]:
    """The JSON object of ``training`` (checked: a ``Training`` built in Python is validated
    here)."""
    try:
        out: dict[str, Any] = _TO_JSON(training)
    except Invalid as exc:
        raise TrainingError(f"training.{exc.where()}: {exc.reason}") from None
    return out


def check_training(training: Training) -> Training:
    """``training`` itself if its fields are in range, else ``TrainingError``."""
    return training_from_json(training_to_json(training))


# -- the schedule ---------------------------------------------------------------------------------
def progress(training: Training, samples: int, seconds: float) -> float:
    """How far training has got through the schedule's horizon, in [0, 1] (0 without one)."""
    if training.horizon is None:
        return 0.0
    done = samples if training.horizon_unit == "samples" else seconds
    return min(max(done / training.horizon, 0.0), 1.0)


def lr_factor(training: Training, at: float) -> float:
    """The learning rate's multiplier at progress ``at`` (0..1): a linear warmup from 0 over
    the first ``warmup`` of the horizon, then ``cosine`` or ``linear`` decay from 1 to
    ``final_lr``; 1 throughout for ``constant``."""
    if training.schedule == "constant" or training.horizon is None:
        return 1.0
    at = min(max(at, 0.0), 1.0)
    warmup, final = training.warmup, training.final_lr
    if at < warmup:
        # Never exactly 0: the first round must move the parameters.
        return max(at / warmup, 1e-3)
    rest = (at - warmup) / (1.0 - warmup) if warmup < 1.0 else 1.0
    if training.schedule == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * rest))
    return final + (1.0 - final) * (1.0 - rest)


# -- augmentation ---------------------------------------------------------------------------------
def augment(x: npt.NDArray[np.float32], rng: np.random.Generator, *, shift: int = 0,
            flip: bool = False) -> npt.NDArray[np.float32]:
    """A randomly shifted and flipped copy of the batch ``x`` (``(N, C, H, W)`` net inputs).

    Each image moves by ``(dy, dx)`` drawn uniformly from ``[-shift, shift]`` (the pixels moved
    in are 0, the input's mid-grey: pad and crop) and, with ``flip``, is mirrored left-right
    with probability 1/2. The draws come from ``rng`` in a fixed order (shifts, then flips), so
    one seed gives one batch. Labels are untouched: the caller keeps them as they are.
    """
    if not shift and not flip:
        return x
    n, _, h, w = x.shape
    out = np.zeros_like(x)
    if shift:
        dy = np.atleast_1d(rng.integers(-shift, shift + 1, size=n)).tolist()
        dx = np.atleast_1d(rng.integers(-shift, shift + 1, size=n)).tolist()
        for i in range(n):
            # A shift past the image's size leaves nothing of it (all zeros), as in the browser.
            sy, sx = max(-h, min(h, int(dy[i]))), max(-w, min(w, int(dx[i])))
            out[i, :, max(sy, 0):h + min(sy, 0), max(sx, 0):w + min(sx, 0)] = \
                x[i, :, max(-sy, 0):h - max(sy, 0), max(-sx, 0):w - max(sx, 0)]
    else:
        out[...] = x
    if flip:
        mirrored = rng.random(n) < 0.5
        out[mirrored] = out[mirrored, :, :, ::-1]
    return out


# -- the inner and outer optimizers (local) -------------------------------------------------------
def inner_hyperparameters(hyperparameters: Mapping[str, Hyperparameter]
                          ) -> dict[str, Hyperparameter]:
    """The project's hyperparameters as a worker's inner optimizer takes them: without the
    step decay, since the master's schedule sets each round's learning rate."""
    return {k: v for k, v in hyperparameters.items() if k != "lr_decay"}


def make_inner(optimizer: str, hyperparameters: Mapping[str, Hyperparameter],
               net: Any) -> Optimizer:
    """A fresh inner optimizer for ``net`` (a ``mlitb.nn.Net``), as every worker and the
    replay build it: the project's optimizer and ``inner_hyperparameters``, the net's own
    decay multipliers."""
    l1, l2 = net.decay_multipliers()
    return make_optimizer(optimizer, net.num_params, **inner_hyperparameters(hyperparameters),
                          l1_mul=l1, l2_mul=l2)


def make_outer(training: Training, num_params: int) -> Optimizer:
    """The master's outer optimizer of a ``local`` project: SGD on the negated average delta.

    ``average``: no momentum, so with learning rate 1 the new parameters are the average of the
    workers' (local SGD's "plain averaging"); ``nesterov``: Nesterov momentum
    ``outer_momentum`` (DiLoCo)."""
    nesterov = training.outer_optimizer == "nesterov"
    return SGD(num_params, learning_rate=training.outer_learning_rate,
               momentum=training.outer_momentum if nesterov else 0.0, nesterov=nesterov)
