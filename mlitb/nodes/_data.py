"""Where a worker's data comes from: the data server over HTTP, behind a small seam for tests.

A ``DataSource`` is blocking (the worker calls it in ``trio.to_thread``): ``fetch(ids)`` returns one
validated DATA_BATCH. ``HttpDataSource`` uses the data server's own client
(``mlitb.dataserver.DataClient``: stdlib ``http.client``, one connection per request).
"""

from __future__ import annotations

import http.client
import ipaddress
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from mlitb.dataserver import DataClient, DataServerError
from mlitb.errors import MlitbError
from mlitb.protocol import MAX_IDS_PER_MESSAGE, DataBatchFrame
from mlitb.training import IdArray, Shape

DEFAULT_REQUEST_BYTES = 4 << 20
"""Aim for batches of about this many bytes: big enough to be fast, small enough that the cache
(and the master's view of it) fills in visible steps."""


class DataError(MlitbError):
    """A batch of data could not be fetched or was malformed. ``permanent``: retrying the same ids
    will not help (the data server does not know them)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class DataSource(Protocol):
    def max_batch_ids(self) -> int:
        """How many ids one ``fetch`` may name."""
        ...

    def fetch(self, ids: IdArray) -> DataBatchFrame:
        """The vectors of ``ids`` (blocking). Raises ``DataError``."""
        ...


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def reachable_data_url(data_url: str, master_url: str) -> str:
    """The data server's URL as this node can reach it.

    A master on another machine that announces ``http://127.0.0.1:8001`` (or ``0.0.0.0``) means
    its own host: use the host this node reached the master at, with the data server's port."""
    data, master = urlsplit(data_url), urlsplit(master_url)
    data_host, master_host = data.hostname or "", master.hostname or ""
    if not _is_loopback(data_host) or _is_loopback(master_host):
        return data_url
    host = f"[{master_host}]" if ":" in master_host else master_host
    netloc = host if data.port is None else f"{host}:{data.port}"
    return urlunsplit((data.scheme, netloc, data.path, data.query, data.fragment))


class HttpDataSource:
    """Batches of one project from the data server at ``url``."""

    def __init__(self, url: str, project: str, shape: Shape, *,
                 request_bytes: int = DEFAULT_REQUEST_BYTES, timeout: float = 60.0,
                 cafile: str | None = None, token: str | None = None) -> None:
        self.url, self.project, self.shape = url, project, shape
        # ``token``: the project's join token (a join-token project's data is private).
        self.client = DataClient(url, timeout=timeout, cafile=cafile, token=token)
        vector = int(np.prod(shape)) + 8
        self._wanted = max(16, min(MAX_IDS_PER_MESSAGE, request_bytes // vector))
        self._limit: int | None = None

    def max_batch_ids(self) -> int:
        if self._limit is None:
            limit = self._wanted
            try:
                server_limit = self.client.info(self.project).get("max_batch_ids")
            except (MlitbError, OSError, http.client.HTTPException, ValueError):
                server_limit = None  # fetch will report the real problem
            if isinstance(server_limit, int) and server_limit >= 1:
                limit = min(limit, server_limit)
            self._limit = limit
        return self._limit

    def fetch(self, ids: IdArray) -> DataBatchFrame:
        try:
            frame = self.client.batch(self.project, ids, shape=self.shape)
        except DataServerError as exc:
            raise DataError(f"data server {self.url}: {exc}",
                            permanent=exc.status == 404) from None
        except (MlitbError, ValueError) as exc:
            raise DataError(f"data server {self.url}: bad batch: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise DataError(f"data server {self.url}: {exc or type(exc).__name__}") from None
        if frame.ids.size != ids.size or not np.array_equal(frame.ids, ids):
            raise DataError(f"data server {self.url}: asked for {ids.size} ids, the batch holds "
                            f"{frame.ids.size} different ones")
        return frame


class FailoverDataSource:
    """Batches from one of several data servers that share one store (the master's announced
    list, this worker's first): it keeps to the one that answers and moves on to the next when
    one cannot be reached. A permanent error (the ids are unknown) is the same at every server
    of one store, so it is raised at once. ``update`` replaces the list (the master's
    ``data_servers`` message); it may be called while a fetch runs in another thread."""

    def __init__(self, urls: Sequence[str], make: Callable[[str], DataSource]) -> None:
        self._make = make
        self._sources: tuple[tuple[str, DataSource], ...] = ()
        self._current = 0
        self.update(urls)

    def update(self, urls: Sequence[str]) -> None:
        known = dict(self._sources)
        # One tuple, swapped in whole: a fetch in another thread sees the old list or the new.
        self._sources = tuple((url, known.get(url) or self._make(url)) for url in urls)
        self._current = 0

    @property
    def urls(self) -> list[str]:
        return [url for url, _ in self._sources]

    @property
    def url(self) -> str | None:
        """The data server in use (None: the master announces none)."""
        sources = self._sources
        return sources[self._current % len(sources)][0] if sources else None

    def max_batch_ids(self) -> int:
        sources = self._sources
        if not sources:
            return MAX_IDS_PER_MESSAGE  # nothing can be fetched; fetch says why
        return sources[self._current % len(sources)][1].max_batch_ids()

    def fetch(self, ids: IdArray) -> DataBatchFrame:
        sources, start = self._sources, self._current
        if not sources:
            raise DataError("the master announces no data server (yet)")
        error: DataError | None = None
        for k in range(len(sources)):
            index = (start + k) % len(sources)
            try:
                frame = sources[index][1].fetch(ids)
            except DataError as exc:
                if exc.permanent:
                    raise
                error = exc
                continue
            if sources is self._sources:
                self._current = index  # keep to the one that answered
            return frame
        assert error is not None
        raise error
