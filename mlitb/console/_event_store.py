"""Every event the master reported since the console connected, numbered, bounded.

After a reconnect the master sends the events it still holds again; those already stored are
skipped (an event is its time, kind, message, project and worker: equal means the same).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from mlitb.protocol import Event

MAX_EVENTS = 5_000


class EventStore:
    """Events in arrival order with a running number, so views fetch only what is new."""

    def __init__(self, maxlen: int = MAX_EVENTS) -> None:
        self._events: deque[tuple[int, Event]] = deque()
        self._known: set[Event] = set()
        self.maxlen = maxlen
        self.last = 0
        """Number of the newest event (0: none yet)."""

    def extend(self, events: Iterable[Event]) -> int:
        """Store the events not stored yet; returns how many were new."""
        added = 0
        for event in events:
            if event in self._known:
                continue
            self.last += 1
            added += 1
            self._events.append((self.last, event))
            self._known.add(event)
            if len(self._events) > self.maxlen:
                self._known.discard(self._events.popleft()[1])
        return added

    def since(self, number: int, project: str | None = None) -> list[Event]:
        """Events after ``number``; with ``project``: only that project's and global ones."""
        return [e for n, e in self._events if n > number
                and (project is None or e.project in (None, project))]

    def __len__(self) -> int:
        return len(self._events)
