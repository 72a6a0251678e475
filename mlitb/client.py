"""An operator's connection to a master: requests with answers, and status snapshots.

Used by the CLI (``mlitb project ...``, ``mlitb model download``), the demo and the console::

    async with open_operator("ws://localhost:8000", token) as op:
        projects = await op.list_projects()
"""

from __future__ import annotations

import itertools
import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, TypeVar

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from . import _websocket
from ._tls import client_context
from .errors import AuthError, MlitbError, ProtocolError, UploadError
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

_websocket.install()  # every frame a client sends is masked (mlitb/_websocket.py)


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


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, its causes and contexts, and the exceptions inside groups, depth first."""
    found: list[BaseException] = []
    stack = [exc]
    while stack:
        current = stack.pop()
        if current in found:
            continue
        found.append(current)
        if isinstance(current, BaseExceptionGroup):
            stack.extend(reversed(current.exceptions))
        for inner in (current.__context__, current.__cause__):
            if inner is not None:
                stack.append(inner)
    return found


TLS_NOTE = ("a master started with --certfile/--keyfile serves wss://, one without them plain "
            "ws://; a self-signed certificate needs its CA in --cafile (or MLITB_CAFILE)")


async def tls_probe(url: str, cafile: str | None = None) -> BaseException | None:
    """After a ``wss://`` connection failed: the TLS handshake alone, to find its real cause
    (trio-websocket reports a failed handshake as a timeout). None if it succeeds or hangs."""
    parts = urlsplit(url)
    try:
        with trio.move_on_after(min(3.0, CONNECT_TIMEOUT)):
            stream = await trio.open_ssl_over_tcp_stream(parts.hostname or "", parts.port or 443,
                                                         https_compatible=True,
                                                         ssl_context=client_context(cafile))
            try:
                await stream.do_handshake()
            finally:
                await trio.aclose_forcefully(stream)
    except (OSError, trio.BrokenResourceError) as exc:
        return exc
    return None


def describe_connect_failure(url: str, exc: BaseException,
                             tls_failure: BaseException | None = None) -> str:
    """Why connecting to the master at ``url`` failed, in one line that says what to check;
    ``tls_failure``: what ``tls_probe`` found."""
    tls = url.startswith("wss://")
    where = f"cannot reach the master at {url}"
    causes = _causes(exc) + (_causes(tls_failure) if tls_failure is not None else [])
    rejected = next((c for c in causes if isinstance(c, ConnectionRejected)), None)
    if rejected is not None:
        return (f"{where}: it answered HTTP {rejected.status_code} instead of a WebSocket "
                f"handshake, so it is a web server but not the master (the data server? the "
                f"master's URL is the ws:// one `mlitb master` prints)")
    tls_error = next((c for c in causes if isinstance(c, ssl.SSLError)), None)
    if tls_error is not None:
        reason = getattr(tls_error, "verify_message", None) or tls_error.reason or tls_error
        if reason == "WRONG_VERSION_NUMBER":  # a plain (ws://, http://) server answered
            reason = "the server does not speak TLS"
        elif getattr(tls_error, "verify_message", None):
            reason = f"certificate verify failed: {reason}"
        return f"{where}: the TLS handshake failed ({reason}); {TLS_NOTE}"
    if any(isinstance(c, ConnectionTimeout | trio.TooSlowError) for c in causes):
        text = f"{where}: no answer within {CONNECT_TIMEOUT:g} s"
        return f"{text}; {TLS_NOTE}" if tls else f"{text} (is it the master's host and port?)"
    refused = next((c for c in causes if isinstance(c, ConnectionRefusedError)), None)
    if refused is not None:
        return f"{where}: nothing listens there (connection refused); is `mlitb master` running?"
    if isinstance(exc, socket.gaierror) or any(isinstance(c, socket.gaierror) for c in causes):
        gai = next(c for c in causes if isinstance(c, socket.gaierror))
        return f"{where}: unknown host ({gai.strerror or gai})"
    for cause in causes:  # the first exception that says something
        text = str(cause.strerror if isinstance(cause, OSError) and cause.strerror else cause)
        if text:
            return f"{where}: {text}"
    return f"{where}: {type(exc).__name__}"


def upload_failure(exc: BaseException, archive: Path, data_url: str) -> BaseException:
    """What went wrong with an upload (``DataClient.upload``), as one ``UploadError`` (the CLI
    and the console say the same); an exception that is none of these is returned as it is."""
    from .dataserver import DataServerError

    if isinstance(exc, MlitbError) and not isinstance(exc, DataServerError):
        return exc
    if isinstance(exc, DataServerError):
        if exc.status == 502:  # stored, but the master did not take the registration
            return UploadError(f"{archive.name} was stored but not registered with the "
                               f"master: {exc.detail}")
        what = f"HTTP {exc.status}" if exc.status else "no answer"
        hint = " (pass the operator token: --token or MLITB_OPERATOR_TOKEN)" \
            if exc.status == 401 else ""
        return UploadError(f"{archive.name} was refused ({what}), nothing was stored: "
                           f"{exc.detail}{hint}")
    if isinstance(exc, OSError):
        if not os.access(archive, os.R_OK):
            return UploadError(f"cannot read {archive}: {exc.strerror or exc}")
        refused = isinstance(exc, ConnectionRefusedError)
        reason = "nothing listens there (connection refused)" if refused else \
            exc.strerror or str(exc) or type(exc).__name__
        return UploadError(f"cannot reach the data server at {data_url}: {reason}; nothing "
                           f"was uploaded (check --data-url, or leave it out to use the one "
                           f"the master announces)")
    return exc


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
                        need_token: bool = False,
                        cafile: str | None = None) -> AsyncIterator[OperatorClient]:
    """Connect to the master at ``url`` as an operator; raises ``MasterUnreachableError`` or
    ``AuthError`` with a clear message. ``wss://`` is verified against ``cafile`` (else
    ``MLITB_CAFILE``, else the system's CAs)."""
    check_master_url(url)
    ssl_context = client_context(cafile) if url.startswith("wss://") else None
    connected = False  # errors from the caller's block pass through unchanged
    try:
        async with open_websocket_url(url, ssl_context=ssl_context,
                                      max_message_size=MAX_LARGE_TEXT_FRAME,
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
        probe = await tls_probe(url, cafile) if url.startswith("wss://") else None
        raise MasterUnreachableError(describe_connect_failure(url, exc, probe)) from None
    except ConnectionClosed as exc:
        if connected:
            raise
        raise MasterUnreachableError(f"the master at {url} closed the connection "
                                     f"({_describe(exc)})") from None
