"""The master: trio + trio-websocket wiring around the pure project state.

One nursery owns everything: the WebSocket server, one task per connection (with its own sender
task, so a client that stops reading never blocks a broadcast), and one event-loop task per
project. Time comes from trio's clock, so tests can run iterations under a MockClock.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import secrets
import ssl
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, cast

import trio
from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
)

from .. import __version__
from .. import _websocket
from .._connections import open_capped_listeners
from ..closure import (
    Closure,
    Zoo,
    closure_from_dict,
    closure_from_project,
    closure_to_dict,
    manifest_from_store,
    project_from_closure,
)
from ..errors import ClosureError, MlitbError, ModelFormatError, OptimizerError
from ..nn import Net, layer_table
from ..optim import make_optimizer
from ..protocol import (
    MAX_BINARY_FRAME,
    MAX_HELLO_FRAME,
    MAX_LARGE_TEXT_FRAME,
    MAX_PARAMETERS,
    MAX_TEXT_FRAME,
    CacheReport,
    CloseCode,
    DataServers,
    Error,
    Event,
    Hello,
    Message,
    ProjectChanged,
    ResultFrame,
    StatsPoint,
    StatsReport,
    Status,
    Training,
    Welcome,
    WireError,
    check_sender,
    decode_frame,
    decode_text,
    encode_parameters,
    encode_text,
)
from ..training import LabelConflictError, Member, Project, TrainingError, check_training
from ._access import Access, AccessTable
from ._caps import DEFAULT_CONNECTION_LIMITS, ConnectionCaps, ConnectionLimits
from ._connection import OUTBOX_SIZE, Connection, RequestError
from ._dataservers import DataServerTable
from ._loop import run_project_loop, send_ids
from ._persist import ProjectFiles, Unreadable
from ._requests import answer_request


_websocket.install()  # results arrive masked: unmask them at numpy speed (mlitb/_websocket.py)
log = logging.getLogger("mlitb.master")

HELLO_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0  # how long a close waits for the peer's answer before the socket is dropped
PING_INTERVAL = 2.0
PING_TIMEOUT = 3.0
MAX_ERRORS = 20
MAX_EVENTS = 1_000
AUTOSAVE_EVERY = 10
SHUTDOWN_SAVE_TIMEOUT = 60.0


class Master:
    """The master server. ``serve`` runs it; everything else is callable from the same trio run.

    ``operator_token``: the secret operators send in their hello (generated when None).
    ``data_url``: the embedded data server's base URL, announced to workers in the welcome
    (None: no embedded one; separate data servers register, ``data_servers``).
    ``files``: where projects persist (``ProjectFiles``); with it every project's closure is
    saved every ``autosave_every`` iterations, when its settings change and when ``serve``
    ends, and ``restore()`` brings the projects back after a restart.
    ``connection_limits``: WebSocket connections served at once, in total and per address
    (over them: close ``TOO_MANY_CONNECTIONS``).
    """

    def __init__(self, *, operator_token: str | None = None,
                 data_url: str | None = "http://127.0.0.1:8001", files: ProjectFiles | None = None,
                 autosave_every: int = AUTOSAVE_EVERY, zoo: Zoo | None = None,
                 connection_limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS) -> None:
        if autosave_every < 1:
            raise ValueError(f"autosave_every must be >= 1, got {autosave_every}")
        self.files = files
        self.zoo = zoo  # closures operators and browsers can start projects from
        self.autosave_every = autosave_every
        self._save_locks: dict[str, trio.Lock] = {}
        self.operator_token = operator_token or secrets.token_urlsafe(16)
        # Per-project join and contributor tokens, hashed (DATA_DIR/projects/access.json).
        self.access = AccessTable(files.root if files is not None else None)
        self.data_servers = DataServerTable()  # what the welcome announces
        self.data_servers.set_fixed(data_url)
        self.projects: dict[str, Project] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        self._wakeups: dict[str, trio.Event] = {}
        self.connections: dict[int, Connection] = {}
        # Every TCP connection from its accept, upgraded or not, hello said or not.
        self.caps = ConnectionCaps(connection_limits, server="the master")
        self._ids = itertools.count(1)
        self._events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self._event_count = 0
        self._nursery: trio.Nursery | None = None
        self._started_at: float | None = None
        # Called with each new project's name (the embedded data server registers stored data).
        self.on_project_created: list[Callable[[str], None]] = []
        # The data manifest of a project (hashes of its samples) for research closures.
        self.manifest_provider: Callable[[str], Any] | None = None
        self.port: int | None = None

    @property
    def data_url(self) -> str | None:
        """The embedded data server's URL (None: none)."""
        return self.data_servers.fixed.url if self.data_servers.fixed is not None else None

    @data_url.setter
    def data_url(self, url: str | None) -> None:
        fixed = self.data_servers.fixed
        self.data_servers.set_fixed(url, fixed.store if fixed is not None else None)

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
                    self._handle,
                    # trio-websocket's annotation names trio's own listeners; it serves any.
                    cast(Any, listeners), handler_nursery=nursery,
                    # Strangers get a small limit until their hello (``_welcome`` raises it).
                    max_message_size=MAX_HELLO_FRAME, receive_buffer_size=64 * 1024,
                    # A socket that never completes the HTTP upgrade is dropped as soon as one
                    # that never says hello (trio-websocket's default is 60 s).
                    connect_timeout=HELLO_TIMEOUT,
                    message_queue_size=4, disconnect_timeout=2.0)
                await nursery.start(server.run)
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

    def _uptime(self) -> float:
        """Seconds since ``serve`` started: the time base of events and status snapshots."""
        if self._started_at is None:
            return 0.0
        return max(0.0, trio.current_time() - self._started_at)

    def log_event(self, kind: str, message: str, project: str | None = None,
               worker_id: int | None = None) -> None:
        self._events.append(Event(time=self._uptime(), kind=kind,  # type: ignore[arg-type]
                                  message=message[:2048], project=project, worker_id=worker_id))
        self._event_count += 1
        log.info("%s: %s", kind, message)

    # -- projects ---------------------------------------------------------------------------------
    def create_project(self, name: str, spec: Sequence[dict[str, Any]], *,
                       iteration_time: float = 2.0, optimizer: str = "adagrad",
                       hyperparameters: dict[str, float] | None = None,
                       labels: Sequence[str] = (), seed: int | None = None,
                       samples_per_iteration: int | None = None,
                       training: Training | None = None) -> Project:
        """Create and start a project. ``training``: the algorithm, schedule and augmentation
        (default: the paper's gradient algorithm). Raises RequestError for a name in use or a
        bad spec or setting."""
        if name in self.projects:
            raise RequestError("project_exists", f"project {name!r} exists already")
        try:
            # Counted before anything is allocated: a spec may ask for billions of parameters.
            count = sum(layer["parameters"] for layer in layer_table(spec))
            if count > MAX_PARAMETERS:
                raise ModelFormatError(f"the net has {count:,} parameters; a project carries "
                                       f"at most {MAX_PARAMETERS:,} (one parameters frame)")
            net = Net(spec, seed=seed, labels=list(labels) or None)
            l1, l2 = net.decay_multipliers()
            opt = make_optimizer(optimizer, net.num_params, **(hyperparameters or {}),
                                 l1_mul=l1, l2_mul=l2)
            project = Project(name, net, opt, optimizer, iteration_time,
                              samples_per_iteration=samples_per_iteration,
                              seeds={} if seed is None else {"init": seed}, training=training)
        except (ModelFormatError, OptimizerError, TrainingError) as exc:
            raise RequestError("invalid_value", str(exc)) from None
        self._add(project, f"project {name} created ({net.num_params} parameters, "
                  f"{optimizer}, {project.training.algorithm}, T={iteration_time:g} s"
                  + (f", {samples_per_iteration} samples per iteration, deterministic"
                     if samples_per_iteration is not None else "") + ")")
        return project

    def create_project_from_closure(
            self, closure: Closure | Mapping[str, Any], name: str | None = None, *,
            iteration_time: float | None = None, optimizer: str | None = None,
            hyperparameters: dict[str, float] | None = None,
            samples_per_iteration: int | None = None, labels: Sequence[str] = (),
            training: Training | None = None) -> Project:
        """Create and start a project that continues a research closure (a ``Closure`` or its
        JSON object, checked): its net, optimizer and state, T, loop settings, iteration
        counters and history, under ``name`` (default: the closure's). ``iteration_time``,
        ``samples_per_iteration``: None keeps the closure's. ``optimizer``: None or the
        closure's keeps its state; another starts that optimizer afresh. ``hyperparameters``
        change the (kept or new) optimizer's. ``training``: None keeps the closure's; other
        settings (even another algorithm) start from here, with a fresh outer optimizer. A
        deterministic project starts a new replay record here. Raises RequestError for a name
        in use or a closure that fails its checks.
        """
        try:
            if not isinstance(closure, Closure):
                closure = closure_from_dict(closure)
        except ClosureError as exc:
            raise RequestError("invalid_value", f"create_project.closure: {exc}") from None
        name = name or closure.name
        if name in self.projects:
            raise RequestError("project_exists", f"project {name!r} exists already")
        if labels and tuple(labels) != closure.labels:
            raise RequestError("invalid_value", f"create_project.labels: {list(labels)[:6]} "
                               f"differ from the closure's label map {list(closure.labels)[:6]}")
        changes: dict[str, Any] = {}
        if iteration_time is not None:
            changes["iteration_time"] = iteration_time
        if samples_per_iteration is not None:
            changes["samples_per_iteration"] = samples_per_iteration
        if changes:
            loop = closure.loop
            closure = closure.replace(loop=type(loop)(
                iteration_time=changes.get("iteration_time", loop.iteration_time),
                samples_per_iteration=changes.get("samples_per_iteration",
                                                  loop.samples_per_iteration),
                deterministic=changes.get("samples_per_iteration",
                                          loop.samples_per_iteration) is not None,
                allocation=loop.allocation, budget_config=loop.budget_config, seeds=loop.seeds,
                training=loop.training, samples_trained=loop.samples_trained,
                seconds_trained=loop.seconds_trained))
        if training is not None:
            try:
                training = check_training(training)
            except TrainingError as exc:
                raise RequestError("invalid_value", str(exc)) from None
            if training != closure.loop.training:
                fresh = training.algorithm != closure.loop.training.algorithm
                closure = closure.replace(
                    loop=dataclasses.replace(closure.loop, training=training),
                    outer_step=0 if fresh else closure.outer_step,
                    outer_velocity=None if fresh else closure.outer_velocity)
        try:
            project = project_from_closure(closure, name)
            if optimizer is not None and optimizer != closure.optimizer_name:
                l1, l2 = project.net.decay_multipliers()
                project.optimizer = make_optimizer(optimizer, project.net.num_params,
                                                   l1_mul=l1, l2_mul=l2)
                project.optimizer_name = optimizer
            if hyperparameters:
                project.set_hyperparameters(**hyperparameters)
        except (ClosureError, ModelFormatError, OptimizerError, TrainingError) as exc:
            raise RequestError("invalid_value", str(exc)) from None
        self._add(project, f"project {name} created from the closure of {closure.name} "
                  f"(iteration {closure.iteration}, {project.net.num_params} parameters, "
                  f"{project.optimizer_name}, T={project.iteration_time:g} s)")
        return project

    def restore(self) -> tuple[list[str], list[Unreadable]]:
        """Recreate every project saved in ``files`` (call before ``serve``): the names
        restored, and the files that could not be read (renamed aside, logged)."""
        if self.files is None:
            return [], []
        closures, problems = self.files.load_all()
        names = []
        for closure in closures:
            if closure.name in self.projects:
                continue
            project = project_from_closure(closure, keep_record=True)
            project.created = closure.created
            project.paused = closure.loop.paused  # a restart does not undo an operator's pause
            self._add(project, f"project {project.name} restored at iteration "
                      f"{project.iteration} (parameter version {project.parameter_version})",
                      save=False)
            names.append(project.name)
        for problem in problems:
            self.log_event("error", f"could not restore {problem.path.name}: {problem.reason}")
        return names, problems

    def _add(self, project: Project, message: str, *, save: bool = True) -> None:
        name = project.name
        self.projects[name] = project
        self.log_event("created", message, name)
        if self._nursery is not None:
            self._start_loop(name)
            if save:
                self.save_soon(name)
        for hook in self.on_project_created:
            hook(name)

    # -- persistence ------------------------------------------------------------------------------
    def save_soon(self, name: str) -> None:
        if self.files is not None and self._nursery is not None:
            self._nursery.start_soon(self.save_project, name)

    async def save_project(self, name: str) -> None:
        """Write the project's closure to ``files`` (in a thread; atomic). Saves of one name
        run one at a time, each a snapshot taken when its turn comes; a project deleted
        meanwhile leaves no file behind. Failures are logged as events, never raised."""
        files, project = self.files, self.projects.get(name)
        if files is None or project is None:
            return
        lock = self._save_locks.setdefault(name, trio.Lock())
        async with lock:
            if self.projects.get(name) is not project:
                return
            try:
                snapshot = closure_from_project(project)  # copies, taken in the event loop
            except Exception as exc:  # noqa: BLE001 (an autosave never takes the master down)
                if not isinstance(exc, MlitbError):
                    log.exception("project %s: cannot snapshot its closure", name)
                self.log_event("error", f"project {name}: cannot save its closure: {exc}", name)
                return
            if project.created is None:
                project.created = snapshot.created
            provider = self.manifest_provider

            def write() -> None:
                closure = snapshot
                if provider is not None:
                    try:
                        closure = snapshot.replace(data=manifest_from_store(provider(name)))
                    except MlitbError:  # no data stored yet
                        pass
                files.save(closure)

            try:
                await trio.to_thread.run_sync(write)
            except Exception as exc:  # noqa: BLE001 (an autosave never takes the master down)
                if not isinstance(exc, (OSError, MlitbError)):
                    log.exception("project %s: autosave failed", name)
                self.log_event("error", f"project {name}: autosave to {files.path(name)} failed "
                            f"(the previous file is kept): {exc}", name)
            if self.projects.get(name) is not project:  # deleted while it was being written
                files.remove(name)

    def delete_project(self, name: str) -> None:
        """Delete a project: its workers are told to leave, its saved closure is removed."""
        self.project(name)
        for conn in list(self.connections.values()):
            if conn.project == name:
                conn.say_bye("project_deleted", f"project {name} was deleted")
        scope = self._scopes.pop(name, None)
        if scope is not None:
            scope.cancel()
        del self.projects[name]
        self.access.remove(name)  # a later project of this name starts open
        if self.files is not None:
            lock = self._save_locks.get(name)
            if lock is None or not lock.locked():  # else the save in flight removes it
                self.files.remove(name)
        self.log_event("deleted", f"project {name} deleted", name)

    def set_access(self, name: str, *, join_token: str | None = None,
                   contributor_token: str | None = None,
                   keep: Collection[str] = ()) -> None:
        """Give project ``name`` a join token (None: open to every trainer, tracker and stats
        worker) and a contributor token (None: only the operator adds data), except those named
        in ``keep`` (``"join"``, ``"contributor"``), which stay as they are. Only hashes are
        kept. Members already connected stay."""
        self.project(name)
        old, new = self.access.get(name), Access.from_tokens(join_token, contributor_token)
        access = Access(join_hash=old.join_hash if "join" in keep else new.join_hash,
                        contributor_hash=old.contributor_hash if "contributor" in keep
                        else new.contributor_hash)
        self.access.set(name, access)
        self.log_event("configured", f"project {name}: "
                    + ("open to every trainer" if access.open else "needs a join token")
                    + (", takes contributions" if access.contributor_hash else ""), name)

    def may_contribute(self, name: str, token: str | None) -> bool:
        """Whether ``token`` is project ``name``'s contributor token (constant time)."""
        return name in self.projects and self.access.get(name).may_contribute(token)

    def is_operator_token(self, token: str) -> bool:
        """Whether ``token`` is the operator token now (constant time)."""
        return secrets.compare_digest(token.encode(), self.operator_token.encode())

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

    def may_read(self, name: str, token: str | None) -> bool:
        """Whether ``token`` may read project ``name``'s data on the data server: anyone for an
        open project (the paper's default, and a project the master does not know); for a
        join-token project its join token, its contributor token or the operator token."""
        access = self.access.get(name)
        if name not in self.projects or access.open:
            return True
        return token is not None and (
            access.may_join(token) or access.may_contribute(token)
            or self.is_operator_token(token))

    def project(self, name: str) -> Project:
        project = self.projects.get(name)
        if project is None:
            raise RequestError("unknown_project", f"no project named {name!r}")
        return project

    def plan_labels(self, name: str, names: Sequence[str]) -> tuple[str, ...]:
        """The label list the data server stores an upload naming ``names`` under
        (``Project.plan_labels``): registering it afterwards cannot conflict."""
        return tuple(self.project(name).plan_labels(names))

    def register_data(self, name: str, split: str, ids: Sequence[int],
                      label_names: Sequence[str]) -> Project:
        """Called (directly, or through ``register_data`` messages) by the data server."""
        project = self.project(name)
        try:
            grown = project.register_labels(label_names)
        except LabelConflictError as exc:
            raise RequestError("invalid_value", str(exc)) from None
        new_test = project.add_data(split, ids)
        if grown:
            self.log_event("configured", f"project {name}: output layer grew to "
                        f"{len(project.net.labels)} classes", name)
            self.broadcast_project_changed(project)
        if new_test:
            for w in project.of_role("stats"):
                send_ids(self.connections[w], new_test, [], len(project.test_ids))
        self.log_event("data", f"project {name}: {len(ids)} {split} ids registered", name)
        self.wake(name)
        return project

    def register_data_server(self, conn: Connection, url: str, store: str | None) -> None:
        """A separate data server at ``url`` (serving ``store``) joins the announcement until
        ``conn`` closes. Raises RequestError for a store the others do not serve."""
        self.data_servers.register(conn.worker_id, url, store)
        self.log_event("data", f"data server {url} registered"
                    + (f" (store {store})" if store else ""))
        self._announce_data_servers()

    def _announce_data_servers(self) -> None:
        # Workers of a project, and operators subscribed to status (a console uploads to them).
        for conn in list(self.connections.values()):
            if conn.project is not None or conn.subscription is not None:
                conn.send(DataServers(data_urls=self.data_servers.urls_for(conn.worker_id)))

    def broadcast_project_changed(self, project: Project) -> None:
        msg = ProjectChanged(project=project.info())
        for w in project.members:
            self.connections[w].send(msg)

    def wake(self, name: str) -> None:
        """Wake project ``name``'s loop (a result came, a worker joined or left, a change)."""
        event = self._wakeups.get(name)
        if event is not None:
            event.set()

    def next_wakeup(self, name: str) -> trio.Event:
        """A fresh event that the next ``wake(name)`` sets (the project loop waits on it)."""
        event = self._wakeups[name] = trio.Event()
        return event

    def subscribe(self, conn: Connection, project: str | None, interval: float) -> None:
        """Status snapshots for ``conn`` every ``interval`` s, with the events from now on."""
        if project is not None:
            self.project(project)
        first = conn.subscription is None
        conn.subscription = (project, interval)
        conn.events_seen = max(0, self._event_count - len(self._events))
        if first and self._nursery is not None:
            self._nursery.start_soon(self.publish, conn)

    def statistics(self) -> dict[str, Any]:
        """A snapshot of the master's state (the same content as the status messages)."""
        return {name: p.status() for name, p in self.projects.items()}

    # -- the event loop of one project ----------------------------------------------------------
    def _start_loop(self, name: str) -> None:
        assert self._nursery is not None
        scope = trio.CancelScope()
        self._scopes[name] = scope
        self._nursery.start_soon(run_project_loop, self, name, scope)

    # -- connections --------------------------------------------------------------------------------
    async def _handle(self, request: WebSocketRequest) -> None:
        remote = request.remote
        # The listener counted the connection at its accept, or let it through over a cap to
        # be told why (``mlitb._connections``).
        reason = (self.caps.refusal(remote.address, remote.port)
                  if isinstance(remote, Endpoint) else None)
        if reason is not None:
            await self._refuse(request, reason)
            return
        await self._serve_connection(request)

    async def _refuse(self, request: WebSocketRequest, reason: str) -> None:
        """Over a cap: complete the upgrade only to close with a code a browser can read (a
        refused HTTP upgrade reaches a page as a bare 1006). The listener logs refusals."""
        with trio.move_on_after(CLOSE_TIMEOUT):
            try:
                ws = await request.accept()
                await ws.aclose(CloseCode.TOO_MANY_CONNECTIONS, reason)
            except ConnectionClosed:
                pass

    async def _serve_connection(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        conn: Connection | None = None
        try:
            conn = await self._greet(ws)
            if conn is None:
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sender, conn)
                keepalive = trio.CancelScope()
                nursery.start_soon(self._keepalive, conn, keepalive)
                with conn.cancel:
                    await self._reader(conn)
                keepalive.cancel()
                conn.outbox_send.close()  # the sender flushes what is queued (a bye), then ends
                nursery.cancel_scope.deadline = self.now() + 2.0
        except ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 (one connection's failure never stops the master)
            log.exception("connection %s: unexpected error; closing it",
                          conn.worker_id if conn is not None else "before hello")
            if conn is not None:
                conn.close_code, conn.close_reason = CloseCode.INTERNAL_ERROR, "internal error"
        finally:
            if conn is not None:
                self.forget(conn)
            with trio.move_on_after(CLOSE_TIMEOUT) as cleanup:
                cleanup.shield = True
                code = conn.close_code if conn is not None else CloseCode.NORMAL
                await ws.aclose(code, conn.close_reason if conn is not None else None)

    async def _greet(self, ws: WebSocketConnection) -> Connection | None:
        """Read the hello; answer welcome, or error + close. Returns the connection or None."""
        with trio.move_on_after(HELLO_TIMEOUT):
            text = await ws.get_message()
            break_reason = None
            try:
                if not isinstance(text, str):
                    raise WireError("the first message must be a hello text frame",
                                    code="hello_required", close_code=CloseCode.HELLO_REQUIRED)
                hello = decode_text(text)
                if not isinstance(hello, Hello):
                    raise WireError(f"the first message must be a hello, got {hello.TYPE}",
                                    code="hello_required", close_code=CloseCode.HELLO_REQUIRED)
                return await self._welcome(ws, hello)
            except WireError as exc:
                break_reason = exc
            await ws.send_message(encode_text(Error(code=break_reason.code,
                                                    message=str(break_reason)[:2048])))
            await ws.aclose(break_reason.close_code or CloseCode.HELLO_REQUIRED)
            return None
        # Bounded: trio-websocket waits for the peer's answer to the close frame, and a
        # stranger who never sends anything never sends that either.
        with trio.move_on_after(CLOSE_TIMEOUT):
            await ws.aclose(CloseCode.HELLO_REQUIRED, "no hello in time")
        return None

    async def _welcome(self, ws: WebSocketConnection, hello: Hello) -> Connection:
        authorized = False
        project: Project | None = None
        if hello.role == "operator":
            if hello.token is not None:
                if not self.is_operator_token(hello.token):
                    raise WireError("hello.token: wrong operator token", code="bad_token",
                                    close_code=CloseCode.POLICY_VIOLATION)
                authorized = True
        else:
            name = hello.project
            if name is None and len(self.projects) == 1:
                name = next(iter(self.projects))
            if name is None or name not in self.projects:
                what = f"no project named {name!r}" if name else (
                    "hello.project: name a project (the master has "
                    f"{len(self.projects)} projects)")
                raise WireError(what, code="unknown_project", close_code=CloseCode.NO_PROJECT)
            project = self.projects[name]
            if not self.access.get(name).may_join(hello.join_token):
                what = "a wrong join token" if hello.join_token else "no join token"
                raise WireError(f"project {name} needs its join token; the hello carried {what} "
                                "(ask the operator for the project's join link or token)",
                                code="join_refused", close_code=CloseCode.JOIN_REFUSED)
        # The frame limit after the hello (trio-websocket reads it per message, so it holds
        # from the next message on): large text for authorized operators, one result frame for
        # trainers, MAX_TEXT_FRAME for everyone else.
        ws._max_message_size = (MAX_LARGE_TEXT_FRAME if authorized else MAX_BINARY_FRAME
                                if hello.role == "trainer" else MAX_TEXT_FRAME)
        worker_id = next(self._ids)
        conn = Connection(ws=ws, worker_id=worker_id, role=hello.role, client=hello.client,
                          host=hello.host, authorized=authorized,
                          project=project.name if project else None,
                          last_heard=self.now())
        self.connections[worker_id] = conn
        if project is not None:
            self.data_servers.join(worker_id)
        urls = self.data_servers.urls_for(worker_id)
        conn.send(Welcome(worker_id=worker_id, role=hello.role, authorized=authorized,
                          data_url=urls[0] if urls else None, data_urls=urls,
                          server_version=__version__,
                          project=project.info() if project else None))
        if project is not None:
            project.add_member(Member(worker_id, hello.role, hello.client, hello.host))
            if hello.role == "stats" and project.test_ids:
                send_ids(conn, list(project.test_ids), [], len(project.test_ids))
            if hello.role in ("tracker", "stats"):
                conn.send(encode_parameters(project.net.params,
                                            parameter_version=project.parameter_version,
                                            iteration=project.iteration))
            self.log_event("joined", f"{hello.client} {hello.role} {worker_id} from {hello.host} "
                        f"connected to {project.name}", project.name, worker_id)
            self.wake(project.name)
        return conn

    def forget(self, conn: Connection, *, log_event: bool = True) -> None:
        self.connections.pop(conn.worker_id, None)
        if self.data_servers.forget(conn.worker_id):
            self.log_event("data", f"data server of connection {conn.worker_id} went away")
            self._announce_data_servers()
        if conn.project is not None and conn.project in self.projects:
            project = self.projects[conn.project]
            if project.remove_member(conn.worker_id) is not None and log_event:
                clean = (conn.close_code == CloseCode.NORMAL and conn.peer_close_code
                         in (CloseCode.NORMAL, CloseCode.GOING_AWAY))
                kind = "left" if clean else "lost"
                self.log_event(kind, f"worker {conn.worker_id} {kind} project {conn.project}"
                            + (f" ({conn.close_reason})" if conn.close_reason else ""),
                            conn.project, conn.worker_id)
                self.wake(conn.project)

    async def _sender(self, conn: Connection) -> None:
        try:
            async for data in conn.outbox_receive:
                # What queued up meanwhile (a round's parameters frame and work order) goes
                # out in the same write (mlitb/_websocket.py).
                batch = [data]
                while len(batch) < OUTBOX_SIZE:
                    try:
                        batch.append(conn.outbox_receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await _websocket.send_messages(conn.ws, batch)
        except ConnectionClosed as exc:
            conn.peer_close_code = exc.reason.code if exc.reason else None
        conn.cancel.cancel()  # the outbox was closed or the peer went away: the reader stops

    async def _keepalive(self, conn: Connection, scope: trio.CancelScope) -> None:
        """Ping clients we have not heard from lately; close those that do not answer."""
        with scope:
            while True:
                await trio.sleep(PING_INTERVAL)
                if self.now() - conn.last_heard < PING_INTERVAL:
                    continue
                with trio.move_on_after(PING_TIMEOUT):
                    try:
                        await conn.ws.ping()
                    except ConnectionClosed as exc:
                        conn.peer_close_code = exc.reason.code if exc.reason else None
                        conn.cancel.cancel()
                        return
                    conn.last_heard = self.now()
                    continue
                conn.close_code, conn.close_reason = CloseCode.TIMED_OUT, "no answer to ping"
                self.forget(conn)
                conn.cancel.cancel()
                return

    async def _reader(self, conn: Connection) -> None:
        errors = 0
        while True:
            try:
                data = await conn.ws.get_message()
            except ConnectionClosed as exc:
                conn.peer_close_code = exc.reason.code if exc.reason else None
                return
            conn.last_heard = self.now()
            request_id: str | None = None
            try:
                if isinstance(data, bytes):
                    self._on_frame(conn, data)
                else:
                    limit = MAX_LARGE_TEXT_FRAME if conn.authorized else MAX_TEXT_FRAME
                    message = decode_text(data, max_size=limit)
                    request_id = getattr(message, "request_id", None)
                    check_sender(message, conn.role, authorized=conn.authorized)  # type: ignore[arg-type]
                    self._on_message(conn, message)
            except WireError as exc:
                errors += 1
                log.warning("worker %d (%s): %s", conn.worker_id, conn.host, exc)
                conn.send(Error(code=exc.code, message=str(exc)[:2048],
                                request_id=exc.request_id))
                if exc.close_code is not None:
                    conn.drop(exc.close_code, str(exc))
                    return
                if errors >= MAX_ERRORS:
                    conn.say_bye("too_many_errors", f"{errors} invalid messages")
                    return
            except RequestError as exc:
                conn.send(Error(code=exc.code, message=str(exc)[:2048],  # type: ignore[arg-type]
                                request_id=request_id))
            except Exception as exc:  # noqa: BLE001 (a bug answers "internal"; the master goes on)
                log.exception("worker %d (%s): error handling a message", conn.worker_id,
                              conn.host)
                conn.send(Error(code="internal", message=f"the master failed on this message: "
                                f"{type(exc).__name__}: {exc}"[:2048], request_id=request_id))

    def _on_frame(self, conn: Connection, data: bytes) -> None:
        if conn.role != "trainer":
            raise WireError("only trainers send binary frames", code="forbidden",
                            close_code=CloseCode.UNSUPPORTED_DATA)
        project = self.projects.get(conn.project or "")
        if project is None:
            return
        frame = decode_frame(data, expected_length=project.net.num_params)
        if not isinstance(frame, ResultFrame):
            raise WireError("workers send result frames only", code="bad_frame")
        refused = project.accept_result(conn.worker_id, frame, self.now())
        if refused is not None:
            conn.send(Error(code=refused.code, message=refused))  # type: ignore[arg-type]
        else:
            self.wake(project.name)

    # -- control messages -------------------------------------------------------------------------
    def _on_message(self, conn: Connection, msg: Message) -> None:
        if isinstance(msg, Hello):
            raise WireError("hello: already said", code="bad_message")
        if isinstance(msg, CacheReport):
            project = self.projects.get(conn.project or "")
            if project is None:
                return
            if conn.role == "trainer" and conn.worker_id in project.allocator:
                project.allocator.mark_cached(conn.worker_id, msg.cached)
                project.allocator.mark_uncached(conn.worker_id, msg.evicted)
                if project.deterministic:  # a trainer may have become ready
                    self.wake(project.name)
            elif conn.role == "stats" and conn.worker_id in project.members:
                member = project.members[conn.worker_id]
                member.cached = max(0, member.cached + len(msg.cached) - len(msg.evicted))
            return
        if isinstance(msg, StatsReport):
            project = self.project(conn.project or "")
            project.record_stats(StatsPoint(iteration=msg.iteration,
                                            parameter_version=msg.parameter_version,
                                            samples=msg.samples, error=msg.error))
            return
        reply = answer_request(self, conn, msg)
        conn.send(reply)

    def closure_of(self, name: str) -> dict[str, Any]:
        """The research closure of a project as it is now (docs/closure.md)."""
        project = self.project(name)
        manifest = None
        if self.manifest_provider is not None:
            try:
                manifest = self.manifest_provider(name)
            except MlitbError:  # no data stored yet
                manifest = None
        try:
            return closure_to_dict(closure_from_project(project, manifest))
        except ClosureError as exc:
            raise RequestError("internal", f"project {name}: its closure cannot be written: "
                               f"{exc}") from None

    def status(self, project: str | None) -> Status:
        names = [project] if project is not None else list(self.projects)
        return Status(time=self._uptime(),
                      projects=tuple(self.projects[n].status() for n in names
                                     if n in self.projects))

    async def publish(self, conn: Connection) -> None:
        """Send status snapshots to a subscriber until it unsubscribes or leaves."""
        while conn.subscription is not None and conn.worker_id in self.connections:
            name, interval = conn.subscription
            try:
                snapshot = self.status(name)
                missed = self._event_count - conn.events_seen
                events = list(self._events)[-min(missed, len(self._events)):] if missed else []
                conn.events_seen = self._event_count
                snapshot = Status(time=snapshot.time, projects=snapshot.projects,
                                  events=tuple(events[-256:]))
                conn.send(snapshot)
            except Exception as exc:  # noqa: BLE001 (a status that fails to encode is a bug)
                log.exception("status for worker %d failed", conn.worker_id)
                conn.send(Error(code="internal", message=f"the master could not send a status: "
                                f"{type(exc).__name__}: {exc}"[:2048]))
            await trio.sleep(interval)
