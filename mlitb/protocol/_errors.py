"""The one error the protocol raises, with what a server needs to answer it."""

from __future__ import annotations

from ..errors import ProtocolError
from ._limits import CloseCode, ErrorCode


class WireError(ProtocolError):
    """A message or binary frame broke the protocol; raised by every encode and decode function.

    The message names the message type (or frame kind) and the field at fault. The attributes say
    how to answer: send ``Error(code=e.code, message=str(e), request_id=e.request_id)``, and close
    the connection with ``e.close_code`` when it is not ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode = "bad_message",
        close_code: CloseCode | None = None,
        message_type: str | None = None,
        field: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.close_code = close_code
        self.message_type = message_type
        self.field = field
        self.request_id = request_id
