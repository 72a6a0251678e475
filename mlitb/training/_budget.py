"""Latency and work budget per worker (paper §3.3.1.4; docs/architecture.md, the loop's step 4).

Workers have no batch size: the master tells each one how long to compute next time so that its
result reaches the master by the end of the iteration of length ``T``. This module holds, per
worker, smoothed estimates of

* **latency** (seconds): the round trip from sending parameters to receiving the result, minus the
  compute time the worker reports — transfer, queuing, decoding; and
* **compute rate** (samples per second): samples computed divided by the reported compute time,

and turns them into a budget. It is a plain object without I/O or clocks: the master passes the
times it read from trio's clock (``trio.current_time()``), so tests with ``MockClock`` or plain
numbers are exact.

The policy
----------
``budget(worker, T) = clamp(penalty × (T − latency − margin(T)), low=min_fraction × T, high=T)``
where ``margin(T) = margin_seconds + margin_fraction × T`` covers jitter and the worker's overrun
(it checks its clock between chunks of samples, so it stops a little after its budget).

* **Unknown worker** (no latency estimate yet): latency is assumed to be
  ``initial_latency_fraction × T`` (half the iteration by default), a conservative first guess for
  a device that may be a phone on a cellular link; one observation replaces it.
* **Smoothing, robust to an outlier**: each new observation is replaced by the median of the last
  three raw observations, and the estimate moves ``smoothing`` of the way towards it (an EMA).
  A single outlier, a GC pause or a dropped packet, therefore changes nothing once three
  observations exist; a lasting change shows after two observations and is then followed
  geometrically. Before that the estimate is the mean of the one or two observations so far.
* **Rate**: ``samples / compute_seconds``, with compute time floored at 1 ms (a worker's clock
  resolution), so a bogus report cannot make the rate infinite.
* **Missed deadlines**: the robust filter ignores a single spike, so a worker whose result did not
  arrive in time is penalised at once instead: ``missed_deadline`` multiplies its penalty factor
  by ``miss_factor`` (0.5), down to ``min_penalty``; each result that arrives in time
  (``observe(..., late=False)``) multiplies it by ``recover_factor`` again, up to 1.
* **Deterministic mode** counts work in samples: ``budget_samples = max(1, floor(budget × rate))``,
  with ``initial_rate`` for a worker whose rate is not known yet.

The calls of one iteration, at the reduce step: ``observe(w, sent_at, received_at, compute, n)`` for
each result that arrived in time; ``missed_deadline(w)`` for each worker without one; a result that
arrives after the reduce may still be observed with ``late=True`` (it updates the estimates but not
the penalty, which ``missed_deadline`` already applied). Then ``budget(w, T)`` per worker for the
broadcast, and ``forget(w)`` when a worker leaves.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import MlitbError

W = TypeVar("W", bound=Hashable)
"""The type of a worker's identity (the master's choice)."""

__all__ = ["BudgetConfig", "BudgetError", "BudgetPolicy", "WorkerTiming"]


_CLOCK_RESOLUTION = 1e-3  # seconds: compute times below this are taken as this, for the rate
_MAX_SAMPLES = 2**53  # largest sample count accepted in one observation (exact as a float)


class BudgetError(MlitbError):
    """A budget configuration is out of range, or an observation is impossible (NaN or infinite
    times, a result received before it was sent, negative compute time or sample count), or an
    iteration time is not positive."""


@dataclass(frozen=True)
class BudgetConfig:
    """The knobs of the budget policy; every field is validated on construction."""

    margin_seconds: float = 0.05
    """Fixed part of the safety margin (seconds)."""
    margin_fraction: float = 0.05
    """Part of the safety margin proportional to ``T``."""
    min_fraction: float = 0.05
    """Lower clamp of a budget, as a fraction of ``T``: a slow device still does a little."""
    initial_latency_fraction: float = 0.5
    """Latency assumed for a worker never observed, as a fraction of ``T``."""
    initial_rate: float = 10.0
    """Samples per second assumed by ``budget_samples`` before a rate is known."""
    smoothing: float = 0.4
    """EMA weight of a new (median-filtered) observation, in (0, 1]."""
    miss_factor: float = 0.5
    """Penalty multiplier for a missed deadline, in (0, 1)."""
    recover_factor: float = 1.5
    """Penalty multiplier for a result on time (capped at 1), at least 1."""
    min_penalty: float = 1.0 / 64
    """Floor of the penalty factor, in (0, 1]."""

    def __post_init__(self) -> None:
        checks = [
            ("margin_seconds", self.margin_seconds >= 0),
            ("margin_fraction", 0 <= self.margin_fraction < 1),
            ("min_fraction", 0 < self.min_fraction <= 1),
            ("initial_latency_fraction", 0 <= self.initial_latency_fraction < 1),
            ("initial_rate", self.initial_rate > 0),
            ("smoothing", 0 < self.smoothing <= 1),
            ("miss_factor", 0 < self.miss_factor < 1),
            ("recover_factor", self.recover_factor >= 1),
            ("min_penalty", 0 < self.min_penalty <= 1),
        ]
        for name, ok in checks:
            value = getattr(self, name)
            if not (ok and math.isfinite(value)):
                raise BudgetError(f"budget config: {name}={value!r} is out of range")


@dataclass(frozen=True)
class WorkerTiming:
    """One worker's line in the status snapshot."""

    latency_ms: float | None
    """Estimated latency in milliseconds; None before the first observation."""
    samples_per_s: float | None
    """Estimated compute rate; None before the first observation with samples."""
    penalty: float
    """Current missed-deadline penalty factor (1.0: none)."""
    observations: int
    """Results observed so far."""
    missed: int
    """Deadlines missed so far."""


