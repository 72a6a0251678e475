"""The operator console: a Textual app over one ``Backend`` (a live master, or a replay).

The app owns the connection state (``link``) and the latest status snapshot (``status``). Status
messages may arrive faster than it is useful to redraw: the app keeps every event at once, but
applies at most one snapshot per ``refresh_interval`` (the first at once, the newest at the end of
each interval), and only the screen on view redraws.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer

from mlitb.protocol import Status

from ._app_messages import LinkChanged, LinkState, ProjectChosen, StatusReceived
from ._backend import Backend
from ._event_store import EventStore
from .screens._base import ConsoleScreen
from .screens._project import ProjectScreen
from .screens._projects import ProjectsScreen


class ConsoleApp(App[None]):
    """``ConsoleApp(LiveBackend(url, token))`` or ``ConsoleApp(ReplayBackend(snapshots))``.

    ``project``: open this project's view at start. ``refresh_interval``: the shortest time
    between two redraws from status snapshots (0: redraw on every snapshot). ``save_directory``:
    where the save dialog proposes to write (the working directory by default; then the last
    directory saved to).
    """

    CSS_PATH = "console.tcss"
    TITLE = "mlitb console"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", priority=False),
        # Esc closes the keys panel (palette: Keys) before it does anything else; without the
        # panel the binding is inactive and Esc goes on to the screen (back, cancel).
        Binding("escape", "hide_keys", "Close keys", show=False, priority=True),
    ]

    status: reactive[Status | None] = reactive(None, always_update=True)
    link: reactive[LinkState | None] = reactive(None)

    def __init__(self, backend: Backend, *, project: str | None = None,
                 refresh_interval: float = 0.5, save_directory: Path | None = None) -> None:
        super().__init__()
        self.save_directory = (save_directory or Path.cwd()).resolve()
        self.backend = backend
        self.initial_project = project
        self.refresh_interval = refresh_interval
        self.events = EventStore()
        self.snapshots_received = 0
        self.snapshots_applied = 0
        self._pending: Status | None = None
        self._last_apply = float("-inf")
        self._flush_timer: Timer | None = None
        self.sub_title = backend.url

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "hide_keys":
            return bool(self.screen.query("HelpPanel"))
        return True

    def action_hide_keys(self) -> None:
        self.action_hide_help_panel()

    # -- lifecycle ------------------------------------------------------------------------------
    def on_mount(self) -> None:
        # Not super().on_mount(): Textual calls each class's handler itself.
        self.push_screen(ProjectsScreen())
        if self.initial_project is not None:
            self.push_screen(ProjectScreen(self.initial_project))
        self.backend.start(self)

    async def on_unmount(self) -> None:
        await self.backend.stop()

    # -- from the backend -----------------------------------------------------------------------
    def on_link_changed(self, message: LinkChanged) -> None:
        before = self.link
        self.link = message.state
        state = message.state
        if state.phase == "connected" and before is not None and before.phase in (
                "lost", "unreachable"):
            self.notify(f"connected to {state.url} again", title="reconnected")
        elif state.phase == "lost" and (before is None or before.phase == "connected"):
            self.notify(f"{state.message}; reconnecting by itself", title="connection lost",
                        severity="warning")
        elif state.phase == "refused":
            self.notify(state.message, title="operator token refused", severity="error",
                        timeout=30)

    def on_status_received(self, message: StatusReceived) -> None:
        if not self.is_running:
            return
        self.snapshots_received += 1
        self.events.extend(message.status.events)
        self._pending = message.status
        wait = self._last_apply + self.refresh_interval - time.monotonic()
        if wait <= 0:
            self._apply_pending()
        elif self._flush_timer is None:
            self._flush_timer = self.set_timer(wait, self._apply_pending)

    def _apply_pending(self) -> None:
        self._flush_timer = None
        if self._pending is None or not self.is_running:
            return
        status, self._pending = self._pending, None
        self._last_apply = time.monotonic()
        self.snapshots_applied += 1
        self.status = status

    # -- to the screens -------------------------------------------------------------------------
    def _views(self) -> list[ConsoleScreen]:
        """The screen on view (below any dialog) and every other console screen."""
        return [s for s in self.screen_stack if isinstance(s, ConsoleScreen)]

    def _visible_view(self) -> ConsoleScreen | None:
        for screen in reversed(self.screen_stack):
            if isinstance(screen, ConsoleScreen):
                return screen
        return None

    def watch_status(self, status: Status | None) -> None:
        view = self._visible_view()
        if status is not None and view is not None:
            view.show_status(status)
            view.status_shown()

    def watch_link(self, state: LinkState | None) -> None:
        if state is None:
            return
        for view in self._views():
            view.show_link(state)

    def on_project_chosen(self, message: ProjectChosen) -> None:
        self.push_screen(ProjectScreen(message.name))

    # -- the command palette lists every action of the screen on view ---------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        view = screen if isinstance(screen, ConsoleScreen) else self._visible_view()
        if view is not None:
            yield from view.commands()
        yield from super().get_system_commands(screen)
