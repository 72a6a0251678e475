"""One project's state, without I/O: the net and optimizer, who works on what, and the history.

The trio shell (``mlitb.master``) owns the sockets and the clock; it calls these methods at the
points of the event loop (docs/architecture.md) and sends what they return. Times are numbers
it passes in.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from ..errors import MlitbError
from ..nn import Net
from ..optim import Optimizer
from ..protocol import (
    MAX_HISTORY_POINTS,
    MAX_U32,
    WIRE_OF_ENCODING,
    DataCounts,
    HistoryPoint,
    ProjectInfo,
    ProjectStatus,
    ProjectSummary,
    ResultFrame,
    ResultKind,
    StatsPoint,
    Timing,
    Training,
    WorkerStatus,
    result_encoding,
)
from ._allocator import Allocator
from ._budget import BudgetConfig, BudgetPolicy
from ._deterministic import Recorder
from ._record import ReplayRecord
from ._reduce import ReduceSummary, aggregate, reduce_gradient_sums, reduce_parameter_deltas
from ._settings import TrainingError, check_training, lr_factor, make_outer, progress

MAX_SAMPLES_PER_SECOND: Final = 1_000_000
"""The most samples a result of a work order given in seconds may claim per second of the
iteration (the fastest engine does a few thousand per second on the smallest nets): a larger claim
is refused at intake, so no trainer weighs more than this however much it lies (docs/security.md)."""
MAX_SAMPLES_TRAINED: Final = (1 << 53) - 1
"""``samples_trained`` saturates here (a JSON-safe integer, the closure's ``count``)."""

Reducer = Callable[[Sequence[ResultFrame], np.ndarray, Optimizer], ReduceSummary]


class Refusal(str):
    """Why a result was refused (a str, so it reads as the message) and the protocol error code
    the trainer is answered with."""

    code: str

    def __new__(cls, message: str, code: str = "stale_result") -> Refusal:
        self = super().__new__(cls, message)
        self.code = code
        return self


class LabelConflictError(MlitbError):
    """Registered data names its labels in an order that contradicts the project's labels."""


@dataclass
class Member:
    """A worker of the project, as the project sees it."""

    worker_id: int
    role: str  # trainer | tracker | stats
    client: str
    host: str
    state: str = "caching"
    budget_s: float | None = None
    cached: int = 0  # stats workers' cache (trainers' caches live in the allocator)


@dataclass
class WorkOrder:
    """What one trainer is told at the start of an iteration."""

    worker_id: int
    seconds: float | None
    samples: int | None
    learning_rate: float | None = None
    """``local`` projects: the inner optimizer's learning rate this round."""


@dataclass
class Iteration:
    """The map step in flight: the orders sent and the results received so far."""

    number: int
    parameter_version: int
    started_at: float
    deadline: float
    orders: dict[int, WorkOrder]
    sent_at: float = 0.0
    results: dict[int, tuple[ResultFrame, float]] = field(default_factory=dict)
    shares: dict[int, npt.NDArray[np.int64]] = field(default_factory=dict)
    """Deterministic mode: each ordered trainer's share, as positions in the training data."""
    lr_scale: float = 1.0
    """The schedule's factor this iteration was planned with (recorded for replay)."""

    def complete(self) -> bool:
        return set(self.results) >= set(self.orders)


class Project:
    """The state of one project between and during iterations.

    ``training`` (``mlitb.training``) chooses the algorithm: ``gradient`` steps ``optimizer``
    here on the averaged gradient; ``local`` sends ``optimizer``'s name and hyperparameters to
    the trainers as their inner optimizer and steps ``outer`` here on the averaged delta. The
    learning-rate schedule follows ``samples_trained`` / ``seconds_trained``.

    ``samples_per_iteration`` set: deterministic mode. Work is counted in samples, only trainers
    whose whole allocation is cached get work, results are summed in a fixed order (by their
    share's first data id, which does not depend on worker ids) and every step is recorded for
    replay (``replay_record()``, docs/closure.md).
    """

    def __init__(self, name: str, net: Net, optimizer: Optimizer, optimizer_name: str,
                 iteration_time: float, *, samples_per_iteration: int | None = None,
                 reducer: Reducer | None = None,
                 seeds: dict[str, int] | None = None,
                 budget_config: BudgetConfig | None = None,
                 training: Training | None = None) -> None:
        self.name = name
        self.net = net
        self.optimizer = optimizer
        self.optimizer_name = optimizer_name
        self.iteration_time = iteration_time
        self.samples_per_iteration = samples_per_iteration
        self.training = check_training(training) if training is not None else Training()
        if samples_per_iteration is not None and self.training.wire != "float32":
            # A replay re-runs each share's result exactly; a compressed result depends on the
            # worker's residual, i.e. on which worker computed which shares before.
            raise TrainingError(f"training.wire: deterministic projects (samples per "
                                f"iteration) send float32 results only, got "
                                f"{self.training.wire!r}")
        self.outer: Optimizer | None = None
        if self.training.algorithm == "local":
            self.outer = make_outer(self.training, net.num_params)
        if reducer in (reduce_gradient_sums, reduce_parameter_deltas):
            reducer = None
        self.reducer: Reducer | None = reducer
        """None: ``aggregate`` by ``training.aggregation`` (with the per-result checks); a
        function of (results, parameters, optimizer) replaces it (benchmarks, tests)."""
        self.strikes: dict[int, int] = {}
        """Robust aggregation: rounds in a row each trainer's result was refused."""
        self.dropped: list[tuple[int, str]] = []
        """Trainers the last ``finish_iteration`` dropped (refused ``max_strikes`` rounds in a
        row) and why; the loop says bye to them."""
        self.checks: ReduceSummary | None = None
        """The last round's summary (what the per-result checks refused, clipped, capped)."""
        self.samples_trained = 0
        self.seconds_trained = 0.0
        self.paused = False
        self.iteration = 0
        self.parameter_version = 0
        self.allocator: Allocator[int] = Allocator()
        self.budgets: BudgetPolicy[int] = BudgetPolicy(budget_config)
        self.seeds: dict[str, int] = dict(seeds or {})
        self.created: str | None = None  # when its first closure was written (autosave)
        self.recorder: Recorder | None = Recorder() if samples_per_iteration is not None \
            else None
        self._train_ids: list[int] = []
        self._train_sorted: npt.NDArray[np.int64] | None = None
        self.members: dict[int, Member] = {}
        self.pending_joins: list[int] = []
        self.test_ids: list[int] = []
        self.labels_registered = False
        self.current: Iteration | None = None
        self.refused: str | None = None
        """Why the last iteration's step was refused (None: it stepped, or had nothing)."""
        self.history: deque[HistoryPoint] = deque(maxlen=MAX_HISTORY_POINTS)
        self.test_error: deque[StatsPoint] = deque(maxlen=MAX_HISTORY_POINTS)
        self.timing = Timing()

    @property
    def deterministic(self) -> bool:
        return self.samples_per_iteration is not None

    def replay_record(self) -> ReplayRecord | None:
        """The replay record of a deterministic project so far (None otherwise)."""
        return self.recorder.record() if self.recorder is not None else None

    def set_hyperparameters(self, **changes: float) -> None:
        """Change the optimizer's hyperparameters (checked first); a replay record restarts."""
        self.optimizer.set_hyperparameters(**changes)
        if changes and self.recorder is not None:
            self.recorder.reset()

    def set_training(self, training: Training) -> None:
        """New training settings from the next iteration: the schedule, augmentation, batch
        size and the outer optimizer (its momentum is kept); not the algorithm. Raises
        ``TrainingError``."""
        training = self.check_training(training)
        if self.outer is not None:
            nesterov = training.outer_optimizer == "nesterov"
            self.outer.set_hyperparameters(
                learning_rate=training.outer_learning_rate, nesterov=nesterov,
                momentum=training.outer_momentum if nesterov else 0.0)
        if training != self.training and self.recorder is not None:
            self.recorder.reset()
        self.training = training

    def check_training(self, training: Training) -> Training:
        """``training`` checked as ``set_training`` would take it (nothing changes)."""
        training = check_training(training)
        if training.algorithm != self.training.algorithm:
            raise TrainingError(f"training.algorithm: project {self.name} trains with "
                                f"{self.training.algorithm!r}; the algorithm is chosen at "
                                "creation (start a new project from its closure to change it)")
        if training.wire != self.training.wire:
            # Results in flight and the workers' residuals belong to one encoding.
            raise TrainingError(f"training.wire: project {self.name} sends "
                                f"{self.training.wire!r} results; the wire is chosen at "
                                "creation (start a new project from its closure to change it)")
        return training

    @property
    def lr_factor(self) -> float:
        """The schedule's multiplier of the learning rate now."""
        return lr_factor(self.training, progress(self.training, self.samples_trained,
                                                 self.seconds_trained))

    # -- membership -----------------------------------------------------------------------------
    def add_member(self, member: Member) -> None:
        self.members[member.worker_id] = member
        if member.role == "trainer":
            self.pending_joins.append(member.worker_id)  # joins at the next iteration boundary
        else:
            member.state = "tracking"

    def remove_member(self, worker_id: int) -> Member | None:
        member = self.members.pop(worker_id, None)
        if member is None:
            return None
        if worker_id in self.pending_joins:
            self.pending_joins.remove(worker_id)
        if worker_id in self.allocator:
            self.allocator.leave(worker_id)
        self.budgets.forget(worker_id)
        self.strikes.pop(worker_id, None)
        if self.current is not None:
            self.current.orders.pop(worker_id, None)
            self.current.results.pop(worker_id, None)
        return member

    def trainers(self) -> list[int]:
        return [w for w in self.allocator.workers() if w in self.members]

    def of_role(self, role: str) -> list[int]:
        return [w for w, m in self.members.items() if m.role == role]

    @property
    def state(self) -> str:
        if self.paused:
            return "paused"
        return "running" if self.trainers() or self.pending_joins else "waiting"

    # -- data -------------------------------------------------------------------------------------
    def plan_labels(self, names: Sequence[str]) -> list[str]:
        """The label list to store data naming ``names`` (the data's whole label list) under,
        so that each label's index is its output's index here: this project's labels as
        ``register_labels`` will leave them (a first upload renames the outputs it names), then
        the labels it does not have yet (outputs that will be added). Registering the result
        never conflicts. Nothing changes here."""
        names, old = list(names), list(self.net.labels)
        base = old
        if not self.labels_registered:
            renamed = names[:len(old)] + [x for x in old[len(names):] if x not in names]
            if len(set(renamed)) == len(renamed) == len(old):
                base = renamed
        return base + [name for name in names if name not in base]

    def register_labels(self, names: Sequence[str]) -> list[int]:
        """Adopt the data server's label list (append-only, so index i is the same everywhere).

        Returns the parameter index map of each class the output layer had to grow by (empty if
        it did not grow); the optimizer follows.
        """
        names = list(names)
        old = self.net.labels
        if self.labels_registered and names[:len(old)] != old[:len(names)]:
            raise LabelConflictError(f"project {self.name}: the data's labels {names[:8]} do not "
                                     f"extend the project's labels {old[:8]}")
        grown = []
        if not self.labels_registered:
            # The first data names the classes it brings; outputs beyond keep their names.
            renamed = names[:len(old)] + [x for x in old[len(names):] if x not in names]
            if len(set(renamed)) == len(renamed) and len(renamed) == len(old):
                self.net.labels = renamed
            self.labels_registered = True
        for name in names[len(self.net.labels):]:
            index_map = self.net.add_class(name)
            l1, l2 = self.net.decay_multipliers()
            self.optimizer.grow(index_map, self.net.num_params, l1_mul=l1, l2_mul=l2)
            if self.outer is not None:
                self.outer.grow(index_map, self.net.num_params)
            grown.append(len(self.net.labels) - 1)
        if grown and self.recorder is not None:
            self.recorder.reset()  # another net: replay starts from the grown one
        return grown

    def add_data(self, split: str, ids: Sequence[int]) -> list[int]:
        """Register ids; returns the test ids that were new (they go to stats workers)."""
        if split == "train":
            self.allocator.add_data(ids)
            known = set(self._train_ids)
            self._train_ids.extend(i for i in ids if i not in known)
            self._train_sorted = None
            return []
        known = set(self.test_ids)
        new = [i for i in ids if i not in known]
        self.test_ids.extend(new)
        return new

    # -- the event loop ---------------------------------------------------------------------------
    def admit_pending(self) -> list[int]:
        """Step 2: trainers that arrived during the last iteration join the allocation."""
        joined = [w for w in self.pending_joins if w in self.members]
        for w in joined:
            self.allocator.join(w)
        self.pending_joins.clear()
        return joined

    def ready_trainers(self) -> list[int]:
        """The trainers that get work this iteration: all of them, or in deterministic mode
        those whose whole (non-empty) allocation is cached, so that what they compute depends
        on their share alone, not on how far their download got."""
        trainers = self.trainers()
        if not self.deterministic:
            return trainers
        shares = self.allocator.statistics().workers
        return [w for w in trainers if 0 < shares[w].allocated == shares[w].cached]

    def train_positions(self, ids: frozenset[int] | set[int]) -> npt.NDArray[np.int64]:
        """Training ids -> their positions in the training data in id order, which is the
        order of the data manifest's training samples (the data server numbers uploads
        increasingly)."""
        if self._train_sorted is None:
            self._train_sorted = np.sort(np.asarray(self._train_ids, dtype=np.int64))
        wanted = np.sort(np.fromiter(ids, dtype=np.int64, count=len(ids)))
        return np.searchsorted(self._train_sorted, wanted).astype(np.int64)

    def plan_iteration(self, now: float) -> Iteration:
        """Steps 4-5: a work order for every (ready) trainer, budgeted to return by the
        deadline (or, in deterministic mode, a share of ``samples_per_iteration``)."""
        t = self.iteration_time
        orders: dict[int, WorkOrder] = {}
        trainers = self.ready_trainers()
        shares: dict[int, npt.NDArray[np.int64]] = {}
        if self.recorder is not None:
            self.recorder.begin(self.iteration, self.parameter_version, self.net.params,
                                self.optimizer, self.outer)
            shares = {w: self.train_positions(self.allocator.allocation_of(w))
                      for w in trainers}
        factor = self.lr_factor
        inner_lr: float | None = None
        if self.outer is not None:
            inner_lr = self.optimizer.learning_rate * factor
        else:
            self.optimizer.lr_scale = factor
        for w in trainers:
            if self.samples_per_iteration is not None:
                share = -(-self.samples_per_iteration // len(trainers))
                orders[w] = WorkOrder(w, None, max(1, share), inner_lr)
            else:
                seconds = max(0.001, self.budgets.budget(w, t))
                orders[w] = WorkOrder(w, seconds, None, inner_lr)
                self.members[w].budget_s = seconds
        self.current = Iteration(self.iteration, self.parameter_version, now, now + t, orders,
                                 shares=shares, lr_scale=factor)
        return self.current

    def max_samples(self, order: WorkOrder) -> int:
        """The most samples a result of ``order`` may cover: the order's samples in
        deterministic mode, else ``MAX_SAMPLES_PER_SECOND`` over the iteration's T."""
        if order.samples is not None:
            return order.samples
        return math.ceil(MAX_SAMPLES_PER_SECOND * max(self.iteration_time, order.seconds or 0.0))

    def accept_result(self, worker_id: int, frame: ResultFrame, now: float) -> Refusal | None:
        """Record a trainer's result; returns why it was refused, or None."""
        wire = self.training.wire
        if frame.encoding is not result_encoding(wire):
            return Refusal(f"result.encoding: project {self.name} takes {wire} results, this "
                           f"one is {WIRE_OF_ENCODING[frame.encoding]}; the result was dropped",
                           "bad_frame")
        it = self.current
        if it is None or frame.parameter_version != it.parameter_version:
            return Refusal(f"result for parameter version {frame.parameter_version} is stale "
                           f"(current: {self.parameter_version})")
        if worker_id not in it.orders:
            return Refusal("no work order is open for this worker")
        if worker_id in it.results:
            return Refusal("a result for this work order was already received")
        allowed = self.max_samples(it.orders[worker_id])
        if frame.samples > allowed:
            return Refusal(f"result.samples: {frame.samples} is more than the work order allows "
                           f"({allowed}); the result was dropped", "invalid_value")
        it.results[worker_id] = (frame, now)
        return None

    def finish_iteration(self, now: float) -> ReduceSummary:
        """Step 3: reduce what arrived, in worker order; late workers get smaller budgets."""
        it = self.current
        assert it is not None, "finish_iteration without plan_iteration"
        for w in it.orders:
            member = self.members.get(w)
            if member is None:
                continue
            if w in it.results:
                frame, received = it.results[w]
                self.budgets.observe(w, it.sent_at, received, min(frame.compute_seconds,
                                     max(received - it.sent_at, 0.0)), frame.samples)
                member.state = "training" if frame.samples > 0 else "caching"
            else:
                self.budgets.missed_deadline(w)
                member.state = "late"
        if self.deterministic:  # a key that is the same in every run, unlike worker ids
            order = sorted(it.results, key=lambda w: (int(it.shares[w][0]) if w in it.shares
                                                      and it.shares[w].size else -1, w))
        else:
            order = sorted(it.results)
        ordered = [it.results[w][0] for w in order]
        stepper = self.outer if self.outer is not None else self.optimizer
        self.refused = None
        self.dropped = []
        try:
            if self.reducer is not None:
                summary = self.reducer(ordered, self.net.params, stepper)
            else:
                summary = aggregate(ordered, self.net.params, stepper, self.training,
                                    [it.orders[w].seconds if w in it.orders else None
                                     for w in order])
        except MlitbError as exc:  # StepRefused (the reducers restore the model) or a bad value
            self.refused = str(exc)
            summary = ReduceSummary(samples=0, loss_sum=0.0, correct=0, workers=len(ordered),
                                    stepped=False)
        self.checks = summary
        if summary.stepped:
            kind = ResultKind.GRADIENT_SUM if self.outer is None else ResultKind.PARAMETER_DELTA
            if self.recorder is not None:
                self.recorder.step(it.number, [
                    (it.shares[w], it.results[w][0].samples) for w in order
                    if it.results[w][0].samples > 0 and w in it.shares
                    and it.results[w][0].kind is kind], self.net.params, it.lr_scale)
            self.parameter_version += 1
            self.samples_trained = min(self.samples_trained + summary.samples,
                                       MAX_SAMPLES_TRAINED)
            self.seconds_trained += max(0.0, now - it.started_at)
            accuracy = summary.correct / summary.samples if self.net.is_classifier else None
            loss = summary.loss_sum / summary.samples
            # The wire's counters are u32 and its numbers finite: totals saturate.
            self.history.append(HistoryPoint(iteration=min(self.iteration, MAX_U32),
                                             samples=min(summary.samples, MAX_U32),
                                             loss=loss if math.isfinite(loss)
                                             else sys.float_info.max,
                                             accuracy=accuracy))
        self.iteration += 1
        computes = [f.compute_seconds for f, _ in it.results.values()]
        self.timing = Timing(compute=max(computes, default=0.0),
                             wait=max(0.0, now - it.sent_at - max(computes, default=0.0)),
                             reduce=0.0, broadcast=max(0.0, it.sent_at - it.started_at))
        self.current = None
        self._count_strikes(order, ordered, summary)
        return summary

    def _count_strikes(self, order: list[int], ordered: list[ResultFrame],
                       summary: ReduceSummary) -> None:
        """A trainer whose result was refused gets a strike, one whose result was used loses
        its strikes; at ``max_strikes`` in a row it is dropped (removed here, listed in
        ``dropped`` with the reason for the loop to say bye)."""
        refused = dict(summary.refused)
        limit = self.training.max_strikes
        for i, (w, frame) in enumerate(zip(order, ordered)):
            if i in refused:
                self.strikes[w] = self.strikes.get(w, 0) + 1
                if limit and self.strikes[w] >= limit and w in self.members:
                    why = (f"its results were refused {self.strikes[w]} rounds in a row "
                           f"(last: {refused[i]})")
                    self.remove_member(w)
                    self.dropped.append((w, why))
            elif frame.samples > 0:
                self.strikes.pop(w, None)

    def record_stats(self, point: StatsPoint) -> None:
        self.test_error.append(point)

    # -- what the wire shows ----------------------------------------------------------------------
    def info(self) -> ProjectInfo:
        return ProjectInfo(name=self.name, state=self.state,  # type: ignore[arg-type]
                           spec=tuple(self.net.spec()), labels=tuple(self.net.labels),
                           iteration_time=self.iteration_time, iteration=self.iteration,
                           parameter_version=self.parameter_version,
                           parameter_count=self.net.num_params, training=self.training,
                           optimizer=self.optimizer_name,
                           hyperparameters={k: float(v) for k, v in
                                            self.optimizer.hyperparameters().items()})

    def data_counts(self) -> DataCounts:
        stats = self.allocator.statistics()
        # Ids cached by the trainer they are allocated to: what can be trained on right now.
        cached = sum(share.cached for share in stats.workers.values())
        return DataCounts(total=stats.total, allocated=stats.total - stats.unallocated,
                          cached=min(cached, stats.total), unallocated=stats.unallocated,
                          test=len(self.test_ids))

    def status(self) -> ProjectStatus:
        shares = self.allocator.statistics().workers
        timings = self.budgets.statistics()
        workers = []
        for w, m in sorted(self.members.items()):
            share, timing = shares.get(w), timings.get(w)
            workers.append(WorkerStatus(
                worker_id=w, role=m.role, client=m.client, host=m.host,  # type: ignore[arg-type]
                state=m.state,  # type: ignore[arg-type]
                latency_ms=timing.latency_ms if timing else None,
                samples_per_s=timing.samples_per_s if timing else None,
                budget_s=m.budget_s,
                allocated=share.allocated if share else (
                    len(self.test_ids) if m.role == "stats" else 0),
                cached=share.cached if share else min(m.cached, len(self.test_ids))))
        hp = {k: float(v) for k, v in self.optimizer.hyperparameters().items()}
        return ProjectStatus(name=self.name, state=self.state,  # type: ignore[arg-type]
                             iteration=self.iteration, parameter_version=self.parameter_version,
                             iteration_time=self.iteration_time,
                             optimizer=self.optimizer_name, hyperparameters=hp,
                             training=self.training,
                             timing=self.timing, history=tuple(self.history),
                             test_error=tuple(self.test_error), data=self.data_counts(),
                             workers=tuple(workers))

    def summary(self) -> ProjectSummary:
        c, h, w = self.net.input_shape
        return ProjectSummary(
            name=self.name, state=self.state,  # type: ignore[arg-type]
            iteration=self.iteration,
            iteration_time=self.iteration_time, optimizer=self.optimizer_name,
            input_shape=(c, h, w), labels=tuple(self.net.labels), workers=len(self.members),
            data=self.data_counts(), loss=self.history[-1].loss if self.history else None,
            test_error=self.test_error[-1].error if self.test_error else None)
