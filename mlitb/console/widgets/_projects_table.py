"""The table of every project on the master.

Every column fits its content (CIFAR-10's 10,000 test ids read ``10,000``); the project's name
gets what is left of the terminal's width, so a wide terminal shows long names in full.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from mlitb.protocol import ProjectStatus

from .._app_messages import ProjectChosen
from .._display import clip, count, latest_loss, latest_test_error, number, percent, state_text
from ._keyed_table import Cell, Column, KeyedTable

NAME_MIN = 16
"""Names are cut to this many characters at least (an 80-column terminal)."""
NAME_MAX = 60


def project_row(p: ProjectStatus, name_width: int = NAME_MIN) -> tuple[Cell, ...]:
    trainers = sum(1 for w in p.workers if w.role == "trainer")
    return (clip(p.name, name_width), state_text(p.state), str(p.iteration),
            f"{p.iteration_time:g}", str(trainers), count(p.data.total), count(p.data.test),
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

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._projects: Sequence[ProjectStatus] = ()

    def name_width(self) -> int:
        """How many characters of a name fit beside the other columns at this width."""
        others = sum(w + 2 * self.cell_padding for k, w in self.column_widths().items()
                     if k != "name")
        room = self.size.width - others - 2 * self.cell_padding - 1  # 1: the scrollbar
        return max(NAME_MIN, min(NAME_MAX, room))

    def show(self, projects: Sequence[ProjectStatus]) -> None:
        self._projects = projects
        limit = self.name_width()
        self.sync((p.name, project_row(p, limit)) for p in projects)
        if self.name_width() != limit:  # another column widened: less room for names
            limit = self.name_width()
            self.sync((p.name, project_row(p, limit)) for p in projects)
        # The name column follows the terminal both ways (the others only grow).
        names = [len(clip(p.name, limit)) for p in projects]
        column = self.columns.get("name")  # type: ignore[call-overload]
        width = max([NAME_MIN, *names])
        if column is not None and column.width != width:
            column.width = width
            self._require_update_dimensions = True
            self.refresh()

    def on_resize(self) -> None:
        if self._projects:
            self.show(self._projects)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(ProjectChosen(event.row_key.value))

