"""Every event the master reported since the console connected, numbered, bounded."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from mlitb.protocol import Event

MAX_EVENTS = 5_000


class EventStore:
    """Events in arrival order with a running number, so views fetch only what is new."""

    def __init__(self, maxlen: int = MAX_EVENTS) -> None:
        self._events: deque[tuple[int, Event]] = deque(maxlen=maxlen)
        self.last = 0
        """Number of the newest event (0: none yet)."""

    def extend(self, events: Iterable[Event]) -> None:
        for event in events:
            self.last += 1
            self._events.append((self.last, event))

    def since(self, number: int, project: str | None = None) -> list[Event]:
        """Events after ``number``; with ``project``: only that project's and global ones."""
        return [e for n, e in self._events if n > number
                and (project is None or e.project in (None, project))]

    def __len__(self) -> int:
        return len(self._events)
