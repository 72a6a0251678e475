"""The master's event log: what happened (joined, lost, created, error, ...), for operators.

A bounded deque of protocol ``Event`` records with a running count, so that each status
subscriber can be sent the events it has not seen yet (``since``) even after old ones dropped
out. Times are seconds since the master started serving (the time base of status snapshots).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator

from ..protocol import Event

log = logging.getLogger("mlitb.master")

MAX_EVENTS = 1_000


class EventLog:
    """The last ``MAX_EVENTS`` events; ``clock`` gives the time an event is stamped with."""

    def __init__(self, clock: Callable[[], float], size: int = MAX_EVENTS) -> None:
        self._clock = clock
        self._events: deque[Event] = deque(maxlen=size)
        self.count = 0
        """Events logged since the start (those dropped out of the deque included)."""

    def log(self, kind: str, message: str, project: str | None = None,
            worker_id: int | None = None) -> None:
        self._events.append(Event(time=self._clock(), kind=kind,  # type: ignore[arg-type]
                                  message=message[:2048], project=project, worker_id=worker_id))
        self.count += 1
        log.info("%s: %s", kind, message)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def oldest_kept(self) -> int:
        """The running number of the oldest event still kept (a new subscriber starts there)."""
        return max(0, self.count - len(self._events))

    def since(self, seen: int, most: int) -> list[Event]:
        """The events after the first ``seen`` (at most the last ``most`` of them)."""
        missed = min(self.count - seen, len(self._events), most)
        return list(self._events)[len(self._events) - missed:] if missed > 0 else []
