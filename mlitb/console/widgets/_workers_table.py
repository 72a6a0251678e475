"""The workers of one project, updated in place as status snapshots arrive."""

from __future__ import annotations

from collections.abc import Sequence

from mlitb.protocol import WorkerStatus

from .._display import clip, count, millis, rate, state_text
from ._keyed_table import Cell, Column, KeyedTable


def worker_row(w: WorkerStatus) -> tuple[Cell, ...]:
    return (str(w.worker_id), w.client, w.role, clip(w.host, 11), millis(w.latency_ms),
            rate(w.samples_per_s), count(w.allocated), count(w.cached), state_text(w.state))


class WorkersTable(KeyedTable):
    """Row key: the worker id. Sorted by id (the master lists workers by id)."""

    COLUMNS = (
        Column("id", "id", 4, right=True), Column("kind", "kind", 7),
        Column("role", "role", 7), Column("host", "host", 11),
        Column("latency", "ms", 5, right=True), Column("rate", "smp/s", 6, right=True),
        Column("allocated", "alloc", 6, right=True), Column("cached", "cached", 6, right=True),
        Column("state", "state", 8),
    )

    def show(self, workers: Sequence[WorkerStatus]) -> None:
        self.sync((str(w.worker_id), worker_row(w)) for w in workers)

    def selected_worker(self) -> int | None:
        key = self.selected_key()
        return int(key) if key is not None else None
