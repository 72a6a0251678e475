"""What a worker tells its supervisor: status snapshots, log lines and its end (all picklable)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

Task = Literal["train", "track", "stats"]
ROLE_OF_TASK: dict[str, Literal["trainer", "tracker", "stats"]] = {
    "train": "trainer", "track": "tracker", "stats": "stats"}

WorkerPhase = Literal[
    "starting",     # the process is starting
    "connecting",   # opening the WebSocket / waiting for the welcome
    "waiting",      # backing off before reconnecting
    "idle",         # connected, nothing allocated
    "caching",      # connected, part of the share not cached yet
    "training",     # trainer with its share cached
    "tracking",     # tracker holding parameters
    "evaluating",   # stats worker with its test share cached
    "stopped",      # finished (see WorkerEnded)
]


class ExitCode(IntEnum):
    """A worker process's exit code."""

    OK = 0
    """Stopped on request (Ctrl-C, SIGTERM, the supervisor)."""
    ERROR = 1
    """A bug or an unexpected failure; or the master closed with a code no retry fixes."""
    REFUSED = 2
    """The master refused the hello: unknown project (4002), protocol version mismatch (4000),
    malformed hello (4001) or bad token (1008)."""
    REMOVED = 3
    """An operator removed the worker (4003) or deleted its project (4004)."""


@dataclass(frozen=True)
class WorkerStatus:
    """A snapshot of one worker, sent whenever something the status line shows changes."""

    index: int
    phase: WorkerPhase
    worker_id: int | None = None
    project: str | None = None
    iteration: int | None = None
    parameter_version: int | None = None
    allocated: int = 0
    cached: int = 0
    """Allocated ids that are cached (what computation can use)."""
    samples_per_s: float | None = None
    loss: float | None = None
    """Mean training loss of the last result (trainers), or test loss (stats workers)."""
    test_error: float | None = None
    results: int = 0
    """Results (trainers) or stats reports (stats workers) sent on this connection."""


@dataclass(frozen=True)
class LogLine:
    """A line for the node's log; ``level`` is a ``logging`` level number."""

    index: int
    level: int
    text: str


@dataclass(frozen=True)
class WorkerEnded:
    """The worker's last word: its exit code and why."""

    index: int
    code: int
    reason: str


WorkerEvent = WorkerStatus | LogLine | WorkerEnded
