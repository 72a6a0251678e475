"""Caps on the master's connections: in total and per remote address (``mlitb._connections``).

Every TCP connection to the master port counts from its accept until it is closed, upgraded to
a WebSocket or not, hello said or not: ``Master.serve`` listens through ``CappedListener``.
Over a cap, a connection is closed at once, or (while few are being refused) let through for
``ConnectionHub.handle`` to close it with ``CloseCode.TOO_MANY_CONNECTIONS`` after the upgrade, a
reason a browser can read; clients reconnect with backoff, as after any close that is not
final.

The defaults must never bother a real deployment: a class of 200 browser tabs behind one NAT
address, each tab with its page connection and a trainer per core (2 + 8), makes 2,000
connections from one address, so the per-address cap is 4,096 (room for reconnects that
overlap the connections they replace). The total bounds what strangers can hold open (every
connection is a file descriptor and a few tens of KiB; before its hello at most 64 KiB
buffered): 16,384.
"""

from __future__ import annotations

from typing import Final

from trio_websocket import Endpoint

from .._addresses import address_key as _key
from .._connections import (
    DEFAULT_CONNECTION_LIMITS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    FD_RESERVE,
    REFUSALS_AT_ONCE,
    ConnectionCaps,
    ConnectionLimits,
)
from .._connections import fit_to_fd_limit as _fit

__all__ = ["DEFAULT_CONNECTION_LIMITS", "DEFAULT_MAX_CONNECTIONS",
           "DEFAULT_MAX_CONNECTIONS_PER_ADDRESS", "FDS_PER_CONNECTION", "FD_RESERVE",
           "REFUSALS_AT_ONCE", "ConnectionCaps", "ConnectionLimits", "address_key",
           "fit_to_fd_limit"]

FDS_PER_CONNECTION: Final = 2
"""Every worker has a WebSocket to the master and an HTTP connection to the embedded data
server (its batches): one connection the master admits costs the process about two
descriptors."""


def address_key(remote: Endpoint | str) -> str:
    """What a connection from ``remote`` counts against (``mlitb._addresses.address_key``)."""
    return _key(str(remote.address) if isinstance(remote, Endpoint) else str(remote))


def fit_to_fd_limit(limits: ConnectionLimits) -> tuple[ConnectionLimits, int]:
    """``mlitb._connections.fit_to_fd_limit`` for the master alone, at two descriptors per
    connection."""
    fitted, soft = _fit(*[limits] * FDS_PER_CONNECTION)
    return fitted[0], soft
