"""One client connection as the master sees it, and the error an operator request can earn."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
from trio_websocket import WebSocketConnection

from .._transport import Outbox
from ..errors import MlitbError
from ..protocol import BYE_CLOSE_CODES, Bye, ByeReason, CloseCode, Message, encode_text

OUTBOX_SIZE = 64


class RequestError(MlitbError):
    """An operator request was well-formed but refused; ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Connection:
    """One client: its WebSocket, who it is, and a bounded outbox drained by its sender task."""

    ws: WebSocketConnection
    worker_id: int
    role: str
    client: str
    host: str
    authorized: bool
    project: str | None
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)
    last_heard: float = 0.0
    subscription: tuple[str | None, float] | None = None
    events_seen: int = 0
    close_code: int = CloseCode.NORMAL
    close_reason: str = ""
    peer_close_code: int | None = None  # how the client ended it (1006: it just vanished)

    def __post_init__(self) -> None:
        self.outbox = Outbox(OUTBOX_SIZE)

    def send(self, message: Message | bytes) -> None:
        """Queue without waiting; a client that falls this far behind is dropped."""
        data = message if isinstance(message, bytes) else encode_text(message)
        if not self.outbox.put(data):
            self.drop(CloseCode.INTERNAL_ERROR, "too slow: outbox full")

    def say_bye(self, reason: ByeReason, message: str = "") -> None:
        self.send(Bye(reason=reason, message=message))
        self.drop(BYE_CLOSE_CODES[reason], message or reason)

    def drop(self, code: int, reason: str) -> None:
        """End this connection: flush what is queued (briefly), then close with ``code``."""
        self.close_code, self.close_reason = code, reason[:120]
        self.outbox.close()
