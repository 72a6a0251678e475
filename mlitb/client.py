"""An operator's connection to a master: requests with answers, and status snapshots.

Used by the CLI (``mlitb project ...``, ``mlitb model download``), the demo and the console::

    async with open_operator("ws://localhost:8000", token) as op:
        projects = await op.list_projects()
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ._transport import CONNECT_TIMEOUT, open_master
from .errors import AuthError, MasterUnreachableError, MlitbError, ProtocolError, UploadError
from .protocol import (
    Ack,
    Answered,
    ClientSession,
    FrameArrived,
    GetModel,
    Hello,
    ListProjects,
    Message,
    Model,
    ProjectList,
    ProjectSummary,
    Refused,
    RequestRefusedError,
    SessionEvent,
    as_answer,
)

__all__ = ["REQUEST_TIMEOUT", "MasterUnreachableError", "OperatorClient", "RequestRefusedError",
           "open_operator", "upload_failure"]

M = TypeVar("M")
REQUEST_TIMEOUT = 60.0
"""How long a request waits for its answer by default (seconds)."""
MAX_PUSHED = 256
"""Messages the master pushed while a request waited (status snapshots), kept for ``receive``."""


def upload_failure(exc: BaseException, archive: Path, data_url: str) -> BaseException:
    """What went wrong with an upload (``DataClient.upload``), as one ``UploadError`` (the CLI
    and the console say the same); an exception that is none of these is returned as it is."""
    from .dataserver import DataServerError

    if isinstance(exc, MlitbError) and not isinstance(exc, DataServerError):
        return exc
    if isinstance(exc, DataServerError):
        if exc.status == 502:  # stored, but the master did not take the registration
            return UploadError(f"{archive.name} was stored but not registered with the "
                               f"master: {exc.detail}")
        what = f"HTTP {exc.status}" if exc.status else "no answer"
        hint = " (pass the operator token: --token or MLITB_OPERATOR_TOKEN)" \
            if exc.status == 401 else ""
        return UploadError(f"{archive.name} was refused ({what}), nothing was stored: "
                           f"{exc.detail}{hint}")
    if isinstance(exc, OSError):
        if not os.access(archive, os.R_OK):
            return UploadError(f"cannot read {archive}: {exc.strerror or exc}")
        refused = isinstance(exc, ConnectionRefusedError)
        reason = "nothing listens there (connection refused)" if refused else \
            exc.strerror or str(exc) or type(exc).__name__
        return UploadError(f"cannot reach the data server at {data_url}: {reason}; nothing "
                           f"was uploaded (check --data-url, or leave it out to use the one "
                           f"the master announces)")
    return exc


class OperatorClient:
    """One operator session: ``request`` sends and reads until its answer; what the master
    pushes meanwhile (status snapshots) waits for ``receive``. One request at a time."""

    def __init__(self, ws: WebSocketConnection, session: ClientSession) -> None:
        assert session.welcome is not None
        self.ws = ws
        self.session = session
        self.welcome = session.welcome
        self._pushed: deque[Message] = deque(maxlen=MAX_PUSHED)

    @property
    def authorized(self) -> bool:
        return self.welcome.authorized

    async def _event(self) -> SessionEvent:
        while True:
            try:
                data = await self.ws.get_message()
            except ConnectionClosed as exc:
                reason = exc.reason
                closed = self.session.closed(reason.code if reason else None,
                                             reason.reason if reason else None)
                raise MasterUnreachableError(f"the master closed the connection "
                                             f"({closed.description})") from None
            event = self.session.receive(data)
            if isinstance(event, FrameArrived):
                raise ProtocolError("the master sent a binary frame to an operator")
            if event is not None:
                return event

    async def receive(self) -> Message:
        """The next message the master pushed (oldest first)."""
        if self._pushed:
            return self._pushed.popleft()
        event = await self._event()
        return event.message  # type: ignore[union-attr]

    async def request(self, message: Any, expect: type[M] = Ack, *,  # type: ignore[assignment]
                      timeout: float = REQUEST_TIMEOUT) -> M:
        """Send a request (its request_id is filled in) and wait for its answer, at most
        ``timeout`` seconds (then ``MasterUnreachableError``: a master that stopped answering
        is as good as gone)."""
        request_id, text = self.session.request(message)
        try:
            await self.ws.send_message(text)
        except ConnectionClosed:
            raise MasterUnreachableError("the connection to the master was lost") from None
        with trio.move_on_after(timeout):
            while True:
                event = await self._event()
                if isinstance(event, Answered) and event.request_id == request_id:
                    return as_answer(event.message, expect)
                self._pushed.append(event.message)  # type: ignore[union-attr]
        self.session.abandon(request_id)
        raise MasterUnreachableError(f"the master did not answer {type(message).TYPE} within "
                                     f"{timeout:g} s")

    async def list_projects(self) -> tuple[ProjectSummary, ...]:
        reply = await self.request(ListProjects(request_id="-"), ProjectList)
        return reply.projects

    async def get_model(self, project: str, format: str = "model") -> dict[str, Any]:
        reply = await self.request(GetModel(request_id="-", project=project,
                                            format=format), Model)  # type: ignore[arg-type]
        return reply.model


def operator_hello(token: str | None) -> Hello:
    return Hello(role="operator", client="python", host=socket.gethostname()[:128] or "?",
                 token=token or None)


@asynccontextmanager
async def open_operator(url: str, token: str | None = None, *,
                        need_token: bool = False,
                        cafile: str | None = None) -> AsyncIterator[OperatorClient]:
    """Connect to the master at ``url`` as an operator; raises ``MasterUnreachableError`` or
    ``AuthError`` with a clear message. ``wss://`` is verified against ``cafile`` (else
    ``MLITB_CAFILE``, else the system's CAs)."""
    session = ClientSession(operator_hello(token))
    async with open_master(url, cafile=cafile) as ws:
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                await ws.send_message(session.start())
                event = session.receive(await ws.get_message())
        except trio.TooSlowError:
            raise MasterUnreachableError(f"cannot reach the master at {url}: no welcome "
                                         f"within {CONNECT_TIMEOUT:g} s") from None
        except ConnectionClosed as exc:
            reason = exc.reason
            closed = session.closed(reason.code if reason else None,
                                    reason.reason if reason else None)
            raise MasterUnreachableError(f"the master at {url} closed the connection "
                                         f"({closed.description})") from None
        if isinstance(event, Refused):
            if event.error.code == "bad_token":
                raise AuthError("the master refused the operator token (check --token / "
                                "MLITB_OPERATOR_TOKEN)")
            raise MasterUnreachableError(f"the master refused the connection: "
                                         f"{event.error.message}")
        if need_token and not session.welcome.authorized:  # type: ignore[union-attr]
            raise AuthError("this action needs the operator token: pass --token or set "
                            "MLITB_OPERATOR_TOKEN")
        yield OperatorClient(ws, session)
