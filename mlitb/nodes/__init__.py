"""Headless Python nodes: worker processes that train, track and evaluate for a master.

``mlitb node join ws://HOST:8000`` runs ``run_node``: one process per worker, each a trio client
with its own WebSocket, network and data cache. What a worker computes and caches is the training
core's (``mlitb.training``: ``DataCache``, ``compute_gradient``, ``compute_local``, ``evaluate``);
the modules here wire it to the master and the data servers:

- ``_data``: ``DataSource``, batches from the data server (``HttpDataSource``) behind a seam.
- ``_worker``: ``Worker``, the protocol client of one worker (docs/protocol.md): hello/welcome,
  allocations and downloads, reconnects with backoff; ``_roles``: what a trainer, a stats worker
  and a tracker add (one RESULT per work order, stats reports, the latest parameters).
- ``_reports``: what a worker reports to its supervisor (status, log lines, its end, exit codes).
- ``_supervisor``: ``run_node``, the worker processes, the live status line and signals.
"""

from mlitb._backoff import Backoff

from ._data import DataError, DataSource, HttpDataSource
from ._reports import ExitCode, LogLine, WorkerEnded, WorkerStatus
from ._supervisor import NodeConfig, run_node
from ._worker import Worker, WorkerOptions

__all__ = [
    "Backoff", "DataError", "DataSource", "ExitCode", "HttpDataSource", "LogLine", "NodeConfig",
    "Worker", "WorkerEnded", "WorkerOptions", "WorkerStatus", "run_node",
]
