"""The master's connection hub: every client connection, from the upgrade to the close.

``ConnectionHub.handle`` serves one WebSocket: the caps, the hello (``_greet``, ``_welcome``:
project, token, role, the frame limit after it), then two tasks in one nursery: the reader
(frames and messages, each error answered and counted) and the sender (the bounded outbox; what
queued goes out in one write). One ``keep_alive`` task pings the clients not heard from. The
hub also sends status snapshots to subscribers and announces data servers. Like the project
loops and the request handlers, it uses only ``Master``'s public methods.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING

import trio
from trio_websocket import ConnectionClosed, Endpoint, WebSocketConnection, WebSocketRequest

from .. import __version__, _websocket
from .._transport import ping
from ..protocol import (
    MAX_BINARY_FRAME,
    MAX_LARGE_TEXT_FRAME,
    MAX_TEXT_FRAME,
    CacheReport,
    CloseCode,
    DataServers,
    Error,
    Hello,
    Message,
    ProjectChanged,
    ResultFrame,
    StatsPoint,
    StatsReport,
    Status,
    Welcome,
    WireError,
    check_sender,
    decode_frame,
    decode_text,
    encode_parameters,
    encode_text,
    read_hello,
)
from ..training import Member, Project
from ._caps import DEFAULT_CONNECTION_LIMITS, ConnectionCaps, ConnectionLimits
from ._connection import Connection, RequestError
from ._loop import send_ids
from ._requests import answer_request

if TYPE_CHECKING:
    from ._server import Master

_websocket.install()  # results arrive masked: unmask them at numpy speed (mlitb/_websocket.py)
log = logging.getLogger("mlitb.master")

HELLO_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0  # how long a close waits for the peer's answer before the socket is dropped
PING_INTERVAL = 2.0
PING_TIMEOUT = 3.0
MAX_ERRORS = 20
MAX_EVENTS_PER_STATUS = 256


class ConnectionHub:
    """The master's connections by worker id; ``caps`` counts them (``connection_limits``)."""

    def __init__(self, master: Master,
                 connection_limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS) -> None:
        self.master = master
        self.connections: dict[int, Connection] = {}
        # Every TCP connection from its accept, upgraded or not, hello said or not.
        self.caps = ConnectionCaps(connection_limits, server="the master")
        self._ids = itertools.count(1)
        self._pinging: set[int] = set()  # worker ids with a ping on its way

    def register_data_server(self, conn: Connection, url: str, store: str | None) -> None:
        """A separate data server at ``url`` (serving ``store``) joins the announcement until
        ``conn`` closes. Raises RequestError for a store the others do not serve."""
        self.master.data_servers.register(conn.worker_id, url, store)
        self.master.log_event("data", f"data server {url} registered"
                              + (f" (store {store})" if store else ""))
        self._announce_data_servers()

    def _announce_data_servers(self) -> None:
        # Workers of a project, and operators subscribed to status (a console uploads to them).
        for conn in list(self.connections.values()):
            if conn.project is not None or conn.subscription is not None:
                conn.send(DataServers(data_urls=self.master.data_servers.urls_for(conn.worker_id)))

    def broadcast_project_changed(self, project: Project) -> None:
        msg = ProjectChanged(project=project.info())
        for w in project.members:
            self.connections[w].send(msg)

    def subscribe(self, conn: Connection, project: str | None, interval: float) -> None:
        """Status snapshots for ``conn`` every ``interval`` s, with the events from now on."""
        if project is not None:
            self.master.project(project)
        first = conn.subscription is None
        conn.subscription = (project, interval)
        conn.events_seen = self.master.events.oldest_kept()
        if first:
            self.master.start_soon(self.publish, conn)

    async def handle(self, request: WebSocketRequest) -> None:
        """Serve one WebSocket connection (the server's handler), within the caps."""
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
                with conn.cancel:
                    await self._reader(conn)
                conn.outbox.close()  # the sender flushes what is queued (a bye), then ends
                nursery.cancel_scope.deadline = self.master.now() + 2.0
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
                return await self._welcome(ws, read_hello(text))
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
                if not self.master.is_operator_token(hello.token):
                    raise WireError("hello.token: wrong operator token", code="bad_token",
                                    close_code=CloseCode.POLICY_VIOLATION)
                authorized = True
        else:
            name = hello.project
            if name is None and len(self.master.projects) == 1:
                name = next(iter(self.master.projects))
            if name is None or name not in self.master.projects:
                what = f"no project named {name!r}" if name else (
                    "hello.project: name a project (the master has "
                    f"{len(self.master.projects)} projects)")
                raise WireError(what, code="unknown_project", close_code=CloseCode.NO_PROJECT)
            project = self.master.projects[name]
            if not self.master.access.get(name).may_join(hello.join_token):
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
                          last_heard=self.master.now())
        self.connections[worker_id] = conn
        if project is not None:
            self.master.data_servers.join(worker_id)
        urls = self.master.data_servers.urls_for(worker_id)
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
            self.master.log_event("joined", f"{hello.client} {hello.role} {worker_id} from "
                                  f"{hello.host} connected to {project.name}", project.name,
                                  worker_id)
            self.master.wake(project.name)
        return conn

    def forget(self, conn: Connection, *, log_event: bool = True) -> None:
        self.connections.pop(conn.worker_id, None)
        if self.master.data_servers.forget(conn.worker_id):
            self.master.log_event("data", f"data server of connection {conn.worker_id} went away")
            self._announce_data_servers()
        if conn.project is not None and conn.project in self.master.projects:
            project = self.master.projects[conn.project]
            if project.remove_member(conn.worker_id) is not None and log_event:
                clean = (conn.close_code == CloseCode.NORMAL and conn.peer_close_code
                         in (CloseCode.NORMAL, CloseCode.GOING_AWAY))
                kind = "left" if clean else "lost"
                self.master.log_event(
                    kind, f"worker {conn.worker_id} {kind} project {conn.project}"
                    + (f" ({conn.close_reason})" if conn.close_reason else ""),
                    conn.project, conn.worker_id)
                self.master.wake(conn.project)

    async def _sender(self, conn: Connection) -> None:
        try:
            # What queued up meanwhile (a round's parameters frame and work order) goes out
            # in the same write (mlitb/_websocket.py).
            await conn.outbox.run(conn.ws)
        except ConnectionClosed as exc:
            conn.peer_close_code = exc.reason.code if exc.reason else None
        conn.cancel.cancel()  # the outbox was closed or the peer went away: the reader stops

    async def keep_alive(self) -> None:
        """Ping the clients not heard from for ``PING_INTERVAL`` s; drop those that do not
        answer within ``PING_TIMEOUT`` s. One task looks at every connection: a sleeping task
        per connection would wake a thousand times per round at a thousand workers, for
        trainers that were heard from a moment ago."""
        while True:
            await trio.sleep(PING_INTERVAL / 2)
            now = self.master.now()
            for conn in list(self.connections.values()):
                if now - conn.last_heard >= PING_INTERVAL and conn.worker_id not in self._pinging:
                    self._pinging.add(conn.worker_id)
                    self.master.start_soon(self._ping, conn)

    async def _ping(self, conn: Connection) -> None:
        try:
            answered = await ping(conn.ws, PING_TIMEOUT)
        except ConnectionClosed as exc:
            conn.peer_close_code = exc.reason.code if exc.reason else None
            conn.cancel.cancel()
            return
        finally:
            self._pinging.discard(conn.worker_id)
        if answered:
            conn.last_heard = self.master.now()
            return
        conn.close_code, conn.close_reason = CloseCode.TIMED_OUT, "no answer to ping"
        self.forget(conn)
        conn.cancel.cancel()

    async def _reader(self, conn: Connection) -> None:
        errors = 0
        while True:
            try:
                data = await conn.ws.get_message()
            except ConnectionClosed as exc:
                conn.peer_close_code = exc.reason.code if exc.reason else None
                return
            conn.last_heard = self.master.now()
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
        project = self.master.projects.get(conn.project or "")
        if project is None:
            return
        frame = decode_frame(data, expected_length=project.net.num_params)
        if not isinstance(frame, ResultFrame):
            raise WireError("workers send result frames only", code="bad_frame")
        refused = project.accept_result(conn.worker_id, frame, self.master.now())
        if refused is not None:
            conn.send(Error(code=refused.code, message=refused))  # type: ignore[arg-type]
        else:
            self.master.wake(project.name)

    # -- control messages -------------------------------------------------------------------------
    def _on_message(self, conn: Connection, msg: Message) -> None:
        if isinstance(msg, Hello):
            raise WireError("hello: already said", code="bad_message")
        if isinstance(msg, CacheReport):
            project = self.master.projects.get(conn.project or "")
            if project is None:
                return
            if conn.role == "trainer" and conn.worker_id in project.allocator:
                project.allocator.mark_cached(conn.worker_id, msg.cached)
                project.allocator.mark_uncached(conn.worker_id, msg.evicted)
                if project.deterministic:  # a trainer may have become ready
                    self.master.wake(project.name)
            elif conn.role == "stats" and conn.worker_id in project.members:
                member = project.members[conn.worker_id]
                member.cached = max(0, member.cached + len(msg.cached) - len(msg.evicted))
            return
        if isinstance(msg, StatsReport):
            project = self.master.project(conn.project or "")
            project.record_stats(StatsPoint(iteration=msg.iteration,
                                            parameter_version=msg.parameter_version,
                                            samples=msg.samples, error=msg.error))
            return
        reply = answer_request(self.master, conn, msg)
        conn.send(reply)

    async def publish(self, conn: Connection) -> None:
        """Send status snapshots to a subscriber until it unsubscribes or leaves."""
        while conn.subscription is not None and conn.worker_id in self.connections:
            name, interval = conn.subscription
            try:
                snapshot = self.master.status(name)
                events = self.master.events.since(conn.events_seen, MAX_EVENTS_PER_STATUS)
                conn.events_seen = self.master.events.count
                snapshot = Status(time=snapshot.time, projects=snapshot.projects,
                                  events=tuple(events))
                conn.send(snapshot)
            except Exception as exc:  # noqa: BLE001 (a status that fails to encode is a bug)
                log.exception("status for worker %d failed", conn.worker_id)
                conn.send(Error(code="internal", message=f"the master could not send a status: "
                                f"{type(exc).__name__}: {exc}"[:2048]))
            await trio.sleep(interval)

