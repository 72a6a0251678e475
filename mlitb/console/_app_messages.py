"""Messages the console's parts send each other, and the connection state they report.

The trio side (``_link``) posts ``LinkChanged`` and ``StatusReceived`` to the app; widgets post
``ProjectChosen`` and ``UploadProgress`` to their screens. Every message is a small dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from textual.message import Message

from mlitb.protocol import Status

Phase = Literal["connecting", "connected", "lost", "unreachable", "refused", "closed"]


@dataclass(frozen=True)
class LinkState:
    """Where the console stands with its master.

    ``connecting``: first attempt; ``connected``: subscribed to status; ``lost``: was connected,
    retrying; ``unreachable``: never connected yet, retrying; ``refused``: the master refused the
    operator token (no retry: that would not fix it); ``closed``: the console is shutting down.
    """

    phase: Phase
    url: str
    message: str = ""
    authorized: bool = False
    attempt: int = 0
    retry_in: float | None = None
    data_url: str | None = None

    @property
    def online(self) -> bool:
        return self.phase == "connected"


class LinkChanged(Message):
    """The connection to the master changed state."""

    def __init__(self, state: LinkState) -> None:
        super().__init__()
        self.state = state


class StatusReceived(Message):
    """A status snapshot arrived from the master (not yet shown: the app throttles redraws)."""

    def __init__(self, status: Status) -> None:
        super().__init__()
        self.status = status


class ProjectChosen(Message):
    """The operator picked a project (Enter on the projects table)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class UploadProgress(Message):
    """Bytes of a dataset upload sent so far (posted from the upload's thread)."""

    def __init__(self, sent: int, total: int) -> None:
        super().__init__()
        self.sent = sent
        self.total = total
