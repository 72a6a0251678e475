"""How many uploads the data server holds at once, in total and per client address.

An upload holds a spooled file (up to the archive limit) from its first body byte until it is
answered, and waits for the one decode at a time; without a cap, token holders (a contributor
link can be shared widely) could fill the disk by starting uploads faster than they are
decoded. Over the cap an upload is answered before its body is read: 429 when its address has
its share, 503 when the server is full, both with ``Retry-After``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from mlitb.errors import MlitbError

RETRY_AFTER = 5
"""Seconds a refused client is told to wait (``Retry-After``)."""


class BusyError(MlitbError):
    """Too many uploads pending: answered ``status`` (429 or 503) with ``Retry-After``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class PendingUploads:
    """The uploads held now, per address key."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total, self.max_per_address = max_total, max_per_address
        self.total = 0
        self.per_address: Counter[str] = Counter()

    @contextmanager
    def slot(self, key: str, what: str = "upload") -> Iterator[None]:
        """Hold one place for an upload from ``key`` while the block runs; ``BusyError``
        when there is none."""
        if self.per_address[key] >= self.max_per_address:
            n = self.max_per_address
            raise BusyError(f"{n} upload{'s' if n > 1 else ''} from {key} {'are' if n > 1 else 'is'} "
                            f"being received or decoded already (at most {n} per address); "
                            f"send this {what} once answered (retry in {RETRY_AFTER} s)", 429)
        if self.total >= self.max_total:
            n = self.max_total
            raise BusyError(f"the data server is receiving or decoding {n} "
                            f"upload{'s' if n > 1 else ''} already (its limit); retry this "
                            f"{what} in {RETRY_AFTER} s", 503)
        self.total += 1
        self.per_address[key] += 1
        try:
            yield
        finally:
            self.total -= 1
            self.per_address[key] -= 1
            if self.per_address[key] <= 0:
                del self.per_address[key]
