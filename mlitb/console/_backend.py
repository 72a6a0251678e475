"""What the console needs from a master, as one small interface.

``LiveBackend`` (``_link``) talks to a real master over trio-websocket in trio guest mode;
``ReplayBackend`` (``_replay``) plays recorded status snapshots and answers requests locally, for
snapshot tests, screenshots and offline demos. The app only ever sees this interface.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from textual.app import App

from mlitb.protocol import ClientMessage, Split

M = TypeVar("M")
Progress = Callable[[int, int], None]
"""Called with (bytes sent, total bytes); may be called from another thread."""


class Backend(Protocol):
    """The console's connection to a master.

    ``start`` begins connecting and from then on posts ``LinkChanged`` and ``StatusReceived`` to
    the app; ``stop`` ends everything and waits until it has ended. Requests raise
    ``RequestRefusedError`` (the master said no), ``MasterUnreachableError`` (no connection) or
    another ``MlitbError``.
    """

    url: str

    def start(self, app: App[Any]) -> None: ...

    async def stop(self) -> None: ...

    async def request(self, message: ClientMessage, expect: type[M]) -> M:
        """Send an operator request (its ``request_id`` is filled in) and return the answer."""
        ...

    async def upload(self, project: str, archive: Path, split: Split,
                     progress: Progress) -> dict[str, Any]:
        """Upload a dataset zip to the project's data server; returns the server's summary."""
        ...
