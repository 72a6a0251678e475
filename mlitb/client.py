"""An operator's connection to a master: requests with answers, and status snapshots.

Used by the CLI (``mlitb project ...``, ``mlitb model download``), the demo and the console::

    async with open_operator("ws://localhost:8000", token) as op:
        projects = await op.list_projects()
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from .errors import AuthError, MlitbError, ProtocolError
from .protocol import (
    MAX_LARGE_TEXT_FRAME,
    Ack,
    Error,
    GetModel,
    Hello,
    ListProjects,
    Message,
    Model,
    ProjectList,
    ProjectSummary,
    Status,
    Welcome,
    decode_text,
    encode_text,
)

M = TypeVar("M")
CONNECT_TIMEOUT = 10.0


class MasterUnreachableError(MlitbError):
    """The master could not be reached at the URL given (nothing listens, or not a master)."""


class RequestRefusedError(MlitbError):
    """The master answered a request with an error; ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _describe(exc: ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "no close code"
    return f"code {reason.code}" + (f": {reason.reason}" if reason.reason else "")


def reply_as(reply: Message, expect: type[M]) -> M:
    """The master's answer to a request: ``expect``, or ``RequestRefusedError`` for an error."""
    if isinstance(reply, Error):
        raise RequestRefusedError(reply.code, reply.message)
    if not isinstance(reply, expect):
        raise ProtocolError(f"expected {expect.__name__} from the master, got "
                            f"{type(reply).__name__}")
    return reply


async def close_stream(ws: WebSocketConnection) -> None:
    """trio-websocket 0.12 keeps the TCP stream of an abnormally closed connection open until
    garbage collection: close it now (a master that restarts sees no stale socket)."""
    stream = getattr(ws, "_stream", None)
    if stream is None:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        try:
            await stream.aclose()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def check_master_url(url: str) -> str:
    """Refuse anything but ws:// and wss:// URLs, with a clear message."""
    if not url.startswith(("ws://", "wss://")) or len(url) < 6:
        raise MlitbError(f"the master URL must start with ws:// or wss://, got {url!r}")
    return url


class OperatorClient:
    """One operator session. Requests are answered in order; status snapshots are kept aside."""

    def __init__(self, ws: WebSocketConnection, welcome: Welcome) -> None:
        self.ws = ws
        self.welcome = welcome
        self._ids = itertools.count(1)
        self.statuses: list[Status] = []

    @property
    def authorized(self) -> bool:
        return self.welcome.authorized

    def next_request_id(self) -> str:
        return f"r{next(self._ids)}"

    async def receive(self) -> Message:
        try:
            data = await self.ws.get_message()
        except ConnectionClosed as exc:
            raise MasterUnreachableError(f"the master closed the connection "
                                         f"({_describe(exc)})") from None
        if not isinstance(data, str):
            raise ProtocolError("the master sent a binary frame to an operator")
        return decode_text(data, max_size=MAX_LARGE_TEXT_FRAME)

    async def request(self, message: Any, expect: type[M] = Ack) -> M:  # type: ignore[assignment]
        """Send a request (its request_id is filled in) and wait for its answer."""
        from dataclasses import replace

        message = replace(message, request_id=self.next_request_id())
        await self.ws.send_message(encode_text(message))
        while True:
            reply = await self.receive()
            if isinstance(reply, Status):
                self.statuses.append(reply)
                continue
            if getattr(reply, "request_id", None) != message.request_id:
                continue
            return reply_as(reply, expect)

    async def list_projects(self) -> tuple[ProjectSummary, ...]:
        reply = await self.request(ListProjects(request_id="-"), ProjectList)
        return reply.projects

    async def get_model(self, project: str, format: str = "model") -> dict[str, Any]:
        reply = await self.request(GetModel(request_id="-", project=project,
                                            format=format), Model)  # type: ignore[arg-type]
        return reply.model


@asynccontextmanager
async def open_operator(url: str, token: str | None = None, *,
                        need_token: bool = False) -> AsyncIterator[OperatorClient]:
    """Connect to the master at ``url`` as an operator; raises ``MasterUnreachableError`` or
    ``AuthError`` with a clear message."""
    check_master_url(url)
    connected = False  # errors from the caller's block pass through unchanged
    try:
        async with open_websocket_url(url, max_message_size=MAX_LARGE_TEXT_FRAME,
                                      connect_timeout=CONNECT_TIMEOUT,
                                      disconnect_timeout=2.0) as ws:
            with trio.fail_after(CONNECT_TIMEOUT):
                await ws.send_message(encode_text(Hello(
                    role="operator", client="python", host=socket.gethostname()[:128] or "?",
                    token=token or None)))
                data = await ws.get_message()
                if not isinstance(data, str):
                    raise ProtocolError("the master answered the hello with a binary frame")
                first = decode_text(data, max_size=MAX_LARGE_TEXT_FRAME)
            if isinstance(first, Error):
                await close_stream(ws)  # the master closes right after its error
                if first.code == "bad_token":
                    raise AuthError("the master refused the operator token (check --token / "
                                    "MLITB_OPERATOR_TOKEN)")
                raise MasterUnreachableError(f"the master refused the connection: "
                                             f"{first.message}")
            if not isinstance(first, Welcome):
                raise ProtocolError(f"expected a welcome, got {type(first).__name__}")
            if need_token and not first.authorized:
                raise AuthError("this action needs the operator token: pass --token or set "
                                "MLITB_OPERATOR_TOKEN")
            connected = True
            yield OperatorClient(ws, first)
    except (OSError, HandshakeError, trio.TooSlowError) as exc:
        if connected:
            raise
        cause = exc.__cause__ or exc
        raise MasterUnreachableError(f"cannot reach the master at {url}: {cause}") from None
    except ConnectionClosed as exc:
        if connected:
            raise
        raise MasterUnreachableError(f"the master at {url} closed the connection "
                                     f"({_describe(exc)})") from None
