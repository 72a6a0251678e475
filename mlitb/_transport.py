"""The WebSocket side of a session with the master, shared by every client and the master.

``mlitb.protocol.ClientSession`` says what to send and what arrived means; this module moves
the bytes:

- ``open_master``: a client's connection (TLS for ``wss://``, the connect timeout, a failure
  described in one line that says what to check: ``MasterUnreachableError``), and on the way
  out the TCP stream closed even after an abnormal close (trio-websocket 0.12 leaves it to
  garbage collection).
- ``Outbox``: what one connection sends, in order, written by one sender task; what queued
  meanwhile goes out in one write (``mlitb._websocket.send_messages``).
- ``ping`` and ``keepalive``: ping a peer not heard from lately; return when it does not
  answer.

Reconnect delays are ``mlitb._backoff.Backoff``.
"""

from __future__ import annotations

import math
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from . import _websocket
from ._tls import client_context
from .errors import MasterUnreachableError, MlitbError
from .protocol import MAX_LARGE_TEXT_FRAME

CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
TLS_NOTE = ("a master started with --certfile/--keyfile serves wss://, one without them plain "
            "ws://; a self-signed certificate needs its CA in --cafile (or MLITB_CAFILE)")

_websocket.install()  # every frame a client sends is masked (mlitb/_websocket.py)


def check_master_url(url: str) -> str:
    """Refuse anything but ws:// and wss:// URLs, with a clear message."""
    if not url.startswith(("ws://", "wss://")) or len(url) < 6:
        raise MlitbError(f"the master URL must start with ws:// or wss://, got {url!r}")
    return url


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


@asynccontextmanager
async def open_master(url: str, *, cafile: str | None = None,
                      max_message_size: int = MAX_LARGE_TEXT_FRAME,
                      connect_timeout: float | None = None,
                      close_timeout: float = CLOSE_TIMEOUT,
                      ) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket to the master at ``url``. Connecting fails with ``MasterUnreachableError``
    (the reason in words: nothing listens, not a master, TLS, time out, unknown host); an error
    raised inside the block passes through unchanged. ``wss://`` is verified against ``cafile``
    (else ``MLITB_CAFILE``, else the system's CAs). ``connect_timeout`` None: CONNECT_TIMEOUT."""
    check_master_url(url)
    timeout = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
    ssl_context = client_context(cafile) if url.startswith("wss://") else None
    opened: WebSocketConnection | None = None
    raised: BaseException | None = None
    try:
        async with open_websocket_url(url, ssl_context=ssl_context,
                                      max_message_size=max_message_size,
                                      connect_timeout=timeout,
                                      disconnect_timeout=close_timeout) as ws:
            opened = ws
            try:
                yield ws
            except BaseException as exc:
                raised = exc
                raise
    except DisconnectionTimeout:
        # The peer did not answer our close within close_timeout (a master that vanished):
        # the connection is over all the same. trio-websocket raises this in place of the
        # block's own error, which is the one that says what happened.
        if raised is not None:
            raise raised from None
    except (OSError, HandshakeError, trio.TooSlowError) as exc:
        if opened is not None:
            raise
        probe = await tls_probe(url, cafile) if url.startswith("wss://") else None
        raise MasterUnreachableError(describe_connect_failure(url, exc, probe)) from None
    finally:
        if opened is not None:
            await close_stream(opened)


class Outbox:
    """What one connection sends, in order: ``put`` queues without waiting, ``run`` (the
    connection's one sender task) writes. ``size`` bounds the queue (``put`` is then False
    when it is full); ``close`` lets ``run`` write what is queued and end."""

    def __init__(self, size: float = math.inf) -> None:
        self.size = size
        self._send, self._receive = trio.open_memory_channel[str | bytes](size)

    def put(self, data: str | bytes) -> bool:
        """Queue ``data``; False if the queue is full (True also once closed: the connection
        is ending, and what it would have said no longer matters)."""
        try:
            self._send.send_nowait(data)
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        return True

    def close(self) -> None:
        self._send.close()

    async def run(self, ws: WebSocketConnection) -> None:
        """Write until closed (after writing what is queued); raises ``ConnectionClosed``."""
        limit = 64 if math.isinf(self.size) else int(self.size)
        async for data in self._receive:
            # What queued meanwhile (a round's parameters frame and work order) goes out in
            # the same write.
            batch = [data]
            while len(batch) < limit:
                try:
                    batch.append(self._receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await _websocket.send_messages(ws, batch)


async def ping(ws: WebSocketConnection, timeout: float) -> bool:
    """Ping the peer: True when its pong came within ``timeout`` s. Raises
    ``ConnectionClosed`` when the connection closes meanwhile."""
    with trio.move_on_after(timeout):
        await ws.ping()
        return True
    return False


async def keepalive(ws: WebSocketConnection, *, interval: float, timeout: float,
                    quiet: Callable[[], float], heard: Callable[[], None]) -> None:
    """A client's keepalive: every ``interval`` s, ping a peer that has been ``quiet()`` for at
    least ``interval`` s; ``heard()`` when it answers. Returns when a ping goes unanswered for
    ``timeout`` s; raises ``ConnectionClosed`` when the connection closes meanwhile. (The
    master pings its many clients from one task: ``ConnectionHub.keep_alive``.)"""
    while True:
        await trio.sleep(interval)
        if quiet() < interval:
            continue
        if not await ping(ws, timeout):
            return
        heard()
