"""Replaying a deterministic run from its closure, in-process, and checking it bit for bit.

It reuses the training core (``mlitb.training``) that the master and the nodes run, so a replay
computes what they computed by construction, not by a copy of their code.

``replay`` starts from the record's origin (parameters and optimizer state), and for every
recorded step recomputes each part exactly as a Python node computed it (``compute_gradient``
in deterministic mode over the part's share, with the recorded seed, iteration and batch size
and the closure's augmentation, on one BLAS thread as node workers run; ``local`` closures:
``compute_local`` with a fresh inner optimizer at the step's scheduled learning rate), reduces
the parts in the recorded order with the master's own reduce function (``aggregate`` with the
closure's ``loop.training.aggregation``: absent in older closures, the paper's ``mean``) and
optimizer (at the step's schedule factor; ``local``: the outer optimizer from the origin's
state), and compares
the SHA-256 of the parameters with the recorded one. The training images come from upload
zips, decoded exactly as the data server decodes them and matched to the closure's manifest by
content hash.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..dataserver._ingest import InputShape, decode_archive
from ..errors import ClosureError
from ..nn import Net
from ..optim import make_optimizer
from ..protocol import ResultFrame, ResultKind
from ..training import (
    CacheView,
    ComputeResult,
    ReduceSummary,
    ReplayRecord,
    ReplayStep,
    aggregate,
    compute_gradient,
    compute_local,
    make_inner,
    make_outer,
    parameters_sha256,
)
from ._convert import Closure
from ._manifest import SplitManifest, match_manifest


@dataclass(frozen=True, eq=False)
class TrainingData:
    """The closure's training samples in manifest order: ``images[i]`` (uint8, channel-major)
    and ``labels[i]`` (the net's class index) are sample i of ``data.train``."""

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]


@dataclass(frozen=True)
class StepCheck:
    """One replayed step: the recorded and the recomputed parameter hashes."""

    iteration: int
    expected: str
    actual: str
    samples: int
    loss: float | None

    @property
    def identical(self) -> bool:
        return self.expected == self.actual


@dataclass(frozen=True)
class ReplayReport:
    """What a replay found. ``identical``: every replayed step hashed as recorded."""

    checks: tuple[StepCheck, ...]
    recorded_steps: int
    origin_iteration: int
    max_abs_difference: float
    """At the first differing step (0.0 when all are identical)."""
    seconds: float

    @property
    def identical(self) -> bool:
        return all(c.identical for c in self.checks)

    @property
    def first_mismatch(self) -> StepCheck | None:
        return next((c for c in self.checks if not c.identical), None)

    @property
    def complete(self) -> bool:
        """Every recorded step was replayed."""
        return len(self.checks) == self.recorded_steps


def record_of(closure: Closure) -> ReplayRecord:
    """The closure's replay record, or a ClosureError saying why there is none."""
    if closure.replay is not None:
        return closure.replay
    if not closure.loop.deterministic:
        raise ClosureError("this closure was not recorded in deterministic mode "
                           "(loop.deterministic is false): there is nothing to replay; create "
                           "the project with samples_per_iteration to record a replayable run")
    if closure.data is None:
        raise ClosureError("this closure has no data manifest, so it has no replay record")
    raise ClosureError("this deterministic closure has no replay record (it was written before "
                       "its first iteration, or right after a change of hyperparameters or "
                       "labels)")


def training_data(closure: Closure, zips: Sequence[str | os.PathLike[str]]) -> TrainingData:
    """Decode the zips as the data server does and put their images in the order of the
    closure's training manifest; ClosureError unless together they hold exactly its training
    data (or its training and test data)."""
    if closure.data is None:
        raise ClosureError("the closure has no data manifest to match the zip against")
    if not zips:
        raise ClosureError("replay needs the training data: give the upload zip(s)")
    c, h, w = closure.net().input_shape
    shape = InputShape(width=w, height=h, channels=c)
    pool: dict[tuple[str, str], list[npt.NDArray[np.uint8]]] = defaultdict(list)
    hashes: list[str] = []
    names: list[str] = []
    for path in zips:
        decoded = decode_archive(path, shape)
        for i, digest in enumerate(decoded.sha256):
            label = decoded.label_names[int(decoded.labels[i])]
            pool[(digest, label)].append(decoded.images[i])
            hashes.append(digest)
            names.append(label)
    match = match_manifest(closure.data, SplitManifest(tuple(hashes), tuple(names)))
    if match.split == "test":
        raise ClosureError("the zip holds the closure's test data; replay needs its training "
                           "data")
    train = closure.data.train
    index = {name: i for i, name in enumerate(closure.labels)}
    missing = sorted(set(train.labels) - set(index))
    if missing:
        raise ClosureError(f"training label {missing[0]!r} is not in the net's label map")
    images = np.empty((train.count, c, h, w), dtype=np.uint8)
    labels = np.empty(train.count, dtype=np.int64)
    for i, (digest, label) in enumerate(zip(train.sha256, train.labels)):
        images[i] = pool[(digest, label)].pop()  # equal files decode to equal images
        labels[i] = index[label]
    return TrainingData(images, labels)


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Node workers run BLAS on one thread; so does the replay (threadpoolctl if present)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1):
        yield


