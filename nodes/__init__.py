"""Headless Python nodes: worker processes that train, track and evaluate for a master.

``mlitb node join ws://HOST:8000`` runs ``run_node``: one process per worker, each a trio client
with its own WebSocket, network and data cache. The modules, from the core out:

- ``_cache``: ``DataCache``, the downloaded data (uint8 vectors + label indices by id) and the
  worker's allocation; snapshots are safe to read from a compute thread without a lock.
- ``_compute``: ``compute_gradient`` (a time budget with an injected clock, or exactly ``samples``
  in deterministic mode) and ``evaluate``; no I/O.
- ``_data``: ``DataSource``, batches from the data server (``HttpDataSource``) behind a seam.
- ``_worker``: ``Worker``, the protocol client of one worker (docs/protocol.md): hello/welcome,
  allocations and downloads, one RESULT per work order, stats reports, reconnects with backoff.
- ``_events``: what a worker reports to its supervisor (status, log lines, its end, exit codes).
- ``_supervisor``: ``run_node``, the worker processes, the live status line and signals.
"""

from ._cache import CacheView, DataCache
from ._compute import ComputeResult, Evaluation, Pacer, compute_gradient, evaluate
from ._data import DataError, DataSource, HttpDataSource
from ._events import ExitCode, LogLine, WorkerEnded, WorkerStatus
from ._supervisor import NodeConfig, run_node
from ._worker import Backoff, Worker, WorkerOptions

__all__ = [
    "Backoff", "CacheView", "ComputeResult", "DataCache", "DataError", "DataSource",
    "Evaluation", "ExitCode", "HttpDataSource", "LogLine", "NodeConfig", "Pacer", "Worker",
    "WorkerEnded", "WorkerOptions", "WorkerStatus", "compute_gradient", "evaluate", "run_node",
]
