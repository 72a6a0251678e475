"""Caps on the master's WebSocket connections: in total and per remote address.

Pure bookkeeping (no sockets): ``Master._handle`` asks ``ConnectionCaps.admit`` before it serves
a connection and calls ``release`` when the connection ends. A refused connection is closed
with ``CloseCode.TOO_MANY_CONNECTIONS``; clients reconnect with backoff, as after any close
that is not final.

The defaults must never bother a real deployment: a class of 200 browser tabs behind one NAT
address, each tab with its page connection and a trainer per core (2 + 8), makes 2,000
connections from one address, so the per-address cap is 4,096 (room for reconnects that
overlap the connections they replace). The total bounds what strangers can hold open (every
connection is a file descriptor and a few tens of KiB; before its hello at most 64 KiB
buffered): 16,384.
"""

from __future__ import annotations

import resource
from collections import Counter
from dataclasses import dataclass, replace
from typing import Final

from trio_websocket import Endpoint

from .._addresses import address_key as _key

DEFAULT_MAX_CONNECTIONS: Final = 16_384
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: Final = 4_096
FD_RESERVE: Final = 256
"""File descriptors kept free beside the master's connections: listening sockets, closures
being saved, uploads being spooled, the embedded data server's own listening socket."""
FDS_PER_CONNECTION: Final = 2
"""Every worker has a WebSocket to the master and an HTTP connection to the embedded data
server (its batches): one connection the master admits costs the process about two
descriptors."""


@dataclass(frozen=True)
class ConnectionLimits:
    """How many WebSocket connections the master serves at once: ``max_connections`` in
    total, ``max_per_address`` from one remote address (an IPv6 address counts by its /64,
    which one host usually holds whole)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_per_address"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ConnectionLimits.{name} must be an integer >= 1, got "
                                 f"{value!r}")


DEFAULT_CONNECTION_LIMITS: Final = ConnectionLimits()


def address_key(remote: Endpoint | str) -> str:
    """What a connection from ``remote`` counts against (``mlitb._addresses.address_key``)."""
    return _key(str(remote.address) if isinstance(remote, Endpoint) else str(remote))


class ConnectionCaps:
    """The connections open now, per address key; ``admit`` refuses what would exceed the
    limits."""

    def __init__(self, limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS) -> None:
        self.limits = limits
        self.total = 0
        self.per_address: Counter[str] = Counter()
        self.refused = 0

    def admit(self, key: str) -> str | None:
        """Count a new connection from ``key`` and return None, or return why it is refused
        (at most 123 bytes: it goes into the close frame) and count nothing."""
        if self.total >= self.limits.max_connections:
            self.refused += 1
            return (f"the master serves {self.limits.max_connections} connections at most; "
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


def fit_to_fd_limit(limits: ConnectionLimits) -> tuple[ConnectionLimits, int]:
    """Raise this process's soft file-descriptor limit as far as ``limits`` need (never past
    the hard limit); returns the limits that fit (``max_connections`` lowered when the hard
    limit is too low, so an over-cap client hears ``TOO_MANY_CONNECTIONS`` instead of the
    process running out of descriptors for everything else) and the soft limit now in force.
    For ``mlitb master``: it changes the whole process."""
    wanted = FDS_PER_CONNECTION * limits.max_connections + FD_RESERVE
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
    room = max(1, (soft - FD_RESERVE) // FDS_PER_CONNECTION)
    return replace(limits, max_connections=room,
                   max_per_address=min(limits.max_per_address, room)), soft
