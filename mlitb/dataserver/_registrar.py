"""A standalone data server's link to its master (``mlitb data-server --master URL``).

Over one operator connection it learns the master's projects (uploads are checked against
their input shapes), announces this data server (``register_data_server``) and registers every
upload (``register_data``). When the master goes away the data server keeps serving what it
stores; the link reconnects with backoff and, once the master is back (a restart included),
announces the data server again and registers what the store holds for every project (the
master ignores ids it knows). While the master is away uploads are refused with 503 and a
``Retry-After``, so nothing is stored that the master would not learn of.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from .._backoff import Backoff
from ..client import MasterUnreachableError, OperatorClient, open_operator
from .._tokens import matches
from ..errors import MlitbError, UploadError
from ..protocol import (
    MAX_IDS_PER_MESSAGE,
    Ack,
    DataRegistered,
    ListProjects,
    ProjectList,
    RegisterData,
    RegisterDataServer,
)
from ._backend import DataStore
from ._pending import BusyError
from ._store import SPLITS, Registration, Split
from ._ingest import InputShape

REFRESH_EVERY = 2.0
MAX_BACKOFF = 30.0
"""The longest wait between reconnect attempts (seconds)."""
"""Seconds between two looks at the master's projects (uploads are checked against them)."""


class MasterAwayError(BusyError):
    """An upload while the link to the master is down: answered 503 with ``Retry-After``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 503)


class Registrar:
    """The link; ``run`` keeps it up, ``check_upload`` and ``register`` are the data server's
    seams (``serve_data_server(check_upload=..., on_registered=...)``)."""

    def __init__(self, url: str, token: str | None, store: DataStore, *,
                 cafile: str | None = None, say: Callable[[str], None] = print,
                 first_backoff: float = 1.0) -> None:
        self.url, self.token, self.store, self.cafile = url, token, store, cafile
        self.say, self.first_backoff = say, first_backoff
        self.shapes: dict[str, InputShape] = {}
        # Per project: the join and contributor tokens' hashes, as the master keeps them.
        self.access: dict[str, tuple[str | None, str | None]] = {}
        self.registrations = 0  # times the master accepted this data server (1 + reconnects)
        self._op: OperatorClient | None = None
        self._lock = trio.Lock()  # one request at a time: each reads until its answer

    @property
    def connected(self) -> bool:
        return self._op is not None

    async def run(self, announced: str, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, register, refresh; reconnect whenever the master goes away. The first
        connection must succeed (``MasterUnreachableError`` otherwise); a refusal
        (``MlitbError``: a wrong token, a store the master will not share) always ends it."""
        failures = 0
        reconnect = Backoff(self.first_backoff, MAX_BACKOFF)
        started = False
        while True:
            try:
                async with open_operator(self.url, self.token, need_token=True,
                                         cafile=self.cafile) as op:
                    self._op = op
                    await self._refresh(register_all=True)
                    try:
                        await self._ask(RegisterDataServer(
                            request_id="-", url=announced, store=self.store.identity), Ack)
                    except MasterUnreachableError:
                        raise
                    except MlitbError as exc:
                        raise MlitbError(f"the master refused this data server: {exc}") \
                            from None
                    self.registrations += 1
                    if not started:
                        started = True
                        task_status.started()
                    elif failures:
                        self.say(f"registered again with the master at {self.url}")
                    failures = 0
                    reconnect.reset()
                    while True:
                        await trio.sleep(REFRESH_EVERY)
                        await self._refresh()
            except (MasterUnreachableError, ConnectionClosed) as exc:
                self._op = None  # uploads are refused from now on
                if not started:
                    raise MasterUnreachableError(str(exc)) from None
                why = str(exc) if isinstance(exc, MlitbError) else "the connection closed"
                failures += 1
                delay = reconnect.next()
                self.say(f"lost the master ({why}); still serving what is stored, "
                         f"reconnecting in {delay:.1f} s")
                await trio.sleep(delay)
            finally:
                self._op = None

    def check_upload(self, project: str, split: str) -> InputShape:
        """The project's input shape for an upload, or the reason to refuse it."""
        if self._op is None:
            raise MasterAwayError(f"this data server cannot reach its master ({self.url}) "
                                  "right now: try again shortly")
        if project not in self.shapes:
            raise UploadError(f"no project named {project!r} on the master (a project "
                              f"created in the last {REFRESH_EVERY:g} s may not be known yet)")
        return self.shapes[project]

    def may_read(self, project: str, token: str | None) -> bool:
        """The master's rule (``Master.may_read``) with the hashes it sent: a join-token
        project's data is for its join token, its contributor token or the operator token."""
        join, contribute = self.access.get(project, (None, None))
        if join is None:
            return True
        return token is not None and (matches(token, join) or (
            contribute is not None and matches(token, contribute)) or (
            self.token is not None and hmac.compare_digest(token.encode(),
                                                           self.token.encode())))

    def may_contribute(self, project: str, token: str) -> bool:
        """Whether ``token`` is the project's contributor token."""
        contribute = self.access.get(project, (None, None))[1]
        return contribute is not None and matches(token, contribute)

    async def register(self, r: Registration) -> None:
        """Register an upload the store committed (the data server answers 502 on failure;
        the ids are registered when the master is back, with everything stored)."""
        await self._register(r.project, r.split, list(r.ids), r.label_names,
                             [int(x) for x in r.labels])

    async def _ask(self, message: Any, expect: Any) -> Any:
        async with self._lock:
            op = self._op
            if op is None:
                raise MasterUnreachableError(f"not connected to the master at {self.url}")
            return await op.request(message, expect)

    async def _refresh(self, *, register_all: bool = False) -> None:
        projects = (await self._ask(ListProjects(request_id="-"), ProjectList)).projects
        for p in projects:
            c, h, w = p.input_shape
            new = register_all or p.name not in self.shapes
            self.shapes[p.name] = InputShape(width=w, height=h, channels=c)
            self.access[p.name] = (p.join_sha256, p.contributor_sha256)
            if new:  # data stored before (a shared store, a restarted master) counts
                await self._register_stored(p.name)
        for name in set(self.shapes) - {p.name for p in projects}:
            del self.shapes[name]
            self.access.pop(name, None)

    async def _register(self, project: str, split: Split, ids: list[int], label_names: Any,
                        labels: list[int]) -> None:
        for i in range(0, max(len(ids), 1), MAX_IDS_PER_MESSAGE):
            await self._ask(RegisterData(
                request_id="-", project=project, split=split,
                ids=tuple(ids[i:i + MAX_IDS_PER_MESSAGE]), label_names=tuple(label_names),
                labels=tuple(labels[i:i + MAX_IDS_PER_MESSAGE])), DataRegistered)

    async def _register_stored(self, project: str) -> None:
        """Register what the store holds for ``project``."""
        if project not in await trio.to_thread.run_sync(self.store.projects):
            return
        manifest = await trio.to_thread.run_sync(self.store.manifest, project)
        for split in SPLITS:
            ids = [i for i, s in enumerate(manifest["split"]) if s == split]
            if not ids:
                continue
            try:
                await self._register(project, split, ids, manifest["labels"],
                                     [manifest["label"][i] for i in ids])
            except MasterUnreachableError:
                raise
            except MlitbError as exc:
                self.say(f"project {project}: its stored {split} data was not registered: "
                         f"{exc}")
