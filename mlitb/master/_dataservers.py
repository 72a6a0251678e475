"""Which data servers the master announces, and to whom first.

The embedded data server (``mlitb master`` without ``--no-data-server``) is fixed; separate ones
(``mlitb data-server``) register over their operator connection and are forgotten when it
closes. Every worker gets all of them, its own first: the list rotated by the worker's rank
(the order in which workers joined), so workers spread round-robin over the data servers, and
each knows where to fall back.

Several data servers are announced only when they serve **one** store: a store of its own (a
directory, identity None) numbers its ids from 0 independently, so ids of two such stores would
collide in one project.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol import MAX_DATA_SERVERS
from ._connection import RequestError


@dataclass(frozen=True)
class DataServerEntry:
    url: str
    store: str | None
    """The shared store's identity, or None for a store only this data server has."""


class DataServerTable:
    """The data servers a master announces: a fixed one (``fixed``) and registered ones."""

    def __init__(self) -> None:
        self.fixed: DataServerEntry | None = None
        self._registered: dict[int, DataServerEntry] = {}  # by the connection's worker id
        self._ranks: dict[int, int] = {}  # worker id -> the how-manieth worker it was
        self._next_rank = 0

    def set_fixed(self, url: str | None, store: str | None = None) -> None:
        """The embedded data server (None: the master has none)."""
        self.fixed = None if url is None else DataServerEntry(url, store)

    def entries(self) -> list[DataServerEntry]:
        fixed = [self.fixed] if self.fixed is not None else []
        return fixed + list(self._registered.values())

    def register(self, key: int, url: str, store: str | None) -> None:
        """Add a data server (``key``: its connection's id). Raises ``RequestError`` if its
        store is not the one the others serve, or the list is full."""
        others = [e for k, e in ((None, self.fixed), *self._registered.items())
                  if e is not None and k != key]
        if any(e.url == url for e in others):
            raise RequestError("invalid_value", f"register_data_server.url: a data server at "
                               f"{url} is registered already")
        if others and (store is None or any(e.store != store for e in others)):
            mine = "a store of its own" if store is None else f"store {store}"
            theirs = others[0].store or "a store of its own"
            raise RequestError("invalid_value", "register_data_server.store: this data server "
                               f"serves {mine}, the master announces {others[0].url} serving "
                               f"{theirs}; several data servers must share one store "
                               "(--store redis://HOST:PORT/DB)")
        if len(others) >= MAX_DATA_SERVERS:
            raise RequestError("invalid_value", f"register_data_server: the master announces "
                               f"{MAX_DATA_SERVERS} data servers already")
        self._registered[key] = DataServerEntry(url, store)

    def join(self, worker_id: int) -> None:
        """A worker (trainer, tracker, stats) joined: it takes the next turn of the spread."""
        self._ranks[worker_id] = self._next_rank
        self._next_rank += 1

    def forget(self, key: int) -> bool:
        """Connection ``key`` closed: drop its rank, and its data server if it registered
        one; whether it had."""
        self._ranks.pop(key, None)
        return self._registered.pop(key, None) is not None

    def urls_for(self, worker_id: int) -> tuple[str, ...]:
        """Every announced URL, rotated by the worker's rank (workers that joined one after
        the other start at different data servers; one worker always gets the same order)."""
        urls = [e.url for e in self.entries()]
        if not urls:
            return ()
        k = self._ranks.get(worker_id, worker_id) % len(urls)
        return tuple(urls[k:] + urls[:k])
