"""Caps on the TCP connections a server holds at once, in total and per remote address, for the
master's WebSocket port and the data server's HTTP port alike.

A connection counts from the moment it is accepted until its socket is closed, whatever it
sends (nothing, half an HTTP request, a finished WebSocket upgrade): the caps bound what
strangers can hold open, so they must count what strangers can hold. ``CappedListener`` wraps a
``trio.SocketListener`` and hands out ordinary ``trio.SocketStream`` objects (wrapped in TLS when
asked) whose socket is a ``_CountedSocket``: trio documents ``SocketType`` as the base of custom
socket classes (``trio.socket.set_custom_socket_factory``), so the count is released by the
socket's own ``close`` however the stream is closed, and trio-websocket and hypercorn see the
stream types they expect (their code checks ``isinstance(stream, trio.SocketStream)`` and reads
``stream.socket``).

Over a cap, a connection is either closed at once or, while fewer than ``REFUSALS_AT_ONCE``
such connections are being answered, let through marked as refused (``refusal``) so that the
server can say why in a way a client can read: the master closes it with 4008 after the
upgrade, the data server answers 503 with ``Retry-After``. A refused connection is closed
``REFUSAL_TIMEOUT`` after its accept whatever it does (one that never sends its request holds
nothing longer). The bound and the deadline keep a flood of refused connections from holding
more than ``REFUSALS_AT_ONCE`` descriptors beyond the caps, for more than that long.
"""

from __future__ import annotations

import ipaddress
import logging
import resource
import socket as _stdlib_socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Final

import trio

from ._addresses import address_key

log = logging.getLogger("mlitb.connections")

DEFAULT_MAX_CONNECTIONS: Final = 16_384
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: Final = 4_096
REFUSALS_AT_ONCE: Final = 64
"""Connections over a cap that are answered (4008, or 503) at once; the rest are closed as soon
as they are accepted."""
REFUSAL_TIMEOUT: Final = 2.0
"""Seconds a connection let through over a cap has to send its request and read the refusal."""
FD_RESERVE: Final = 256
"""File descriptors kept free beside the connections: listening sockets, closures being saved,
uploads being spooled, connections over a cap being answered."""


@dataclass(frozen=True)
class ConnectionLimits:
    """How many TCP connections a server holds at once: ``max_connections`` in total,
    ``max_per_address`` from one remote address (an IPv6 address counts by its /64, which one
    host usually holds whole)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_per_address"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ConnectionLimits.{name} must be an integer >= 1, got "
                                 f"{value!r}")


DEFAULT_CONNECTION_LIMITS: Final = ConnectionLimits()

Peer = tuple[str, int]
"""A connection's remote (address, port): unique among the connections open on one port."""


def _peer(address: object, port: int) -> Peer:
    """One spelling for an address, whether it comes from ``getpeername`` or as an
    ``ipaddress`` object (``::ffff:127.0.0.1`` prints as ``::ffff:7f00:1``)."""
    try:
        return str(ipaddress.ip_address(str(address))), int(port)
    except ValueError:
        return str(address), int(port)


class ConnectionCaps:
    """The connections open now, per address key; ``admit`` refuses what would exceed the
    limits. ``server`` names the server in the refusals' reasons."""

    def __init__(self, limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS, *,
                 server: str = "the server") -> None:
        if not isinstance(limits, ConnectionLimits):
            raise TypeError(f"limits must be ConnectionLimits, got {type(limits).__name__}")
        self.limits = limits
        self.server = server
        self.total = 0
        self.per_address: Counter[str] = Counter()
        self.refused = 0
        self.refusals: dict[Peer, str] = {}  # over a cap, let through to be told why

    def admit(self, key: str) -> str | None:
        """Count a new connection from ``key`` and return None, or return why it is refused
        (at most 123 bytes: it goes into a WebSocket close frame) and count nothing."""
        if self.total >= self.limits.max_connections:
            self.refused += 1
            return (f"{self.server} serves {self.limits.max_connections} connections at most; "
                    "try again later")
        if self.per_address[key] >= self.limits.max_per_address:
            self.refused += 1
            return (f"at most {self.limits.max_per_address} connections per address; "
                    f"{key[:45]} has that many")
        self.total += 1
        self.per_address[key] += 1
        return None

    def release(self, key: str) -> None:
        """A connection ``admit`` counted has ended."""
        self.total -= 1
        self.per_address[key] -= 1
        if self.per_address[key] <= 0:
            del self.per_address[key]

    def end_refusal(self, peer: Peer) -> None:
        """A connection let through over a cap has ended."""
        self.refusals.pop(peer, None)

    def refusal_of(self, stream: trio.abc.Stream) -> str | None:
        """``refusal`` for a stream a ``CappedListener`` handed out."""
        transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        sock = transport.socket if isinstance(transport, trio.SocketStream) else None
        return sock.refusal if isinstance(sock, _CountedSocket) else None

    def refusal(self, address: object, port: int) -> str | None:
        """Why the open connection from (``address``, ``port``) is refused (it was over a cap
        when accepted), or None: it counts and is served."""
        return self.refusals.get(_peer(address, port))


