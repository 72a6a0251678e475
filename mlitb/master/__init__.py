"""The trio master server: connections, projects, the event loop, allocation, budgets."""

from __future__ import annotations

from ._allocator import AllocationChange, AllocationError, Allocator
from ._budget import BudgetConfig, BudgetPolicy
from ._project import LabelConflictError, Project
from ._reduce import ReduceSummary, reduce_gradient_sums
from ._server import Master, RequestError

__all__ = [
    "AllocationChange",
    "AllocationError",
    "Allocator",
    "BudgetConfig",
    "BudgetPolicy",
    "LabelConflictError",
    "Master",
    "Project",
    "ReduceSummary",
    "RequestError",
    "reduce_gradient_sums",
]
