"""What a worker does with its connection, by role: a small class each.

A ``Worker`` (``_worker.py``) owns the connection, the project's network, the data cache and the
downloader; its role adds the tasks that make it a trainer (answer every work order with one
result frame, computing in a thread), a stats worker (evaluate new parameter versions on the
test cache, within a share of one core) or a tracker (keep the latest parameters). A role lives
as long as its worker, so what it keeps (a trainer's inner optimizer, error feedback and passes
over its cache) outlives connections; ``joined`` says a new connection was welcomed.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, ClassVar

import trio

from mlitb.nn import Net
from mlitb.optim import Optimizer, from_wire
from mlitb.protocol import (
    ParametersFrame,
    ProjectInfo,
    ResultKind,
    StatsReport,
    Work,
    encode_result,
    encode_text,
    result_encoding,
)
from mlitb.training import (
    ComputeResult,
    ErrorFeedback,
    Evaluation,
    Passes,
    compute_gradient,
    compute_local,
    empty_result,
    evaluate,
    inner_hyperparameters,
    make_inner,
)

from ._reports import WorkerPhase

if TYPE_CHECKING:
    from ._worker import Worker


class Role:
    """The part of a worker its role decides. ``worker`` gives the shared state."""

    name: ClassVar[str]
    needs_data: ClassVar[bool] = True
    """Whether the master allocates data to this role (the worker then downloads and caches)."""
    busy: ClassVar[WorkerPhase]
    """The phase once everything allocated is cached."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def joined(self) -> None:
        """A new connection was welcomed (another worker id)."""

    def start(self, nursery: trio.Nursery) -> None:
        """Start this role's tasks for one connection (they end with it)."""

    def on_parameters(self, frame: ParametersFrame) -> None:
        """The master broadcast a parameters frame (``worker.params`` holds it already)."""

    def on_work(self, order: Work) -> None:
        """A work order (only trainers get them)."""
        self.worker.log(logging.DEBUG, f"ignored a work order ({self.name})")

    def wake(self) -> None:
        """Parameters, allocation or cache changed."""


class Tracker(Role):
    """Keeps the latest parameters in its network (e.g. to serve predictions)."""

    name = "tracker"
    needs_data = False
    busy = "tracking"

    def on_parameters(self, frame: ParametersFrame) -> None:
        if self.worker.net is not None:
            self.worker.net.params = frame.vector
            self.worker.log(logging.DEBUG, f"tracking parameters v{frame.parameter_version} "
                             f"(iteration {frame.iteration})")


class Trainer(Role):
    """Answers each work order with exactly one result frame."""

    name = "trainer"
    busy = "training"

    def __init__(self, worker: Worker) -> None:
        super().__init__(worker)
        self.inner: Optimizer | None = None
        """A ``local`` project's inner optimizer: its state carries over between rounds."""
        self._inner_key: tuple[str, int] | None = None
        self.feedback = ErrorFeedback()
        """Compressed results: what encoding lost, sent with the next result."""
        self.passes = Passes(worker.rng)
        """The worker's passes over its cache (time budgets): kept between rounds."""
        self._orders: trio.MemorySendChannel[Work] | None = None

    def joined(self) -> None:
        self.inner, self._inner_key = None, None  # a joiner's inner optimizer starts from zero
        self.feedback.reset()  # another worker id: a new stream of results
        self.passes = Passes(self.worker.rng)  # and its first pass from the start

    def start(self, nursery: trio.Nursery) -> None:
        send, receive = trio.open_memory_channel[Work](math.inf)
        self._orders = send
        nursery.start_soon(self._serve, send, receive)

    def on_work(self, order: Work) -> None:
        if self._orders is not None:
            try:
                self._orders.send_nowait(order)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # the connection is ending

    async def _serve(self, send: trio.MemorySendChannel[Work],
                     orders: trio.MemoryReceiveChannel[Work]) -> None:
        with send, orders:
            async for order in orders:
                # Work orders that piled up behind a long computation are stale: answer each
                # with an empty result (every order gets exactly one) and compute the newest.
                while True:
                    try:
                        newer = orders.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self._send_result(order, empty_result(self.worker.num_params))
                    order = newer
                result = await self._compute(order)
                self._send_result(order, result)

    async def _compute(self, order: Work) -> ComputeResult:
        w = self.worker
        params, net, cache = w.params, w.net, w.cache
        if params is None or net is None or cache is None or \
                params.parameter_version != order.parameter_version or \
                params.vector.size != net.num_params:
            have = params.parameter_version if params is not None else None
            w.log(logging.WARNING, f"work order for parameters v{order.parameter_version}, "
                   f"but this worker holds v{have}: answering with 0 samples")
            return empty_result(w.num_params)
        view = cache.snapshot()
        seed = w.options.seed or 0
        info = w.info
        assert info is not None
        training = info.training
        inner = self._inner_optimizer(info, net, fresh=order.samples is not None) \
            if training.algorithm == "local" else None
        learning_rate = order.learning_rate if order.learning_rate is not None else \
            float(info.hyperparameters.get("learning_rate", 0.01))

        # Deterministic orders are drawn from (seed, iteration) alone, so that a replay can
        # follow them; time budgets continue the worker's pass.
        passes = self.passes if order.samples is None else None

        def run() -> ComputeResult:
            net.params = params.vector
            if inner is not None:
                return compute_local(
                    net, view, inner, learning_rate=learning_rate,
                    batch_size=training.batch_size, seconds=order.seconds,
                    samples=order.samples, rng=w.rng, seed=seed, iteration=order.iteration,
                    clock=w.clock, pacer=w.pacer, should_stop=w.stopping,
                    shift=training.shift, flip=training.flip, passes=passes)
            return compute_gradient(
                net, view, seconds=order.seconds, samples=order.samples, rng=w.rng,
                seed=seed, iteration=order.iteration, clock=w.clock, pacer=w.pacer,
                max_batch=w.options.max_batch, should_stop=w.stopping,
                shift=training.shift, flip=training.flip, passes=passes)

        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)

    def _inner_optimizer(self, info: ProjectInfo, net: Net, *, fresh: bool) -> Optimizer:
        """The inner optimizer for this round: the one kept from the last round with the
        project's current hyperparameters, or a new one (first round, another optimizer or
        net size, or ``fresh``: deterministic rounds each start from zero). The master's
        schedule sets the learning rate, so the inner optimizer's own step decay is off."""
        hp = from_wire(info.hyperparameters)
        key = (info.optimizer, net.num_params)
        if fresh or self.inner is None or self._inner_key != key:
            self.inner = make_inner(info.optimizer, hp, net)
            self._inner_key = key
        else:
            self.inner.set_hyperparameters(**inner_hyperparameters(hp))
        return self.inner

    def _send_result(self, order: Work, result: ComputeResult) -> None:
        w = self.worker
        training = w.info.training if w.info is not None else None
        local = training is not None and training.algorithm == "local"
        encoding = result_encoding(training.wire if training is not None else "float32")
        # Error feedback: what this encoding loses goes out with the next result. A result of
        # nothing (0 samples) is the zero vector as it is, and keeps the residual.
        vector = self.feedback.encode(result.vector, encoding,
                                      parameter_version=order.parameter_version) \
            if result.samples else result.vector
        w.send(encode_result(
            vector, parameter_version=order.parameter_version, samples=result.samples,
            correct=result.correct, loss_sum=result.loss_sum,
            compute_seconds=result.compute_seconds, steps=result.steps,
            kind=ResultKind.PARAMETER_DELTA if local else ResultKind.GRADIENT_SUM,
            encoding=encoding))
        w.results_sent += 1
        changes: dict[str, object] = {"results": w.results_sent, "iteration": order.iteration,
                                      "phase": w.phase()}
        if result.samples:
            changes["loss"] = result.loss
            if result.compute_seconds > 0:
                changes["samples_per_s"] = result.samples / result.compute_seconds
        w.update(**changes)


