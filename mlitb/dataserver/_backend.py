"""What a data server needs of its store: ``DataStore``, and ``open_store`` for a ``--store``.

Two stores implement it: ``Store`` (a directory, the default, one data server's own) and
``RedisStore`` (``redis://HOST:PORT/DB``, shared by every data server pointed at it). Every
method may block (disk or network): the data server calls them in ``trio.to_thread``; all are
safe to call from several threads at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from ._errors import StoreError
from ._ingest import Decoded, InputShape
from ._store import DatasetInfo, Registration, Split, Store


class DataStore(Protocol):
    """Datasets by project: ids from 0 in upload order, each upload committed whole or not at
    all, deletes (docs/dataserver.md)."""

    tmp_dir: Path
    """Where the data server spools upload bodies (local disk)."""
    identity: str | None
    """Names the store when data servers share it (``register_data_server.store``); None
    for a store only one data server has."""

    def projects(self) -> list[str]:
        """The projects that hold data, sorted."""
        ...

    def shape(self, project: str) -> InputShape | None:
        """The project's input shape, or None before its first upload."""
        ...

    def get(self, project: str, ids: Sequence[int] | npt.NDArray[np.integer]
            ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint32]]:
        """Images ``(n, channels, height, width)`` and labels of ``ids``, in their order."""
        ...

    def ids(self, project: str, split: Split | None = None) -> npt.NDArray[np.int64]:
        ...

    def info(self, project: str) -> DatasetInfo:
        ...

    def manifest(self, project: str) -> dict[str, Any]:
        """``info`` plus, per id, its label index, split and sha256 (a closure's manifest)."""
        ...

    def labels_with(self, project: str, names: Sequence[str]) -> tuple[str, ...]:
        ...

    def generation(self, project: str) -> int:
        """How many times the project was deleted (``add`` refuses an older generation)."""
        ...

    def add(self, project: str, decoded: Decoded, split: Split = "train", *,
            labels: Sequence[str] | None = None, generation: int | None = None
            ) -> Registration:
        ...

    def delete(self, project: str) -> None:
        ...


def check_store_url(url: str) -> tuple[str, int, int]:
    """``redis://HOST[:PORT][/DB]`` -> (host, port, db); ``StoreError`` (one line) otherwise.
    A password may come as ``redis://:PASSWORD@HOST:PORT/DB``; it is never shown."""
    expected = "expected redis://HOST:PORT/DB"
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError as exc:
        raise StoreError(f"--store {redact(url)}: {exc}; {expected}") from None
    if parts.scheme != "redis":
        raise StoreError(f"--store {redact(url)}: only redis:// URLs name a shared store "
                         f"(a directory store is --data-dir); {expected}")
    if not parts.hostname:
        raise StoreError(f"--store {redact(url)}: no host; {expected}")
    if parts.query or parts.fragment:
        raise StoreError(f"--store {redact(url)}: no ?query or #fragment; {expected}")
    db = parts.path.lstrip("/") or "0"
    if not db.isdecimal() or "/" in parts.path.strip("/") or int(db) > 1_000_000:
        raise StoreError(f"--store {redact(url)}: the database must be a number, got "
                         f"{parts.path!r:.40}; {expected}")
    return parts.hostname, port, int(db)


def redact(url: str) -> str:
    """``url`` without its password."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url[:200]
    netloc = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username or ''}:***@{netloc}").geturl()[:200]


def open_store(directory: Path, url: str | None = None, *, tmp_dir: Path | None = None
               ) -> DataStore:
    """The store a data server serves: ``url`` (``redis://...``) when given, else the
    directory store under ``directory``. ``tmp_dir``: where a Redis store's data server
    spools uploads (default: the system's temp directory)."""
    if url is None:
        directory.mkdir(parents=True, exist_ok=True)
        return Store(directory)
    check_store_url(url)
    try:
        from ._redis import RedisStore
    except ImportError as exc:
        raise StoreError(f"--store {redact(url)} needs the redis package: pip install "
                         f"'mlitb[redis]' ({exc})") from None
    return RedisStore(url, tmp_dir=tmp_dir)
