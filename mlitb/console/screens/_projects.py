"""The first screen: every project on the master, and the actions on the highlighted one."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, Static

from mlitb.protocol import Status

from .._app_messages import LinkState, ProjectChosen
from ..widgets._link_bar import LinkBar
from ..widgets._projects_table import ProjectsTable
from ._base import ConsoleScreen


class ProjectsScreen(ConsoleScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new_project", "New"),
        Binding("p", "pause", "Pause"),
        Binding("p", "resume", "Resume"),
        Binding("e", "edit", "Edit"),
        Binding("u", "upload", "Upload"),
        Binding("s", "save_model", "Save"),
        Binding("d", "delete", "Delete"),
    ]
    COMMANDS_LIST = (
        ("open", "Open project", "Show the highlighted project: workers, curves, data, events"),
        ("new_project", "New project", "Create a project from a model spec file"),
        ("pause", "Pause project", "Pause the highlighted project's training"),
        ("resume", "Resume project", "Resume the highlighted project's training"),
        ("edit", "Edit hyperparameters and T", ("Change the highlighted project's "
         "hyperparameters or iteration time, live")),
        ("upload", "Upload dataset", ("Upload a zip of images (folders are labels) to the "
         "highlighted project")),
        ("save_model", "Save model", ("Save the highlighted project's model, research closure "
         "or ConvNetJS net to a file")),
        ("delete", "Delete project", "Delete the highlighted project"),
    )

    def compose(self) -> ComposeResult:
        yield Header()
        yield ProjectsTable(id="projects")
        yield Static(id="projects-empty", classes="empty")
        yield LinkBar(id="link")
        yield Footer()

    def on_mount(self) -> None:
        self._show_empty()

    def current_project(self) -> str | None:
        return self.query_one(ProjectsTable).selected_key()

    def show_status(self, status: Status) -> None:
        self.query_one(ProjectsTable).show(status.projects)
        self._show_empty()

    def on_data_table_row_highlighted(self) -> None:
        self.refresh_bindings()  # Pause or Resume: the highlighted project's state

    def show_link(self, state: LinkState) -> None:
        super().show_link(state)
        self._show_empty()

    def _show_empty(self) -> None:
        """Instead of an empty table: why it is empty, and what to do."""
        table = self.query_one(ProjectsTable)
        empty = self.query_one("#projects-empty", Static)
        link = self.console.link
        text = ""
        if link is not None and link.phase == "refused":
            text = (f"[b red]{link.message}[/]\n\nThe master at {link.url} did not accept the "
                    f"operator token.\nStart the console again with --token TOKEN (or "
                    f"MLITB_OPERATOR_TOKEN);\nwithout a token it connects read-only.")
        elif link is not None and link.phase == "unreachable":
            detail = link.message.removeprefix(f"cannot reach the master at {link.url}: ")
            text = (f"[b red]Cannot reach the master at {link.url}[/]\n\n{detail}\n\n"
                    f"Is `mlitb master` running there? The console keeps trying.")
        elif link is None or link.phase == "connecting":
            text = f"connecting to {link.url if link else 'the master'} …"
        elif table.row_count == 0:
            text = ("No projects on this master yet.\n\nPress [b]n[/] to create one "
                    "from a model spec file.")
        empty.update(text)
        empty.display = bool(text)
        table.display = not text or table.row_count > 0

    def action_open(self) -> None:
        name = self.current_project()
        if name is not None:
            self.post_message(ProjectChosen(name))
