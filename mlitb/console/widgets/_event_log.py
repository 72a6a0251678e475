"""A scrolling log of the master's events: joins, losses, re-allocations, errors."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import RichLog

from mlitb.protocol import Event

from .._display import clock

KIND_STYLES = {
    "created": "green", "deleted": "red", "paused": "yellow", "resumed": "green",
    "configured": "magenta", "joined": "cyan", "left": "dim", "lost": "bold red",
    "removed": "yellow", "reallocated": "blue", "data": "green", "error": "bold red",
}


def event_line(event: Event) -> Text:
    return Text.assemble((clock(event.time), "dim"), " ",
                         (f"{event.kind:<11}", KIND_STYLES.get(event.kind, "")), " ",
                         event.message)


class EventLog(RichLog):
    """``add(events)`` appends lines; the newest stays in view."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, max_lines=2_000, wrap=True, markup=False,
                         min_width=20,
                         auto_scroll=True)
        self.count = 0

    def add(self, events: Iterable[Event]) -> None:
        for event in events:
            self.write(event_line(event))
            self.count += 1
