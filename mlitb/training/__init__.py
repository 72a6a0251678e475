"""The training core: how a project trains, with numpy and no I/O.

Everything the master, the nodes and closures compute lives here; the trio shell
(``mlitb.master``, ``mlitb.nodes``) wires it to sockets and clocks, and closures
(``mlitb.closure``) read, write and replay it.
The rule this package keeps: it imports numpy, the standard library and the layers below it
(``mlitb.nn``, ``mlitb.optim``, ``mlitb.protocol``, ``mlitb.datasets``, ``mlitb.errors``) only,
never a socket, a server, the nodes, closures or a web stack (``tests/test_layers.py``).

- ``_settings``: a project's ``Training`` settings, learning-rate schedules, augmentation, the
  inner and outer optimizers;
- ``_allocator``: which trainer holds and which have cached each data id (the pie-cutter);
- ``_budget``: per-worker latency and rate estimates, compute budgets;
- ``_reduce``: the reduce step (weighted sums, robust aggregations, the guarded optimizer step);
- ``_record``: the replay record of a deterministic run (origin, shares, steps, hashes);
- ``_deterministic``: the ``Recorder`` that writes it as a project trains;
- ``_project``: one project's state (``Project``): net, optimizer, members, iterations, history;
- ``_cache``: a worker's data cache (``DataCache``, ``CacheView`` snapshots);
- ``_compute``: what a worker computes for a work order (``compute_gradient``,
  ``compute_local``, ``evaluate``) under an injected clock;
- ``_feedback``: a worker's error feedback for compressed results (``ErrorFeedback``).
"""

from __future__ import annotations

from ._allocator import (
    AllocationChange,
    AllocationError,
    Allocator,
    UnknownDataError,
    UnknownWorkerError,
    WorkerAlreadyJoinedError,
)
from ._budget import BudgetConfig, BudgetError, BudgetPolicy
from ._cache import CacheView, DataCache, IdArray, Shape
from ._compute import (
    ComputeResult,
    Evaluation,
    Pacer,
    Passes,
    compute_gradient,
    compute_local,
    deterministic_order,
    empty_result,
    evaluate,
)
from ._deterministic import Recorder, parameters_sha256
from ._feedback import ErrorFeedback
from ._project import LabelConflictError, Member, Project
from ._record import ReplayOrigin, ReplayRecord, ReplayStep, format_share, parse_share
from ._reduce import (
    ReduceSummary,
    StepRefused,
    aggregate,
    guarded_step,
    reduce_gradient_sums,
    reduce_parameter_deltas,
)
from ._settings import (
    Training,
    TrainingError,
    augment,
    check_training,
    inner_hyperparameters,
    lr_factor,
    make_inner,
    make_outer,
    progress,
    training_from_json,
    training_to_json,
)

__all__ = [
    "AllocationChange", "AllocationError", "Allocator", "BudgetConfig", "BudgetError",
    "BudgetPolicy", "CacheView", "ComputeResult", "DataCache", "ErrorFeedback", "Evaluation",
    "IdArray",
    "LabelConflictError", "Member", "Pacer", "Passes", "Project", "Recorder", "ReduceSummary",
    "ReplayOrigin", "ReplayRecord", "ReplayStep", "Shape", "StepRefused", "Training",
    "TrainingError", "UnknownDataError", "UnknownWorkerError", "WorkerAlreadyJoinedError",
    "aggregate", "augment", "check_training", "compute_gradient", "compute_local",
    "deterministic_order", "empty_result", "evaluate", "format_share", "guarded_step",
    "inner_hyperparameters", "lr_factor", "make_inner", "make_outer", "parameters_sha256",
    "parse_share", "progress", "reduce_gradient_sums", "reduce_parameter_deltas",
    "training_from_json", "training_to_json",
]
