"""A client's side of one connection to the master, without I/O (the way h11's ``Connection``
is HTTP without sockets).

Every client of the master — a node's worker, an operator (CLI, console, a data server's
registrar) — speaks the same session: it says hello, waits for the welcome (or an error, after
which the master closes), then exchanges messages; requests carry a request id and their answer
echoes it; the session ends with a close code, and some close codes mean that trying again
cannot help. ``ClientSession`` keeps that state and turns what arrives into events; the caller
does the I/O (``mlitb/_transport.py`` for WebSockets) and decides what to do with each event::

    session = ClientSession(Hello(role="operator", client="python", host="h"))
    await ws.send_message(session.start())
    event = session.receive(await ws.get_message())      # Welcomed, or Refused
    request_id, text = session.request(ListProjects(request_id="-"))
    ...
    closed = session.closed(code, reason)                # Closed: final or not, and why

``mlitb/browser/lib/protocol.js`` keeps the same final close codes (tests/test_protocol_js.py).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, TypeVar, cast

from ..errors import MlitbError, ProtocolError
from ._errors import WireError
from ._limits import MAX_LARGE_TEXT_FRAME, CloseCode
from ._messages import Bye, Error, Hello, Message, Welcome
from ._text import decode_text, encode_text

M = TypeVar("M", bound=Message)
A = TypeVar("A")


class Finality(Enum):
    """Why reconnecting cannot help after a close code (``FINAL_CLOSE_CODES``)."""

    REFUSED = "refused"
    """The hello was refused: another protocol version, no such project, a wrong token."""
    REMOVED = "removed"
    """An operator removed this worker or deleted its project."""
    ERROR = "error"
    """This client broke the protocol; the same client would break it again."""


FINAL_CLOSE_CODES: dict[CloseCode, Finality] = {
    CloseCode.VERSION_MISMATCH: Finality.REFUSED,
    CloseCode.HELLO_REQUIRED: Finality.REFUSED,
    CloseCode.NO_PROJECT: Finality.REFUSED,
    CloseCode.POLICY_VIOLATION: Finality.REFUSED,
    CloseCode.JOIN_REFUSED: Finality.REFUSED,
    CloseCode.REMOVED: Finality.REMOVED,
    CloseCode.PROJECT_DELETED: Finality.REMOVED,
    CloseCode.TOO_MANY_ERRORS: Finality.ERROR,
    CloseCode.PROTOCOL_ERROR: Finality.ERROR,
    CloseCode.UNSUPPORTED_DATA: Finality.ERROR,
    CloseCode.MESSAGE_TOO_BIG: Finality.ERROR,
}
"""The close codes after which a client stops instead of reconnecting. Every other code (a
master shutting down, a lost connection, 4008 over a connection cap, 4006 a missed ping) is
worth another try with backoff."""

_UNSENT_CODES = {1005: "NO_STATUS", 1006: "ABNORMAL_CLOSURE"}
"""Codes a WebSocket library reports but no peer sends (RFC 6455 §7.4.1)."""


def describe_close(code: int | None, reason: str | None = None) -> str:
    """``close code 4002 (NO_PROJECT): no project named 'x'``."""
    if code is None:
        name = "none"
    else:
        try:
            name = CloseCode(code).name
        except ValueError:
            name = _UNSENT_CODES.get(code, "unknown")
    text = f"close code {code} ({name})"
    return f"{text}: {reason}" if reason else text


class SessionError(ProtocolError):
    """The master broke the session (a binary frame before its welcome, a welcome for another
    role, ...); ``final``: whether connecting again could help (None: it could)."""

    def __init__(self, message: str, final: Finality | None = None) -> None:
        super().__init__(message)
        self.final = final


# -- events -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Welcomed:
    """The master accepted the hello."""

    welcome: Welcome


@dataclass(frozen=True)
class Refused:
    """The master answered the hello with an error; it closes the connection next."""

    error: Error


@dataclass(frozen=True)
class Answered:
    """The answer to a request this session sent (an ``Error`` when the master refused it)."""

    request_id: str
    message: Message


@dataclass(frozen=True)
class Pushed:
    """Any other message of the master (a status, a work order, an allocation, a bye, ...)."""

    message: Message


@dataclass(frozen=True)
class FrameArrived:
    """A binary frame (parameters for workers); decoding it needs the project's size, so the
    session hands over the bytes."""

    data: bytes


@dataclass(frozen=True)
class Closed:
    """The connection ended. ``reason`` is the best account of why: the master's error before
    its welcome, else its bye's message, else the close frame's reason."""

    code: int | None
    reason: str | None
    final: Finality | None
    bye: Bye | None
    unanswered: tuple[str, ...]
    """Request ids sent and never answered."""

    @property
    def description(self) -> str:
        text = describe_close(self.code, self.reason)
        if self.bye is not None:
            text = f"{text} (bye: {self.bye.reason})"
        return text


SessionEvent = Welcomed | Refused | Answered | Pushed | FrameArrived


class ClientSession:
    """One connection's protocol state: ``greeting`` until the welcome, then ``open``, then
    ``closed``. Methods return what to send and the events of what arrived; none does I/O."""

    def __init__(self, hello: Hello, *, max_size: int = MAX_LARGE_TEXT_FRAME) -> None:
        self.hello = hello
        self.max_size = max_size
        self.state: Literal["idle", "greeting", "open", "closed"] = "idle"
        self.welcome: Welcome | None = None
        self.refusal: Error | None = None
        self.bye: Bye | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, None] = {}

    @property
    def pending(self) -> tuple[str, ...]:
        """Request ids waiting for their answer, oldest first."""
        return tuple(self._pending)

    def start(self) -> str:
        """The hello to send first."""
        if self.state != "idle":
            raise RuntimeError(f"the session has started already ({self.state})")
        self.state = "greeting"
        return encode_text(self.hello)

    def request(self, message: M) -> tuple[str, str]:
        """``message`` with a fresh request id: (the id, the text to send). Its answer arrives
        as ``Answered`` with the same id."""
        if self.state != "open":
            raise RuntimeError(f"requests need an open session (it is {self.state})")
        request_id = f"r{next(self._ids)}"
        text = encode_text(dataclasses.replace(cast(Any, message), request_id=request_id))
        self._pending[request_id] = None
        return request_id, text

    def abandon(self, request_id: str) -> None:
        """Stop waiting for an answer (a timeout): if it comes later, it is dropped."""
        self._pending.pop(request_id, None)

    def receive(self, data: str | bytes) -> SessionEvent | None:
        """What one frame from the master means; None for an answer nobody waits for any more.
        Raises ``WireError`` for an invalid message (the session stays usable: a caller may
        skip it) and ``SessionError`` when the master broke the session."""
        if self.state not in ("greeting", "open"):
            raise RuntimeError(f"nothing is received in a session that is {self.state}")
        if isinstance(data, bytes | bytearray | memoryview):
            if self.state == "greeting":
                raise SessionError("the master sent a binary frame before its welcome")
            return FrameArrived(bytes(data))
        message = decode_text(data, max_size=self.max_size)
        if self.state == "greeting":
            return self._greeting(message)
        if isinstance(message, Bye):
            self.bye = message
        request_id = getattr(message, "request_id", None)
        if request_id is not None:
            if request_id in self._pending:
                del self._pending[request_id]
                return Answered(request_id, message)
            if not isinstance(message, Error):
                return None  # the answer to an abandoned request
        return Pushed(message)

    def _greeting(self, message: Message) -> Welcomed | Refused:
        if isinstance(message, Error):
            self.refusal = message
            return Refused(message)
        if not isinstance(message, Welcome):
            raise SessionError(f"the master answered the hello with {message.TYPE}")
        hello = self.hello
        if message.role != hello.role or (hello.project is not None and (
                message.project is None or message.project.name != hello.project)):
            project = message.project.name if message.project else None
            raise SessionError(f"the master's welcome does not match the hello (role "
                               f"{message.role}, project {project})", Finality.ERROR)
        self.state = "open"
        self.welcome = message
        return Welcomed(message)

    def closed(self, code: int | None, reason: str | None = None) -> Closed:
        """The connection ended with ``code`` (None: no close frame): the session is over."""
        self.state = "closed"
        unanswered = tuple(self._pending)
        self._pending.clear()
        why = (self.refusal.message if self.refusal is not None else
               self.bye.message if self.bye is not None and self.bye.message else reason)
        final = FINAL_CLOSE_CODES.get(code) if code is not None else None  # type: ignore[call-overload]
        return Closed(code=code, reason=why or None, final=final, bye=self.bye,
                      unanswered=unanswered)


def read_hello(data: str | bytes) -> Hello:
    """The master's side of the handshake: the first frame of a connection must be a hello
    text frame. Raises ``WireError`` (code ``hello_required``, close code 4001, or what the
    hello's own check says: a version mismatch is 4000)."""
    if not isinstance(data, str):
        raise WireError("the first message must be a hello text frame",
                        code="hello_required", close_code=CloseCode.HELLO_REQUIRED)
    hello = decode_text(data)
    if not isinstance(hello, Hello):
        raise WireError(f"the first message must be a hello, got {hello.TYPE}",
                        code="hello_required", close_code=CloseCode.HELLO_REQUIRED)
    return hello


def as_answer(message: Message, expect: type[A]) -> A:
    """An answer as the type the request expects; ``RequestRefusedError`` for the master's
    ``Error``, ``ProtocolError`` for anything else."""
    if isinstance(message, Error):
        raise RequestRefusedError(message.code, message.message)
    if not isinstance(message, expect):
        raise ProtocolError(f"expected {expect.__name__} from the master, got "
                            f"{type(message).__name__}")
    return message


class RequestRefusedError(MlitbError):
    """The master answered a request with an error; ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