class _Robust:
    """Median of the last three raw values, then an exponential moving average."""

    __slots__ = ("_alpha", "_window", "value")

    def __init__(self, alpha: float) -> None:
        self._alpha = alpha
        self._window: deque[float] = deque(maxlen=3)
        self.value: float | None = None

    def update(self, x: float) -> None:
        self._window.append(x)
        s = sorted(self._window)
        if len(s) < 3:  # warming up: no history worth smoothing against
            self.value = sum(s) / len(s)
        else:
            assert self.value is not None
            self.value += self._alpha * (s[1] - self.value)


@dataclass(eq=False)
class _State:
    latency: _Robust
    rate: _Robust
    penalty: float = 1.0
    observations: int = 0
    missed: int = 0


class BudgetPolicy(Generic[W]):
    """Per-worker latency and compute-rate estimates, and the budgets derived from them."""

    def __init__(self, config: BudgetConfig | None = None) -> None:
        self.config: BudgetConfig = BudgetConfig() if config is None else config
        self._workers: dict[W, _State] = {}

    def observe(
        self,
        worker: W,
        sent_at: float,
        received_at: float,
        compute_seconds: float,
        samples: int,
        *,
        late: bool = False,
    ) -> None:
        """Feed one result: parameters sent at ``sent_at``, result received at ``received_at``.

        Latency is ``received_at − sent_at − compute_seconds``, floored at 0 (a worker whose clock
        runs fast may report more compute than the round trip; its compute time is then capped at
        the round trip). The rate is updated only when ``samples > 0`` and compute time is
        positive (a worker still caching its data reports nothing); ``samples`` must be in
        ``[0, 2**53]``. ``late=False`` (on time)
        relaxes the missed-deadline penalty; ``late=True`` leaves it. Unknown workers are added.
        Raises ``BudgetError`` for impossible values.
        """
        for name, v in (("sent_at", sent_at), ("received_at", received_at),
                        ("compute_seconds", compute_seconds)):
            if not math.isfinite(v):
                raise BudgetError(f"observation of {worker!r}: {name}={v!r} is not finite")
        if received_at < sent_at:
            raise BudgetError(f"observation of {worker!r}: received_at < sent_at")
        if compute_seconds < 0:
            raise BudgetError(f"observation of {worker!r}: negative compute_seconds")
        if not 0 <= samples <= _MAX_SAMPLES:
            raise BudgetError(f"observation of {worker!r}: sample count {samples!r} out of range")
        st = self._state(worker)
        round_trip = received_at - sent_at
        compute = min(compute_seconds, round_trip)
        st.latency.update(round_trip - compute)
        if samples > 0 and compute > 0:
            st.rate.update(samples / max(compute, _CLOCK_RESOLUTION))
        st.observations += 1
        if not late:
            st.penalty = min(1.0, st.penalty * self.config.recover_factor)

    def missed_deadline(self, worker: W) -> None:
        """Record that ``worker``'s result did not arrive by the deadline: shrink its next budget."""
        st = self._state(worker)
        st.missed += 1
        st.penalty = max(self.config.min_penalty, st.penalty * self.config.miss_factor)

    def forget(self, worker: W) -> None:
        """Drop everything known about ``worker`` (it left). Unknown workers are ignored."""
        self._workers.pop(worker, None)

    def latency(self, worker: W) -> float | None:
        """The latency estimate in seconds, or None if ``worker`` was never observed."""
        st = self._workers.get(worker)
        return None if st is None else st.latency.value

    def rate(self, worker: W) -> float | None:
        """The compute-rate estimate in samples/s, or None if not known yet."""
        st = self._workers.get(worker)
        return None if st is None else st.rate.value

    def margin(self, iteration_time: float) -> float:
        """The safety margin in seconds for an iteration of ``iteration_time`` seconds."""
        _check_t(iteration_time)
        return self.config.margin_seconds + self.config.margin_fraction * iteration_time

    def budget(self, worker: W, iteration_time: float) -> float:
        """Seconds ``worker`` should compute next so its result arrives within ``iteration_time``.

        Always within ``[min_fraction × T, T]``; unknown workers get the conservative default.
        Raises ``BudgetError`` if ``iteration_time`` is not a positive finite number.
        """
        t = iteration_time
        _check_t(t)
        cfg = self.config
        st = self._workers.get(worker)
        latency = None if st is None else st.latency.value
        if latency is None:
            latency = cfg.initial_latency_fraction * t
        penalty = 1.0 if st is None else st.penalty
        raw = penalty * (t - latency - self.margin(t))
        return min(t, max(cfg.min_fraction * t, raw))

    def budget_samples(self, worker: W, iteration_time: float) -> int:
        """The budget counted in samples (deterministic mode): ``budget × rate``, at least 1."""
        rate = self.rate(worker)
        if rate is None:
            rate = self.config.initial_rate
        n = math.floor(self.budget(worker, iteration_time) * rate)
        return max(1, n)

    def statistics(self) -> dict[W, WorkerTiming]:
        """A snapshot per known worker for the status message."""
        out: dict[W, WorkerTiming] = {}
        for w, st in self._workers.items():
            lat = st.latency.value
            out[w] = WorkerTiming(
                latency_ms=None if lat is None else lat * 1000.0,
                samples_per_s=st.rate.value,
                penalty=st.penalty,
                observations=st.observations,
                missed=st.missed,
            )
        return out

    def _state(self, worker: W) -> _State:
        st = self._workers.get(worker)
        if st is None:
            a = self.config.smoothing
            st = self._workers[worker] = _State(_Robust(a), _Robust(a))
        return st


def _check_t(t: float) -> None:
    if not (math.isfinite(t) and t > 0):
        raise BudgetError(f"iteration time must be a positive number of seconds, got {t!r}")

