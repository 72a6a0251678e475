"""What both console screens share: the link bar, status updates, and the project actions.

A screen says which project its actions apply to (``current_project``); the actions ask the
backend in ``@work`` workers (the UI never waits on the network) and report the outcome as a
notification, or inline in a dialog.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from textual import work
from textual.app import SystemCommand
from textual.screen import Screen

from mlitb.errors import MlitbError
from mlitb.protocol import Ack, DeleteProject, Pause, ProjectStatus, Resume, Status

from .._app_messages import LinkState
from .._backend import Backend
from .._display import describe_error
from ..dialogs._confirm import ConfirmDialog
from ..dialogs._create import CreateProjectDialog
from ..dialogs._hyperparameters import HyperparametersDialog
from ..dialogs._save import SaveModelDialog
from ..dialogs._upload import UploadDialog
from ..widgets._link_bar import LinkBar

if TYPE_CHECKING:
    from .._app import ConsoleApp


class ConsoleScreen(Screen[None]):
    """Base of the projects screen and the project view."""

    # (action, title, help) for the command palette; subclasses extend it.
    COMMANDS_LIST: tuple[tuple[str, str, str], ...] = ()

    @property
    def console(self) -> ConsoleApp:
        return cast("ConsoleApp", self.app)

    @property
    def backend(self) -> Backend:
        return self.console.backend

    # -- updates from the app -------------------------------------------------------------------
    def show_status(self, status: Status) -> None:
        """Redraw from a status snapshot (only called while this screen is on view)."""

    def status_shown(self) -> None:
        """After a redraw: the footer follows the project's state (Pause / Resume)."""
        self.refresh_bindings()

    def show_link(self, state: LinkState) -> None:
        for bar in self.query(LinkBar):
            bar.state = state

    def on_screen_resume(self) -> None:
        if self.console.link is not None:
            self.show_link(self.console.link)
        if self.console.status is not None:
            self.show_status(self.console.status)
            self.status_shown()

    # -- the project the actions apply to -------------------------------------------------------
    def current_project(self) -> str | None:
        return None

    def project_status(self, name: str | None = None) -> ProjectStatus | None:
        name = name or self.current_project()
        status = self.console.status
        if name is None or status is None:
            return None
        return next((p for p in status.projects if p.name == name), None)

    def _need_project(self) -> str | None:
        name = self.current_project()
        if name is None:
            self.notify("no project selected", severity="warning")
        return name

    def is_paused(self) -> bool:
        project = self.project_status()
        return project is not None and project.state == "paused"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``p`` is bound twice: *Pause* while the project runs, *Resume* while it is paused;
        only the one that applies is active (and shown in the footer)."""
        if action == "pause":
            return not self.is_paused()
        if action == "resume":
            return self.is_paused()
        return True

    # -- actions ----------------------------------------------------------------------------------
    def action_toggle_pause(self) -> None:
        name = self._need_project()
        project = self.project_status(name)
        if name is not None:
            self._pause(name, pause=project is None or project.state != "paused")

    def action_pause(self) -> None:
        name = self._need_project()
        if name is not None:
            self._pause(name, pause=True)

    def action_resume(self) -> None:
        name = self._need_project()
        if name is not None:
            self._pause(name, pause=False)

    @work(group="request")
    async def _pause(self, name: str, pause: bool) -> None:
        message = Pause(request_id="-", project=name) if pause else Resume(request_id="-",
                                                                          project=name)
        try:
            await self.backend.request(message, Ack)
        except MlitbError as exc:
            self.notify(describe_error(exc), title="pause" if pause else "resume",
                        severity="error")
            return
        self.notify(f"{'paused' if pause else 'resumed'} {name}")

    def action_edit(self) -> None:
        project = self.project_status()
        if self._need_project() is None:
            return
        if project is None:
            self.notify("no status for this project yet", severity="warning")
            return
        self.app.push_screen(HyperparametersDialog(project, self.backend))

    def action_new_project(self) -> None:
        self.app.push_screen(CreateProjectDialog(self.backend), self._created)

    def _created(self, name: str | None) -> None:
        if name is not None:
            self.notify(f"created project {name}")

    def action_delete(self) -> None:
        name = self._need_project()
        if name is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._delete(name)

        self.app.push_screen(ConfirmDialog(f"Delete project {name}? Its workers are told to "
                                           f"leave and its model is gone.", "Delete"),
                             confirmed)

    @work(group="request")
    async def _delete(self, name: str) -> None:
        try:
            await self.backend.request(DeleteProject(request_id="-", project=name), Ack)
        except MlitbError as exc:
            self.notify(describe_error(exc), title="delete", severity="error")
            return
        self.notify(f"deleted project {name}")
        self.after_delete(name)

    def after_delete(self, name: str) -> None:
        """Called once ``name`` was deleted."""

    def action_upload(self) -> None:
        name = self._need_project()
        if name is not None:
            self.app.push_screen(UploadDialog(name, self.backend))

    def action_save_model(self) -> None:
        name = self._need_project()
        if name is not None:
            self.app.push_screen(SaveModelDialog(name, self.backend,
                                                 self.console.save_directory), self._saved)

    def _saved(self, path: Path | None) -> None:
        if path is not None:
            self.console.save_directory = path.parent

    # -- the command palette ----------------------------------------------------------------------
    def commands(self) -> list[SystemCommand]:
        """Every action of this screen, for the command palette."""

        def runner(action: str) -> Any:
            async def run() -> None:
                await self.run_action(action)

            return run

        return [SystemCommand(title, help, runner(action))
                for action, title, help in self.COMMANDS_LIST
                if self.check_action(action, ()) is not False]
