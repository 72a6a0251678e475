"""The replay record of a deterministic run: what ``mlitb closure replay`` needs to re-run it.

A project in deterministic mode (``samples_per_iteration`` set) records, from a starting point
(the *origin*: parameters and optimizer state before its first recorded step), every optimizer
step it takes: which data each contributing trainer computed on (its *share*, as positions in the
closure's training-data manifest), how many samples, in which order the results were summed, and
the SHA-256 of the parameters after the step. Each trainer's work is a pure function of its
share, the sample count, the order seed, the iteration and the parameters (``mlitb.training``'
``deterministic_order``), so the record is enough to recompute every step in-process from the
training data alone, and the hashes say whether the result is bit-identical.

Shares are written in a compact range encoding (``"0-499,700,702"``): positions in
``data.train`` of the closure, in increasing order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ..errors import ClosureError
from ..optim import Hyperparameter

F32Array = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]

DEFAULT_ORDER_SEED: Final = 0
"""The seed of a Python node's deterministic sample order (``mlitb node join`` without
``--seed``); the work order does not carry a seed, so the master records this one."""
DEFAULT_MAX_BATCH: Final = 32
"""A Python node's batch size in deterministic mode (``WorkerOptions.max_batch``)."""

_ITEM = re.compile(r"(\d{1,10})(?:-(\d{1,10}))?")
SHARE_PATTERN: Final = r"^(?:\d{1,10}(?:-\d{1,10})?(?:,\d{1,10}(?:-\d{1,10})?)*)?$"


def format_share(indices: Iterable[int] | npt.NDArray[np.integer]) -> str:
    """Sorted distinct positions as ``"0-499,700,702"`` (runs of consecutive positions)."""
    array = np.unique(np.asarray(indices if isinstance(indices, np.ndarray) else list(indices),
                                 dtype=np.int64))
    if array.size == 0:
        return ""
    breaks = np.flatnonzero(np.diff(array) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [array.size])) - 1
    return ",".join(str(array[s]) if s == e else f"{array[s]}-{array[e]}"
                    for s, e in zip(starts.tolist(), ends.tolist()))


def parse_share(text: str, where: str = "share") -> IndexArray:
    """The positions of a share, increasing and distinct, or ``ClosureError`` naming ``where``."""
    if not text:
        return np.empty(0, dtype=np.int64)
    runs: list[IndexArray] = []
    last = -1
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ClosureError(f"{where}: {item[:40]!r} is not a position or a run 'first-last'")
        first = int(match[1])
        stop = first if match[2] is None else int(match[2])
        if first <= last or stop < first:
            raise ClosureError(f"{where}: positions must increase ({item!r} after {last})")
        runs.append(np.arange(first, stop + 1, dtype=np.int64))
        last = stop
    return np.concatenate(runs)


@dataclass(frozen=True, eq=False)
class ReplayOrigin:
    """The state a replay starts from: the parameters and the optimizer before the first
    recorded step (the net's layers, labels and the optimizer's name are the closure's)."""

    iteration: int
    parameter_version: int
    parameters: F32Array
    hyperparameters: dict[str, Hyperparameter]
    optimizer_step: int
    optimizer_state: dict[str, F32Array]
    outer_step: int = 0
    outer_velocity: F32Array | None = None
    """A ``local`` project's outer optimizer (``mlitb.training.make_outer``) before the first
    step: its step count and momentum (None: not a local project)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", _frozen(self.parameters))
        object.__setattr__(self, "optimizer_state",
                           {k: _frozen(v) for k, v in self.optimizer_state.items()})
        if self.outer_velocity is not None:
            object.__setattr__(self, "outer_velocity", _frozen(self.outer_velocity))


@dataclass(frozen=True)
class ReplayStep:
    """One optimizer step: ``parts`` are ``(share index, samples)`` in the order the results
    were summed; ``sha256`` is the hash of the parameters after the step (little-endian
    float32 bytes); ``lr_scale`` the learning-rate schedule's factor of the step (the gradient
    optimizer's ``lr_scale``, or the multiplier of a local project's inner learning rate)."""

    iteration: int
    parts: tuple[tuple[int, int], ...]
    sha256: str
    lr_scale: float = 1.0


@dataclass(frozen=True, eq=False)
class ReplayRecord:
    """Everything a replay needs besides the closure's net, optimizer name and training data."""

    origin: ReplayOrigin
    shares: tuple[str, ...] = ()
    steps: tuple[ReplayStep, ...] = ()
    seed: int = DEFAULT_ORDER_SEED
    """The seed of the workers' deterministic sample order."""
    max_batch: int = DEFAULT_MAX_BATCH
    """The workers' batch size: samples go through the net in batches of this many."""

    def share(self, index: int) -> IndexArray:
        return parse_share(self.shares[index], f"replay.shares[{index}]")

    def summary(self) -> dict[str, Any]:
        first = self.steps[0].iteration if self.steps else None
        last = self.steps[-1].iteration if self.steps else None
        return {"steps": len(self.steps), "origin_iteration": self.origin.iteration,
                "origin_parameter_version": self.origin.parameter_version,
                "first_iteration": first, "last_iteration": last, "shares": len(self.shares),
                "seed": self.seed, "max_batch": self.max_batch}


def _frozen(array: npt.NDArray[Any]) -> F32Array:
    out = np.array(array, dtype=np.float32)
    out.flags.writeable = False
    return out
