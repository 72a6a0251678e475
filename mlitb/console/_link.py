"""The console's live connection to a master: trio code, run in guest mode on Textual's loop.

``MasterLink.run`` connects as an operator (``mlitb.client.open_operator``), subscribes to status
snapshots of every project, and reads: snapshots go to the app as ``StatusReceived``, answers go
to the request that is waiting for them. When the connection ends it says so (``LinkChanged``)
and connects again with backoff, until the console closes; only a refused token stops it.

``LiveBackend`` is the asyncio face of it (the ``Backend`` the app uses): each request becomes a
trio task whose outcome resolves an asyncio future.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import trio
from textual.app import App
from textual.message import Message as TextualMessage
from trio_websocket import ConnectionClosed

from mlitb._backoff import Backoff
from mlitb._transport import check_master_url, keepalive
from mlitb.client import (
    MasterUnreachableError,
    OperatorClient,
    open_operator,
    upload_failure,
)
from mlitb.errors import AuthError, MlitbError, ProtocolError
from mlitb.protocol import (
    Answered,
    ClientMessage,
    DataServers,
    ListProjects,
    Message,
    ProjectList,
    Pushed,
    Split,
    Status,
    Subscribe,
    as_answer,
)

from ._app_messages import LinkChanged, LinkState, StatusReceived
from ._backend import Progress
from ._bridge import TrioGuest

M = TypeVar("M")
Post = Callable[[TextualMessage], object]

REQUEST_TIMEOUT = 60.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 8.0
PING_INTERVAL = 10.0
"""A master quiet this long is pinged; one that does not answer within as long again is gone
(it may have vanished without closing): the link reconnects."""


@dataclass
class _Pending:
    """A request waiting for its answer."""

    done: trio.Event = field(default_factory=trio.Event)
    reply: Message | None = None
    error: MlitbError | None = None


class MasterLink:
    """One operator session at a time, re-opened whenever it ends (trio side). The session
    (``mlitb.protocol.ClientSession``) matches answers to requests; this link reads, so that
    several requests may wait at once."""

    def __init__(self, url: str, token: str | None, post: Post, *, interval: float = 1.0,
                 first_backoff: float = BACKOFF_FIRST, cafile: str | None = None) -> None:
        self.url = url
        self.token = token
        self.cafile = cafile
        self.interval = interval
        self.first_backoff = first_backoff
        self.state = LinkState("connecting", url)
        self._post = post
        self._op: OperatorClient | None = None
        self._pending: dict[str, _Pending] = {}
        self._send_lock = trio.Lock()
        self._heard = 0.0  # when the master was last heard from (the keepalive reads it)

    def _set(self, state: LinkState) -> None:
        self.state = state
        self._post(LinkChanged(state))

    async def run(self) -> None:
        """Connect, read, reconnect: until cancelled, or until the master refuses the token."""
        failures = 0
        reconnect = Backoff(self.first_backoff, max(BACKOFF_MAX, self.first_backoff))
        was_connected = False
        self._set(LinkState("connecting", self.url))
        while True:
            try:
                async with open_operator(self.url, self.token, cafile=self.cafile) as op:
                    failures = 0
                    reconnect.reset()
                    was_connected = True
                    reason = await self._session(op)
            except AuthError as exc:
                self._set(LinkState("refused", self.url, str(exc)))
                return
            except MasterUnreachableError as exc:
                reason = str(exc)
            except ProtocolError as exc:
                reason = f"the master sent something unexpected: {exc}"
            finally:
                self._op = None
                self._fail_pending()
            failures += 1
            delay = reconnect.next()
            self._set(LinkState("lost" if was_connected else "unreachable", self.url, reason,
                                attempt=failures, retry_in=delay))
            await trio.sleep(delay)

    async def _session(self, op: OperatorClient) -> str:
        """Subscribe and read until the connection ends; returns why it ended."""
        self._op = op
        _, text = op.session.request(Subscribe(request_id="-", interval=self.interval))
        await self._send(op, text)
        self._set(LinkState("connected", self.url, authorized=op.authorized,
                            data_url=op.welcome.data_url))
        async with trio.open_nursery() as nursery:
            ended: list[str] = []

            async def watch() -> None:
                ended.append(await self._read(op))
                nursery.cancel_scope.cancel()

            async def ping() -> None:
                self._hear()
                try:
                    await keepalive(op.ws, interval=PING_INTERVAL, timeout=PING_INTERVAL,
                                    quiet=lambda: trio.current_time() - self._heard,
                                    heard=self._hear)
                except ConnectionClosed:
                    return  # the reader says why
                ended.append(f"the master did not answer a ping within {PING_INTERVAL:g} s")
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            nursery.start_soon(ping)
        return ended[0]

    def _hear(self) -> None:
        self._heard = trio.current_time()

    async def _read(self, op: OperatorClient) -> str:
        """Read until the connection ends; returns why it ended."""
        while True:
            try:
                data = await op.ws.get_message()
                self._hear()
            except ConnectionClosed as exc:
                closed = op.session.closed(exc.reason.code if exc.reason else None,
                                           exc.reason.reason if exc.reason else None)
                if closed.bye is not None:
                    bye = closed.bye
                    return f"the master said goodbye ({bye.reason}" \
                           f"{': ' if bye.message else ''}{bye.message})"
                return f"the master closed the connection ({closed.description})"
            try:
                event = op.session.receive(data)
            except ProtocolError:
                continue  # a bad frame from the master: skip it, keep the session
            if isinstance(event, Answered):
                pending = self._pending.get(event.request_id)
                if pending is not None:
                    pending.reply = event.message
                    pending.done.set()
            elif isinstance(event, Pushed):
                message = event.message
                if isinstance(message, Status):
                    self._post(StatusReceived(message))
                elif isinstance(message, DataServers):  # one registered or went away
                    self._set(replace(self.state, data_url=message.data_urls[0]
                                      if message.data_urls else None))

    async def _send(self, op: OperatorClient, text: str) -> None:
        async with self._send_lock:
            try:
                await op.ws.send_message(text)
            except ConnectionClosed:
                raise MasterUnreachableError("the connection to the master was lost") from None

    def _fail_pending(self) -> None:
        for pending in self._pending.values():
            pending.error = MasterUnreachableError("the connection to the master was lost "
                                                   "before it answered")
            pending.done.set()
        self._pending.clear()

    async def request(self, message: ClientMessage, expect: type[M]) -> M:
        """Send ``message`` with a fresh request id and wait for its answer (trio side)."""
        op = self._op
        if op is None:
            raise MasterUnreachableError(f"not connected to the master at {self.url}"
                                         + (f" ({self.state.message})"
                                            if self.state.message else ""))
        request_id, text = op.session.request(message)
        pending = self._pending[request_id] = _Pending()
        try:
            await self._send(op, text)
            with trio.fail_after(REQUEST_TIMEOUT):
                await pending.done.wait()
        except trio.TooSlowError:
            raise MasterUnreachableError(f"the master did not answer within "
                                         f"{REQUEST_TIMEOUT:g} s") from None
        finally:
            self._pending.pop(request_id, None)
            op.session.abandon(request_id)
        if pending.error is not None:
            raise pending.error
        if pending.reply is None:
            raise ProtocolError(f"the master gave no answer to {type(message).__name__}")
        return as_answer(pending.reply, expect)


async def run_in_daemon_thread(fn: Callable[[], M]) -> M:
    """Run blocking ``fn`` in a daemon thread (quitting never waits for it) and await its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[M] = loop.create_future()

    def settle(result: M | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        result: M | None = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 (handed to the awaiting task)
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is gone: nobody waits any more
            pass

    threading.Thread(target=target, name="mlitb-console-io", daemon=True).start()
    return await future


class LiveBackend:
    """A real master at ``url`` (``ws://`` or ``wss://``), with an optional operator token."""

    def __init__(self, url: str, token: str | None = None, *, interval: float = 1.0,
                 first_backoff: float = BACKOFF_FIRST, cafile: str | None = None) -> None:
        self.url = check_master_url(url)
        self.token = token or None
        self.cafile = cafile  # a CA (PEM) for wss:// and https:// (else MLITB_CAFILE)
        self.interval = interval
        self.first_backoff = first_backoff
        self._guest = TrioGuest()
        self._link: MasterLink | None = None

    @property
    def state(self) -> LinkState:
        return self._link.state if self._link is not None else LinkState("connecting", self.url)

    def start(self, app: App[Any]) -> None:
        self._link = MasterLink(self.url, self.token, app.post_message, interval=self.interval,
                                first_backoff=self.first_backoff, cafile=self.cafile)
        def crash(error: BaseException) -> None:
            # A bug on the trio side ends the app with its traceback, as a bug in a handler would.
            app._handle_exception(error if isinstance(error, Exception)
                                  else RuntimeError(f"the trio side ended: {error!r}"))

        self._guest.on_crash = crash
        self._guest.start(self._link.run)

    async def stop(self) -> None:
        await self._guest.stop()

    async def request(self, message: ClientMessage, expect: type[M]) -> M:
        link = self._link
        if link is None or not self._guest.running:
            raise MasterUnreachableError("the console is not connected to a master")
        await self._guest.wait_started()
        future: asyncio.Future[M] = asyncio.get_running_loop().create_future()

        async def run() -> None:
            try:
                reply = await link.request(message, expect)
            except trio.Cancelled:
                if not future.done():
                    future.set_exception(MasterUnreachableError("the console is closing"))
                raise
            except MlitbError as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(reply)

        self._guest.start_soon(run)
        return await future

    async def upload(self, project: str, archive: Path, split: Split,
                     progress: Progress) -> dict[str, Any]:
        from mlitb.dataserver import DataClient, InputShape

        projects = (await self.request(ListProjects(request_id="-"), ProjectList)).projects
        found = next((p for p in projects if p.name == project), None)
        if found is None:
            raise MlitbError(f"no project named {project!r} on the master")
        data_url = self.state.data_url
        if data_url is None:
            raise MlitbError("the master announces no data server to upload to: it runs with "
                             "--no-data-server and none has registered yet (start one with "
                             f"`mlitb data-server --master {self.url}`)")
        channels, height, width = found.input_shape
        shape = InputShape(width=width, height=height, channels=channels)
        client = DataClient(data_url, token=self.token, cafile=self.cafile)

        def send() -> dict[str, Any]:
            return client.upload(project, archive, split=split, shape=shape,
                                 progress=progress)

        try:
            return await run_in_daemon_thread(send)
        except Exception as exc:  # noqa: BLE001 (the CLI's words for each failure)
            raise upload_failure(exc, archive, data_url) from None