class StatsWorker(Role):
    """Evaluates each new parameter version on its share of the test set and reports it."""

    name = "stats"
    busy = "evaluating"

    def __init__(self, worker: Worker) -> None:
        super().__init__(worker)
        self._wake = trio.Event()

    def start(self, nursery: trio.Nursery) -> None:
        self._wake = trio.Event()
        nursery.start_soon(self._evaluate)

    def on_parameters(self, frame: ParametersFrame) -> None:
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def _evaluate(self) -> None:
        w = self.worker
        evaluated: int | None = None
        reports = 0
        while True:
            self._wake = trio.Event()
            params, net, cache = w.params, w.net, w.cache
            ready = (params is not None and net is not None and cache is not None
                     and params.parameter_version != evaluated
                     and params.vector.size == net.num_params
                     and 0 < cache.allocated == cache.usable)
            if not ready:
                await self._wake.wait()
                continue
            assert params is not None and net is not None and cache is not None
            view = cache.snapshot()
            options = w.options
            # The first reports are quick subsets, so the curve starts at once: a whole test
            # set first would cost c seconds and then c / share of waiting (~30 s on CIFAR-10).
            every = max(1, options.stats_full_every)
            full = reports % every == every - 1
            if not full and len(view) > options.stats_subset:
                view = view.subset(options.stats_subset)

            def run() -> Evaluation:
                net.params = params.vector
                return evaluate(net, view, clock=w.clock, should_stop=w.stopping)

            started = w.clock()
            result = await trio.to_thread.run_sync(run, abandon_on_cancel=True)
            evaluated = params.parameter_version
            reports += 1
            # Keep to a share of one core: the trainers on this machine need the rest.
            share = min(max(options.stats_share, 1e-3), 1.0)
            rest = result.compute_seconds / share - (w.clock() - started)
            if rest > 0:
                await trio.sleep(rest)
            if result.samples == 0:
                continue
            loss = result.loss if result.loss is not None and math.isfinite(result.loss) \
                else None
            w.send(encode_text(StatsReport(
                parameter_version=params.parameter_version, iteration=params.iteration,
                samples=result.samples, error=min(max(result.error, 0.0), 1.0),
                loss=None if loss is None else max(loss, 0.0))))
            w.results_sent += 1
            w.update(results=w.results_sent, test_error=result.error, loss=loss,
                      samples_per_s=result.samples / result.compute_seconds
                      if result.compute_seconds > 0 else None)


ROLES: dict[str, type[Role]] = {"trainer": Trainer, "tracker": Tracker, "stats": StatsWorker}