class _CountedSocket(trio.socket.SocketType):
    """A connected trio socket whose ``close`` calls ``on_close`` once (the count's release).

    Only what ``trio.SocketStream``, ``trio.SSLStream``, trio-websocket and hypercorn use of a
    connected socket is passed on."""

    def __init__(self, sock: trio.socket.SocketType, on_close: Callable[[], None],
                 refusal: str | None = None) -> None:
        super().__init__()
        self._sock = sock
        self._on_close: Callable[[], None] | None = on_close
        self.refusal = refusal  # why it is refused, when it came over a cap
        self.closed = trio.Event()

    def close(self) -> None:
        self._sock.close()  # wakes any task waiting on it (trio's close notifies them)
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
        self.closed.set()

    def fileno(self) -> int:
        return self._sock.fileno()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        if buflen is None:
            return self._sock.getsockopt(level, optname)
        return self._sock.getsockopt(level, optname, buflen)

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        if optlen is None:
            self._sock.setsockopt(level, optname, value)
        else:
            self._sock.setsockopt(level, optname, None, optlen)

    @property
    def family(self) -> _stdlib_socket.AddressFamily:
        return self._sock.family

    @property
    def type(self) -> _stdlib_socket.SocketKind:
        return self._sock.type

    @property
    def proto(self) -> int:
        return self._sock.proto

    @property
    def did_shutdown_SHUT_WR(self) -> bool:  # noqa: N802 (trio's name)
        return self._sock.did_shutdown_SHUT_WR

    def shutdown(self, flag: int) -> None:
        self._sock.shutdown(flag)

    def is_readable(self) -> bool:
        return self._sock.is_readable()

    async def wait_writable(self) -> None:
        await self._sock.wait_writable()

    def recv(self, buflen: int, flags: int = 0, /) -> Awaitable[bytes]:
        return self._sock.recv(buflen, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> Awaitable[int]:
        return self._sock.recv_into(buffer, nbytes, flags)

    def send(self, data: Any, flags: int = 0, /) -> Awaitable[int]:
        return self._sock.send(data, flags)

    def __repr__(self) -> str:
        return f"<counted {self._sock!r}>"


class CappedListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts from ``inner`` and counts every connection against ``caps`` until it is closed;
    with ``ssl_context``, hands out TLS streams over the counted ones (the handshake happens at
    the first read or write, after the count). ``nursery`` runs the deadlines of refused
    connections."""

    def __init__(self, inner: trio.SocketListener, caps: ConnectionCaps, nursery: trio.Nursery,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.inner = inner
        self.caps = caps
        self.nursery = nursery
        self.ssl_context = ssl_context

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.inner.socket.getsockname()[1])

    async def accept(self) -> trio.abc.Stream:
        while True:
            stream = await self.inner.accept()
            sock = stream.socket
            try:
                address, port = sock.getpeername()[:2]
            except OSError:  # gone before it was looked at
                sock.close()
                continue
            peer = _peer(address, port)
            key = address_key(str(address))
            reason = self.caps.admit(key)
            if reason is not None and self.caps.refused % 1000 == 1:  # a flood: 1 line per 1,000
                log.warning("%s refused a connection from %s: %s (%d refused so far)",
                            self.caps.server, key, reason, self.caps.refused)
            if reason is None:
                counted = _CountedSocket(sock, partial(self.caps.release, key))
            elif len(self.caps.refusals) < REFUSALS_AT_ONCE:
                self.caps.refusals[peer] = reason
                counted = _CountedSocket(sock, partial(self.caps.end_refusal, peer), reason)
                self.nursery.start_soon(_close_after, counted, REFUSAL_TIMEOUT)
            else:
                sock.close()  # a flood over the cap costs nothing more than its accept
                await trio.lowlevel.checkpoint()
                continue
            plain = trio.SocketStream(counted)
            if self.ssl_context is None:
                return plain
            return trio.SSLStream(plain, self.ssl_context, server_side=True,
                                  https_compatible=True)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _close_after(sock: _CountedSocket, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await sock.closed.wait()
    sock.close()


async def open_capped_listeners(port: int, caps: ConnectionCaps, nursery: trio.Nursery, *,
                                host: str | None, ssl_context: ssl.SSLContext | None = None
                                ) -> list[CappedListener]:
    """``trio.open_tcp_listeners(port, host=host)`` (``""`` or None: every interface), each
    counting against ``caps`` (``CappedListener``)."""
    return [CappedListener(listener, caps, nursery, ssl_context)
            for listener in await trio.open_tcp_listeners(port, host=host or None)]


def fit_to_fd_limit(*limits: ConnectionLimits) -> tuple[tuple[ConnectionLimits, ...], int]:
    """Raise this process's soft file-descriptor limit as far as the servers' ``limits`` need
    together (a descriptor per connection, ``FD_RESERVE`` more; never past the hard limit).
    Returns each of ``limits`` as it fits (when the hard limit is too low, every
    ``max_connections`` is lowered in proportion, so an over-cap client is refused instead of
    the process running out of descriptors for everything else) and the soft limit now in
    force. For a server's CLI: it changes the whole process."""
    wanted = sum(limit.max_connections for limit in limits) + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            soft = new_soft
        except (ValueError, OSError):  # some sandboxes refuse; keep what there is
            pass
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return limits, soft
    room = max(0, soft - FD_RESERVE)
    fitted = []
    for limit in limits:
        share = max(1, room * limit.max_connections // (wanted - FD_RESERVE))
        fitted.append(replace(limit, max_connections=share,
                              max_per_address=min(limit.max_per_address, share)))
    return tuple(fitted), soft