def replay(closure: Closure, data: TrainingData, *, iterations: int | None = None,
           progress: Callable[[StepCheck], None] | None = None,
           keep_going: bool = False) -> ReplayReport:
    """Re-run the first ``iterations`` recorded steps (default all) and compare each step's
    parameters with the recorded hash. Stops at the first difference unless ``keep_going``."""
    record = record_of(closure)
    worker = closure.net()
    dropout = [layer.type for layer in worker.layers if layer.type == "dropout"]
    if dropout:
        raise ClosureError("the net has dropout layers, whose random masks the workers draw "
                           "without a recorded seed: this run cannot be replayed bit-identically")
    if data.images.shape[0] != (closure.data.train.count if closure.data else -1):
        raise ClosureError("the training data does not match the closure's manifest")
    origin = record.origin
    params = origin.parameters.copy()
    step_once = _local_stepper(closure, worker, data) if closure.loop.training.algorithm == \
        "local" else _gradient_stepper(closure, worker, data)
    steps = record.steps if iterations is None else record.steps[:max(0, iterations)]
    checks: list[StepCheck] = []
    max_diff = 0.0
    start = time.perf_counter()
    with _one_blas_thread():
        for step in steps:
            before = params.copy()
            summary = step_once(step, params)
            if not summary.stepped:  # the workers computed nothing: cannot be the recording
                params = before
            check = StepCheck(step.iteration, step.sha256, parameters_sha256(params),
                              summary.samples,
                              summary.loss_sum / summary.samples if summary.samples else None)
            checks.append(check)
            if progress is not None:
                progress(check)
            if not check.identical:
                if not max_diff:
                    expected = _expected_parameters(closure, step.sha256)
                    max_diff = float(np.max(np.abs(expected - params))) \
                        if expected is not None else float("nan")
                if not keep_going:
                    break
    return ReplayReport(checks=tuple(checks), recorded_steps=len(record.steps),
                        origin_iteration=origin.iteration, max_abs_difference=max_diff,
                        seconds=time.perf_counter() - start)


StepOnce = Callable[[ReplayStep, npt.NDArray[np.float32]], ReduceSummary]
"""Recompute one recorded step's parts and reduce them into the parameters (in place)."""


class _Views:
    """The cache view of each share, as a node's cache holds exactly that share."""

    def __init__(self, record: ReplayRecord, data: TrainingData) -> None:
        self._record, self._data = record, data
        self._ids = np.arange(data.images.shape[0], dtype=np.int64)
        self._views: dict[int, CacheView] = {}

    def __getitem__(self, share: int) -> CacheView:
        if share not in self._views:
            self._views[share] = CacheView(
                images=self._data.images, labels=self._data.labels, ids=self._ids,
                rows=self._record.share(share).astype(np.intp))
        return self._views[share]


def _frame(result: ComputeResult, kind: ResultKind) -> ResultFrame:
    return ResultFrame(parameter_version=0, kind=kind, samples=result.samples,
                       correct=result.correct, loss_sum=result.loss_sum,
                       compute_seconds=result.compute_seconds, vector=result.vector,
                       steps=result.steps)


def _gradient_stepper(closure: Closure, worker: Net, data: TrainingData) -> StepOnce:
    """``gradient``: each part is a node's ``compute_gradient``; the master's optimizer steps on
    their average with the schedule's factor of that step."""
    record = record_of(closure)
    origin, training = record.origin, closure.loop.training
    if closure.decay_multipliers is not None:
        l1, l2 = (m.copy() for m in closure.decay_multipliers)
    else:
        l1, l2 = worker.decay_multipliers()
    optimizer = make_optimizer(closure.optimizer_name, closure.num_params,
                               **origin.hyperparameters, l1_mul=l1, l2_mul=l2)
    optimizer.load_state({**{k: v.copy() for k, v in origin.optimizer_state.items()},
                          "step": origin.optimizer_step})
    views = _Views(record, data)

    def step_once(step: ReplayStep, params: npt.NDArray[np.float32]) -> ReduceSummary:
        frames = []
        for share, samples in step.parts:
            worker.params = params.copy()
            result = compute_gradient(worker, views[share], samples=samples, seed=record.seed,
                                      iteration=step.iteration, max_batch=record.max_batch,
                                      shift=training.shift, flip=training.flip)
            frames.append(_frame(result, ResultKind.GRADIENT_SUM))
        optimizer.lr_scale = step.lr_scale  # as plan_iteration set it for this iteration
        return aggregate(frames, params, optimizer, training)

    return step_once


def _local_stepper(closure: Closure, worker: Net, data: TrainingData) -> StepOnce:
    """``local``: each part is a node's ``compute_local`` with a fresh inner optimizer (as a
    node builds one every deterministic round); the outer optimizer, from the origin's state,
    steps on the averaged delta."""
    record = record_of(closure)
    origin, training = record.origin, closure.loop.training
    outer = make_outer(training, closure.num_params)
    velocity = origin.outer_velocity if origin.outer_velocity is not None else \
        np.zeros(closure.num_params, np.float32)
    outer.load_state({"velocity": velocity.copy(), "step": origin.outer_step})
    # The master's inner template never steps, so its rate stays the origin's all record long.
    base_lr = float(origin.hyperparameters["learning_rate"])
    views = _Views(record, data)

    def step_once(step: ReplayStep, params: npt.NDArray[np.float32]) -> ReduceSummary:
        frames = []
        for share, samples in step.parts:
            worker.params = params.copy()
            inner = make_inner(closure.optimizer_name, origin.hyperparameters, worker)
            result = compute_local(worker, views[share], inner,
                                   learning_rate=base_lr * step.lr_scale,
                                   batch_size=training.batch_size, samples=samples,
                                   seed=record.seed, iteration=step.iteration,
                                   shift=training.shift, flip=training.flip)
            frames.append(_frame(result, ResultKind.PARAMETER_DELTA))
        return aggregate(frames, params, outer, training)

    return step_once


def _expected_parameters(closure: Closure, digest: str) -> npt.NDArray[np.float32] | None:
    """The recorded parameters with this hash, if the closure holds them (its final ones)."""
    return closure.parameters if closure.parameters_sha256 == digest else None
