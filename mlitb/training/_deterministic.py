"""Deterministic mode's bookkeeping: the replay record a project writes as it trains.

In deterministic mode (``samples_per_iteration`` set) a trainer's result is a pure function of
its share of the data, the sample count, the order seed, the iteration number and the parameters.
The ``Recorder`` keeps what a replay needs to recompute every step: the origin (parameters and
optimizer state before the first recorded step), each contributing trainer's share as positions
in the training-data manifest, the parts of every step in the order they were summed, and the
parameters' hash after it. Anything that changes the algorithm outside that record (new
hyperparameters, a grown output layer) starts a new record from the state at that point.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from ..optim import Optimizer
from ._record import (
    DEFAULT_MAX_BATCH,
    DEFAULT_ORDER_SEED,
    ReplayOrigin,
    ReplayRecord,
    ReplayStep,
    format_share,
)


def parameters_sha256(params: npt.NDArray[np.float32]) -> str:
    """Hex SHA-256 of the parameters as little-endian float32 bytes (as closures hash them)."""
    return hashlib.sha256(np.ascontiguousarray(params, dtype="<f4").tobytes()).hexdigest()


class Recorder:
    """The replay record of one deterministic project, built step by step."""

    def __init__(self, record: ReplayRecord | None = None, *, seed: int = DEFAULT_ORDER_SEED,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.seed, self.max_batch = seed, max_batch
        self.origin: ReplayOrigin | None = None
        self._shares: list[str] = []
        self._share_index: dict[str, int] = {}
        self._steps: list[ReplayStep] = []
        if record is not None:  # continue a record read from a closure (a restarted master)
            self.seed, self.max_batch = record.seed, record.max_batch
            self.origin = record.origin
            self._shares = list(record.shares)
            self._share_index = {s: i for i, s in enumerate(self._shares)}
            self._steps = list(record.steps)

    @property
    def steps(self) -> int:
        return len(self._steps)

    def reset(self) -> None:
        """Forget the record: the next iteration starts a new one from the state then."""
        self.origin = None
        self._shares, self._share_index, self._steps = [], {}, []

    def begin(self, iteration: int, parameter_version: int, params: npt.NDArray[np.float32],
              optimizer: Optimizer, outer: Optimizer | None = None) -> None:
        """Called before each iteration; takes the origin if no record is open. ``outer``: a
        local project's outer optimizer, whose momentum the replay must start from too."""
        if self.origin is not None:
            return
        state = optimizer.state()
        step = int(state.pop("step"))
        outer_step, outer_velocity = 0, None
        if outer is not None:
            outer_state = outer.state()
            outer_step = int(outer_state.pop("step"))
            outer_velocity = next(v for v in outer_state.values() if isinstance(v, np.ndarray))
        self.origin = ReplayOrigin(
            iteration=iteration, parameter_version=parameter_version, parameters=params,
            hyperparameters=optimizer.hyperparameters(), optimizer_step=step,
            optimizer_state={k: v for k, v in state.items() if isinstance(v, np.ndarray)},
            outer_step=outer_step, outer_velocity=outer_velocity)

    def share(self, positions: npt.NDArray[np.int64]) -> int:
        """The index of a share (positions in the training manifest), added if new."""
        text = format_share(positions)
        index = self._share_index.get(text)
        if index is None:
            index = self._share_index[text] = len(self._shares)
            self._shares.append(text)
        return index

    def step(self, iteration: int, parts: list[tuple[npt.NDArray[np.int64], int]],
             params: npt.NDArray[np.float32], lr_scale: float = 1.0) -> None:
        """Record one optimizer step: ``parts`` are (share positions, samples) in the order they
        were summed; ``params`` the parameters after the step; ``lr_scale`` the schedule's
        factor the iteration was planned with. Ignored without an origin (the record was reset
        during the iteration)."""
        if self.origin is None:
            return
        self._steps.append(ReplayStep(
            iteration=iteration, parts=tuple((self.share(p), n) for p, n in parts),
            sha256=parameters_sha256(params), lr_scale=float(lr_scale)))

    def record(self) -> ReplayRecord | None:
        """A snapshot of the record (None before the first iteration of a record)."""
        if self.origin is None:
            return None
        return ReplayRecord(origin=self.origin, shares=tuple(self._shares),
                            steps=tuple(self._steps), seed=self.seed, max_batch=self.max_batch)
