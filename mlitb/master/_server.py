"""The master: the project registry, its connection hub and one event loop per project, under
one trio nursery.

``Master`` is the ``ProjectRegistry`` (``_registry.py``: projects, access, closures on disk)
that serves: ``serve`` listens for WebSockets and hands each connection to the
``ConnectionHub`` (``_hub.py``), starts one loop task per project (``_loop.py``) and saves every
project when it ends. The loops, the hub and the request handlers (``_requests.py``) use only
the public methods here. Time comes from trio's clock, so tests can run iterations under a
MockClock.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import trio
from trio_websocket import WebSocketServer

from .._connections import open_capped_listeners
from ..closure import Zoo
from ..protocol import MAX_HELLO_FRAME
from ..training import Project
from ._caps import DEFAULT_CONNECTION_LIMITS, ConnectionCaps, ConnectionLimits
from ._connection import Connection, RequestError
from ._dataservers import DataServerTable
from ._hub import CLOSE_TIMEOUT, HELLO_TIMEOUT, ConnectionHub
from ._loop import run_project_loop, send_ids
from ._persist import ProjectFiles
from ._registry import AUTOSAVE_EVERY, ProjectRegistry

log = logging.getLogger("mlitb.master")

__all__ = ["AUTOSAVE_EVERY", "CLOSE_TIMEOUT", "HELLO_TIMEOUT", "Master"]

SHUTDOWN_SAVE_TIMEOUT = 60.0


class Master(ProjectRegistry):
    """The master server. ``serve`` runs it; everything else is callable from the same trio run.

    ``operator_token``, ``files``, ``autosave_every``, ``zoo``: the registry's
    (``ProjectRegistry``). ``data_url``: the embedded data server's base URL, announced to
    workers in the welcome (None: no embedded one; separate data servers register,
    ``data_servers``). ``connection_limits``: connections served at once, in total and per
    address (over them: close ``TOO_MANY_CONNECTIONS``).
    """

    def __init__(self, *, operator_token: str | None = None,
                 data_url: str | None = "http://127.0.0.1:8001", files: ProjectFiles | None = None,
                 autosave_every: int = AUTOSAVE_EVERY, zoo: Zoo | None = None,
                 connection_limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS) -> None:
        super().__init__(operator_token=operator_token, files=files,
                         autosave_every=autosave_every, zoo=zoo)
        self.data_servers = DataServerTable()  # what the welcome announces
        self.data_servers.set_fixed(data_url)
        self.hub = ConnectionHub(self, connection_limits)
        self._scopes: dict[str, trio.CancelScope] = {}
        self._wakeups: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._started_at: float | None = None
        self.port: int | None = None

    @property
    def data_url(self) -> str | None:
        """The embedded data server's URL (None: none)."""
        return self.data_servers.fixed.url if self.data_servers.fixed is not None else None

    @data_url.setter
    def data_url(self, url: str | None) -> None:
        fixed = self.data_servers.fixed
        self.data_servers.set_fixed(url, fixed.store if fixed is not None else None)

    @property
    def connections(self) -> dict[int, Connection]:
        """Every client that said hello, by worker id."""
        return self.hub.connections

    @property
    def caps(self) -> ConnectionCaps:
        """The connection caps and their counters."""
        return self.hub.caps

    # -- running --------------------------------------------------------------------------------
    async def serve(self, host: str = "127.0.0.1", port: int = 8000, *,
                    ssl_context: ssl.SSLContext | None = None,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen for WebSocket clients (``wss://`` with ``ssl_context``); reports the bound
        port once listening."""
        self._started_at = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for name in self.projects:
                    self._start_loop(name)
                # Every TCP connection counts from its accept (``CappedListener``), so strangers
                # that never finish the upgrade are capped as well as those that never say hello.
                listeners = await open_capped_listeners(port, self.caps, nursery, host=host,
                                                        ssl_context=ssl_context)
                server = WebSocketServer(
                    self.hub.handle,
                    # trio-websocket's annotation names trio's own listeners; it serves any.
                    cast(Any, listeners), handler_nursery=nursery,
                    # Strangers get a small limit until their hello (the hub's ``_welcome``
                    # raises it).
                    max_message_size=MAX_HELLO_FRAME, receive_buffer_size=64 * 1024,
                    # A socket that never completes the HTTP upgrade is dropped as soon as one
                    # that never says hello (trio-websocket's default is 60 s).
                    connect_timeout=HELLO_TIMEOUT,
                    message_queue_size=4, disconnect_timeout=2.0)
                await nursery.start(server.run)
                nursery.start_soon(self.hub.keep_alive)
                self.port = listeners[0].port
                log.info("master listening on %s://%s:%d", "wss" if ssl_context else "ws",
                         host, self.port)
                task_status.started(self.port)
        finally:
            self._nursery = None
            await self.aclose()  # the last word on disk: every project as it is now

    async def aclose(self) -> None:
        """Save every project (``serve`` does this when it ends; shielded, bounded)."""
        if self.files is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_SAVE_TIMEOUT):
            for name in list(self.projects):
                await self.save_project(name)


    def now(self) -> float:
        return trio.current_time()

    def uptime(self) -> float:
        """Seconds since ``serve`` started: the time base of events and status snapshots."""
        if self._started_at is None:
            return 0.0
        return max(0.0, trio.current_time() - self._started_at)

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run ``fn(*args)`` as a task of the master's nursery; False when it is not serving."""
        if self._nursery is None:
            return False
        self._nursery.start_soon(fn, *args)
        return True

    def save_soon(self, name: str) -> None:
        """Save project ``name``'s closure in the background (when it persists and serves)."""
        if self.files is not None:
            self.start_soon(self.save_project, name)

    # -- the registry's hooks ---------------------------------------------------------------------
    def _project_added(self, name: str, *, save: bool) -> None:
        if self._nursery is not None:
            self._start_loop(name)
            if save:
                self.save_soon(name)

    def _project_deleting(self, name: str) -> None:
        for conn in list(self.connections.values()):
            if conn.project == name:
                conn.say_bye("project_deleted", f"project {name} was deleted")
        scope = self._scopes.pop(name, None)
        if scope is not None:
            scope.cancel()

    def _data_registered(self, project: Project, *, grown: bool, new_test: Sequence[int]) -> None:
        if grown:
            self.broadcast_project_changed(project)
        if new_test:
            for w in project.of_role("stats"):
                send_ids(self.connections[w], list(new_test), [], len(project.test_ids))
        self.wake(project.name)

    # -- the event loop of one project ----------------------------------------------------------
    def _start_loop(self, name: str) -> None:
        assert self._nursery is not None
        scope = trio.CancelScope()
        self._scopes[name] = scope
        self._nursery.start_soon(run_project_loop, self, name, scope)

    def wake(self, name: str) -> None:
        """Wake project ``name``'s loop (a result came, a worker joined or left, a change)."""
        event = self._wakeups.get(name)
        if event is not None:
            event.set()

    def next_wakeup(self, name: str) -> trio.Event:
        """A fresh event that the next ``wake(name)`` sets (the project loop waits on it)."""
        event = self._wakeups[name] = trio.Event()
        return event

    # -- connections (the hub's) ------------------------------------------------------------------
    def forget(self, conn: Connection, *, log_event: bool = True) -> None:
        """Remove ``conn`` from the master and its project (an event says how it ended)."""
        self.hub.forget(conn, log_event=log_event)

    def subscribe(self, conn: Connection, project: str | None, interval: float) -> None:
        """Status snapshots for ``conn`` every ``interval`` s, with the events from now on."""
        self.hub.subscribe(conn, project, interval)

    def broadcast_project_changed(self, project: Project) -> None:
        """Tell every member of ``project`` its new settings."""
        self.hub.broadcast_project_changed(project)

    def register_data_server(self, conn: Connection, url: str, store: str | None) -> None:
        """A separate data server at ``url`` (serving ``store``) joins the announcement until
        ``conn`` closes. Raises RequestError for a store the others do not serve."""
        self.hub.register_data_server(conn, url, store)

    def set_operator_token(self, token: str, *, drop_operators: bool = False,
                           keep: Connection | None = None) -> None:
        """Replace the operator token (the old one stops working at once, for hellos and for
        the embedded data server's writes). ``drop_operators``: every operator connection
        but ``keep`` (the one asking) is told to leave."""
        if len(token) < 8 or " " in token:
            raise RequestError("invalid_value", "set_operator_token.operator_token: at least 8 "
                               "characters, no spaces")
        self.operator_token = token
        dropped = 0
        if drop_operators:
            for conn in list(self.connections.values()):
                if conn.role == "operator" and conn is not keep:
                    conn.say_bye("removed", "the operator token changed: connect again with "
                                 "the new one")
                    self.forget(conn, log_event=False)
                    dropped += 1
        self.log_event("configured", "the operator token was changed"
                       + (f"; {dropped} other operator connections were closed"
                          if drop_operators else ""))
