"""The trio master server: connections, projects, the event loop, allocation, budgets."""

from __future__ import annotations

from ._allocator import AllocationChange, AllocationError, Allocator
from ._budget import BudgetConfig, BudgetPolicy
from ._connection import RequestError
from ._deterministic import Recorder, parameters_sha256
from ._persist import ProjectFiles, Unreadable
from ._project import LabelConflictError, Project
from ._reduce import ReduceSummary, reduce_gradient_sums
from ._server import AUTOSAVE_EVERY, Master

__all__ = [
    "AUTOSAVE_EVERY",
    "AllocationChange",
    "AllocationError",
    "Allocator",
    "BudgetConfig",
    "BudgetPolicy",
    "LabelConflictError",
    "Master",
    "Project",
    "ProjectFiles",
    "Recorder",
    "ReduceSummary",
    "RequestError",
    "Unreadable",
    "parameters_sha256",
    "reduce_gradient_sums",
]
