"""The table of every project on the master."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from mlitb.protocol import ProjectStatus

from ._format import clip, count, latest_loss, latest_test_error, number, percent, state_text
from ._keyed_table import Cell, Column, KeyedTable
from ._messages import ProjectChosen


def project_row(p: ProjectStatus) -> tuple[Cell, ...]:
    trainers = sum(1 for w in p.workers if w.role == "trainer")
    return (clip(p.name, 16), state_text(p.state), str(p.iteration), f"{p.iteration_time:g}",
            str(trainers), count(p.data.total), count(p.data.test),
            number(latest_loss(p), 3), percent(latest_test_error(p)))


class ProjectsTable(KeyedTable):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Open", show=True)]
    COLUMNS = (
        Column("name", "project", 16), Column("state", "state", 7),
        Column("iteration", "iter", 6, right=True), Column("T", "T s", 4, right=True),
        Column("workers", "wrk", 3, right=True), Column("train", "train", 6, right=True),
        Column("test", "test", 5, right=True), Column("loss", "loss", 6, right=True),
        Column("error", "test err", 8, right=True),
    )

    def show(self, projects: Sequence[ProjectStatus]) -> None:
        self.sync((p.name, project_row(p)) for p in projects)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(ProjectChosen(event.row_key.value))

