"""One worker: a trio client of the master with its own WebSocket, network and data cache.

``Worker(options).run()`` connects, says hello, and serves its role until asked to stop
(``request_stop``), removed, or refused; it reconnects with backoff when the master goes away.
The session with the master (hello, welcome, the close codes after which reconnecting cannot
help) is ``mlitb.protocol.ClientSession``; the WebSocket is ``mlitb._transport``'s. Per
connection it runs a few tasks in one nursery:

- the *receiver* decodes every message and frame and updates the worker's state (it never blocks,
  so the WebSocket library keeps answering the master's pings);
- the *sender* writes the outbox to the WebSocket (one writer, in order);
- the *keepalive* pings a master not heard from for a while, and ends a connection whose master
  no longer answers (it may have vanished without closing);
- the *downloader* (trainers and stats workers) fetches allocated ids from the data server in
  batches, caches them, and reports them with ``cache_report``;
- the role's tasks (``_roles.py``): a trainer answers each work order with one result frame, a
  stats worker evaluates new parameter versions, a tracker keeps the latest parameters.

The network, the cache, the pacer and the role outlive connections, so a reconnecting worker
keeps its data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from mlitb import __version__
from mlitb._backoff import Backoff
from mlitb._transport import Outbox, keepalive, open_master
from mlitb.errors import MasterUnreachableError, MlitbError
from mlitb.nn import Net
from mlitb.protocol import (
    MAX_IDS_PER_MESSAGE,
    MAX_LARGE_TEXT_FRAME,
    Allocation,
    Bye,
    CacheReport,
    ClientSession,
    CloseCode,
    DataServers,
    Error,
    Finality,
    FrameArrived,
    Hello,
    ParametersFrame,
    ProjectChanged,
    ProjectInfo,
    Pushed,
    ResultFrame,
    SessionError,
    Welcome,
    Welcomed,
    WireError,
    Work,
    decode_frame,
    encode_text,
)
from mlitb.training import DataCache, IdArray, Pacer, Shape

from ._data import (
    DataError,
    DataSource,
    FailoverDataSource,
    HttpDataSource,
    reachable_data_url,
)
from ._reports import ExitCode, LogLine, WorkerEnded, WorkerEvent, WorkerPhase, WorkerStatus
from ._roles import ROLES

log = logging.getLogger(__name__)

Role = Literal["trainer", "tracker", "stats"]
DataSourceFactory = Callable[[str, str, Shape], DataSource]
"""(data_url, project name, input shape) -> a data source."""
Reporter = Callable[[WorkerEvent], None]

EXIT_CODES: dict[Finality, ExitCode] = {
    Finality.REFUSED: ExitCode.REFUSED,
    Finality.REMOVED: ExitCode.REMOVED,
    Finality.ERROR: ExitCode.ERROR,
}
"""The exit code after a close that reconnecting cannot help (``mlitb.protocol.FINAL_CLOSE_CODES``)."""


def _host_name() -> str:
    import socket

    name = "".join(c for c in socket.gethostname() if c.isprintable()).strip()
    return (name or "python-node")[:128]


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker connects and behaves (picklable: it crosses to the worker process)."""

    url: str
    role: Role = "trainer"
    project: str | None = None
    host: str = field(default_factory=_host_name)
    join_token: str | None = field(default=None, repr=False)
    """The project's join token (sent in the hello; never logged)."""
    cafile: str | None = None
    """A CA (PEM) to verify a wss:// master and an https:// data server against."""
    index: int = 0
    seed: int | None = None
    """Seeds the random batches of time budgets; deterministic work orders use ``seed or 0``."""
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    connect_timeout: float = 10.0
    hello_timeout: float = 10.0
    close_timeout: float = 2.0
    ping_interval: float = 10.0
    """Ping a master not heard from for this long; one that does not answer within
    ``ping_interval`` seconds more is gone: reconnect."""
    download_retry: float = 1.0
    """First pause before retrying a failed data download (doubling up to 10 s)."""
    max_batch: int = 32
    stats_share: float = 0.1
    """A stats worker's share of one core: after an evaluation of c seconds it waits until
    c / stats_share seconds have passed (1.0: evaluate every new parameter version at once)."""
    stats_subset: int = 1000
    """A stats worker evaluates this many test ids (a fixed subset)..."""
    stats_full_every: int = 10
    """...and the whole test set every this many reports (the first reports are subsets)."""
    keep_inactive: int = 1_000_000
    """Ids no longer allocated stay cached (re-allocation prefers workers that cached an id) up to
    this many; beyond it the oldest are evicted and reported."""

class _SessionEnd(Exception):
    """Ends a connection: ``code`` None means reconnect; otherwise exit with it."""

    def __init__(self, reason: str, code: ExitCode | None = None) -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


class Worker:
    """A trainer, tracker or stats worker. Run it with ``await worker.run()``; its exit code is
    an ``ExitCode``. ``report`` receives status snapshots, log lines and the final word."""

    def __init__(
        self,
        options: WorkerOptions,
        *,
        report: Reporter | None = None,
        data_source: DataSourceFactory | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.options = options
        self._report = report or (lambda event: None)
        self._data_source_factory: DataSourceFactory = data_source or (
            lambda url, project, shape: HttpDataSource(url, project, shape,
                                                       cafile=options.cafile,
                                                       token=options.join_token))
        self.clock = clock
        self._stop = trio.Event()
        self._stopping = False
        self._ws: WebSocketConnection | None = None
        self.backoff = Backoff(options.backoff_initial, options.backoff_max)
        self.pacer = Pacer()
        self.rng = np.random.default_rng(
            None if options.seed is None else [options.seed, options.index])
        # Kept across connections.
        self.role = ROLES[options.role](self)
        self.net: Net | None = None
        self.cache: DataCache | None = None
        self._cache_key: tuple[str, Shape] | None = None
        # Per connection.
        self.status = WorkerStatus(index=options.index, phase="starting")
        self.info: ProjectInfo | None = None
        self.worker_id: int | None = None
        self.params: ParametersFrame | None = None
        self.sessions = 0
        self.results_sent = 0
        self._outbox = Outbox()
        self._heard = 0.0

    # -- what roles use -------------------------------------------------------------------------
    def log(self, level: int, text: str) -> None:
        log.log(level, "worker %d: %s", self.options.index, text)
        self._report(LogLine(self.options.index, level, text))

    def update(self, **changes: object) -> None:
        """Change the status (and report it if it changed)."""
        status = replace(self.status, **changes)  # type: ignore[arg-type]
        if self.cache is not None:
            status = replace(status, allocated=self.cache.allocated, cached=self.cache.usable)
        if status != self.status:
            self.status = status
            self._report(status)

    def phase(self) -> WorkerPhase:
        role = self.role
        if not role.needs_data:
            return role.busy
        cache = self.cache
        if cache is None or cache.allocated == 0:
            return "idle"
        if cache.usable < cache.allocated:
            return "caching"
        return role.busy

    def send(self, data: str | bytes) -> None:
        """Queue a message or frame for the master (dropped if the connection is ending)."""
        self._outbox.put(data)

    def stopping(self) -> bool:
        """Whether the worker was asked to stop (computations check it)."""
        return self._stopping

    @property
    def num_params(self) -> int:
        return self.info.parameter_count if self.info is not None else 0

    # -- lifecycle ----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Leave: close the WebSocket with 1000 and return ``ExitCode.OK`` from ``run``.
        Call from the trio thread (e.g. a signal-handling task)."""
        self._stopping = True
        self._stop.set()

    async def run(self) -> int:
        """Serve until stopped, refused or removed; returns the exit code."""
        result: _SessionEnd | None = None

        async def sessions(cancel: trio.CancelScope) -> None:
            nonlocal result
            result = await self._run_sessions()
            cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sessions, nursery.cancel_scope)
            await self._stop.wait()
            ws = self._ws
            if ws is not None:
                with trio.move_on_after(self.options.close_timeout):
                    try:
                        await ws.aclose(CloseCode.NORMAL, "the node is leaving")
                    except (ConnectionClosed, trio.BrokenResourceError, OSError):
                        pass
            nursery.cancel_scope.cancel()
        if result is not None and result.code is not None:
            code, reason = result.code, result.reason
        else:
            code, reason = ExitCode.OK, "stopped"
        self.update(phase="stopped")
        self._report(WorkerEnded(self.options.index, int(code), reason))
        return int(code)

    async def _run_sessions(self) -> _SessionEnd:
        last_reason = ""
        while True:
            self.update(phase="connecting")
            try:
                end = await self._session()
            except MasterUnreachableError as exc:
                end = _SessionEnd(str(exc))
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                end = _SessionEnd(f"connection to {self.options.url} failed: "
                                  f"{exc or type(exc).__name__}")
            finally:
                self._ws = None
            if self._stopping:
                return _SessionEnd("stopped", ExitCode.OK)
            if end.code is not None:
                level = logging.INFO if end.code == ExitCode.OK else logging.ERROR
                self.log(level, end.reason)
                return end
            delay = self.backoff.next()
            # The same failure again (the master is still away) is a debug line only.
            level = logging.DEBUG if end.reason == last_reason else logging.WARNING
            last_reason = end.reason
            self.log(level, f"{end.reason}; reconnecting in {delay:.2g} s")
            self.update(phase="waiting", worker_id=None)
            await trio.sleep(delay)

    # -- one connection -----------------------------------------------------------------------
    async def _session(self) -> _SessionEnd:
        options = self.options
        self.info, self.worker_id, self.params = None, None, None
        self.results_sent = 0
        session = ClientSession(Hello(role=options.role, client="python", host=options.host,
                                      project=options.project, join_token=options.join_token),
                                max_size=MAX_LARGE_TEXT_FRAME)
        async with open_master(options.url, cafile=options.cafile,
                               connect_timeout=options.connect_timeout,
                               close_timeout=options.close_timeout) as ws:
            self._ws = ws
            return await self._serve(ws, session)

    async def _serve(self, ws: WebSocketConnection, session: ClientSession) -> _SessionEnd:
        try:
            await ws.send_message(session.start())
            welcome = await self._wait_welcome(ws, session)
            self._on_welcome(welcome)
        except ConnectionClosed as exc:
            return self._closed(session, exc)
        except _SessionEnd as refused:
            return refused
        end: _SessionEnd | None = None
        self._outbox = outbox = Outbox()
        self._wake_download = trio.Event()
        self._first_allocation = True
        self._want: dict[int, None] = {}
        self._heard = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                def finish(result: _SessionEnd) -> None:
                    nonlocal end
                    if end is None:
                        end = result
                    nursery.cancel_scope.cancel()

                nursery.start_soon(self._receiver, ws, session, finish)
                nursery.start_soon(self._sender, ws, session, outbox, finish)
                nursery.start_soon(self._keepalive, ws, session, finish)
                if self.role.needs_data:
                    nursery.start_soon(self._downloader)
                self.role.start(nursery)
        finally:
            outbox.close()
        assert end is not None
        return end

    async def _wait_welcome(self, ws: WebSocketConnection, session: ClientSession) -> Welcome:
        with trio.move_on_after(self.options.hello_timeout):
            while True:
                data = await ws.get_message()
                try:
                    event = session.receive(data)
                except SessionError as exc:
                    raise _SessionEnd(str(exc), EXIT_CODES[exc.final] if exc.final else None) \
                        from None
                except WireError as exc:
                    raise _SessionEnd(f"the master's first message was invalid: {exc}") from None
                if isinstance(event, Welcomed):
                    return event.welcome
                # Refused: the master's error; its close follows and says why.
        raise _SessionEnd(f"no welcome from the master within {self.options.hello_timeout:g} s")

    def _closed(self, session: ClientSession, exc: ConnectionClosed) -> _SessionEnd:
        reason = exc.reason
        closed = session.closed(reason.code if reason else None,
                                reason.reason if reason else None)
        if closed.final is not None:
            return _SessionEnd(f"the master closed the connection: {closed.description}",
                               EXIT_CODES[closed.final])
        return _SessionEnd(f"the connection closed: {closed.description}")

    def _on_welcome(self, welcome: Welcome) -> None:
        info = welcome.project
        assert info is not None
        self.sessions += 1
        self.backoff.reset()
        self.worker_id = welcome.worker_id
        urls = self._data_urls(welcome.data_urls or (
            (welcome.data_url,) if welcome.data_url else ()))
        if welcome.server_version != __version__:
            self.log(logging.WARNING, f"the master runs mlitb {welcome.server_version}, this "
                      f"node {__version__}")
        self._apply_project(info)
        self.role.joined()
        assert self.cache is not None
        self.cache.clear_allocation()
        shape, name = self._shape(info), info.name
        self._source = FailoverDataSource(
            urls, lambda url: self._data_source_factory(url, name, shape))
        self.data_url = self._source.url
        self.log(logging.INFO, f"joined project {info.name} as {self.options.role} "
                  f"{welcome.worker_id} ({info.parameter_count} parameters, "
                  f"T={info.iteration_time:g} s)")
        self.update(phase=self.phase(), worker_id=welcome.worker_id, project=info.name,
                     iteration=info.iteration, parameter_version=None, results=0,
                     loss=None, test_error=None, samples_per_s=None)

    def _data_urls(self, announced: Sequence[str]) -> list[str]:
        """The announced data servers as this node reaches them."""
        urls = []
        for url in announced:
            reachable = reachable_data_url(url, self.options.url)
            if reachable != url:
                self.log(logging.INFO, f"the master announces a data server at {url}; "
                          f"using {reachable}")
            urls.append(reachable)
        return urls

    def _on_data_servers(self, message: DataServers) -> None:
        urls = self._data_urls(message.data_urls)
        self._source.update(urls)
        self.data_url = self._source.url
        self.log(logging.INFO, "data servers: " + (", ".join(urls) or "none"))

    @staticmethod
    def _shape(info: ProjectInfo) -> Shape:
        first = info.spec[0]
        return (int(first["out_depth"]), int(first["out_sy"]), int(first["out_sx"]))

    def _apply_project(self, info: ProjectInfo) -> None:
        """Build the network for ``info`` and make the cache fit it (new project or shape:
        a new cache). Raises ``_SessionEnd`` if the spec cannot be built."""
        try:
            # Label names are not needed here: data batches carry label indices.
            net = Net([dict(layer) for layer in info.spec])
        except (MlitbError, ValueError, KeyError, TypeError) as exc:
            raise _SessionEnd(f"cannot build the project's network: {exc}", ExitCode.ERROR) \
                from None
        if net.num_params != info.parameter_count:
            raise _SessionEnd(f"the project's network has {net.num_params} parameters here, "
                              f"the master says {info.parameter_count}", ExitCode.ERROR)
        self.net, self.info = net, info
        key = (info.name, self._shape(info))
        if self._cache_key != key:
            self.cache = DataCache(key[1])
            self._cache_key = key
        if self.params is not None and self.params.vector.size != net.num_params:
            self.params = None

    # -- tasks ----------------------------------------------------------------------------------
    # -- tasks ----------------------------------------------------------------------------------
    async def _sender(self, ws: WebSocketConnection, session: ClientSession, outbox: Outbox,
                      finish: Callable[[_SessionEnd], None]) -> None:
        try:
            await outbox.run(ws)
        except ConnectionClosed as exc:
            finish(self._closed(session, exc))

    async def _keepalive(self, ws: WebSocketConnection, session: ClientSession,
                         finish: Callable[[_SessionEnd], None]) -> None:
        interval = self.options.ping_interval
        try:
            await keepalive(ws, interval=interval, timeout=interval,
                            quiet=lambda: trio.current_time() - self._heard,
                            heard=self._hear)
        except ConnectionClosed as exc:
            finish(self._closed(session, exc))
            return
        finish(_SessionEnd(f"the master did not answer a ping within {interval:g} s"))

    def _hear(self) -> None:
        self._heard = trio.current_time()

    async def _receiver(self, ws: WebSocketConnection, session: ClientSession,
                        finish: Callable[[_SessionEnd], None]) -> None:
        while True:
            try:
                data = await ws.get_message()
            except ConnectionClosed as exc:
                finish(self._closed(session, exc))
                return
            self._hear()
            try:
                event = session.receive(data)
                if isinstance(event, FrameArrived):
                    self._on_frame(event.data)
                    continue
            except WireError as exc:
                self.log(logging.WARNING, f"ignored an invalid message from the master: {exc}")
                continue
            message = event.message if isinstance(event, Pushed) else None
            if isinstance(message, Work):
                self.role.on_work(message)
            elif isinstance(message, Allocation):
                self._on_allocation(message)
            elif isinstance(message, DataServers):
                self._on_data_servers(message)
            elif isinstance(message, ProjectChanged):
                try:
                    self._on_project_changed(message.project)
                except _SessionEnd as end:
                    finish(end)
                    return
            elif isinstance(message, Bye):
                self.log(logging.WARNING, f"the master says bye ({message.reason})"
                         + (f": {message.message}" if message.message else ""))
            elif isinstance(message, Error):
                level = logging.DEBUG if message.code == "stale_result" else logging.WARNING
                self.log(level, f"the master refused something ({message.code}): "
                         f"{message.message}")
            elif message is not None:
                self.log(logging.DEBUG, f"ignored a {message.TYPE} message")

    def _on_frame(self, data: bytes) -> None:
        frame = decode_frame(data, expected_length=self.info.parameter_count if self.info else None)
        if isinstance(frame, ResultFrame):
            raise WireError("the master sent a result frame", code="bad_frame")
        self.params = frame
        self.update(parameter_version=frame.parameter_version, iteration=frame.iteration)
        self.role.on_parameters(frame)

    def _on_allocation(self, message: Allocation) -> None:
        cache = self.cache
        if cache is None:
            return
        for data_id in message.removed:
            self._want.pop(data_id, None)
        cache.reserve(message.total)
        need = cache.allocate(message.added, message.removed)
        for data_id in need.tolist():
            self._want[data_id] = None
        if self._first_allocation:
            # A new connection: tell the master everything this worker holds.
            self._first_allocation = False
            self._report_cache(cache.cached_ids(), np.empty(0, dtype=np.int64))
        else:
            already = np.setdiff1d(np.asarray(message.added, dtype=np.int64), need)
            self._report_cache(already, np.empty(0, dtype=np.int64))
        evicted = cache.evict_inactive(self.options.keep_inactive)
        if evicted.size:
            self._report_cache(np.empty(0, dtype=np.int64), evicted)
        if self._want:
            self._wake_download.set()
        self.role.wake()
        self.log(logging.DEBUG, f"allocation +{len(message.added)} -{len(message.removed)}: "
                  f"{cache.allocated} ids (the master says {message.total}), "
                  f"{need.size} to download")
        self.update(phase=self.phase())

    def _on_project_changed(self, info: ProjectInfo) -> None:
        old = self.info
        if old is not None and (old.spec, old.labels) == (info.spec, info.labels):
            self.info = info  # state, T or iteration only
        else:
            cache_before = self.cache
            self._apply_project(info)
            if self.cache is not cache_before:
                self.log(logging.WARNING, "the project's input shape changed: cache dropped")
                if cache_before is not None and len(cache_before):
                    self._report_cache(np.empty(0, dtype=np.int64), cache_before.cached_ids())
                self._want.clear()
            self.log(logging.INFO, f"project {info.name} changed: {len(info.labels)} labels, "
                      f"{info.parameter_count} parameters")
        assert self.cache is not None
        for data_id in self.cache.missing().tolist():  # e.g. ids skipped for an unknown label
            self._want[data_id] = None
        if self._want:
            self._wake_download.set()
        self.update(phase=self.phase())

    def _report_cache(self, cached: IdArray, evicted: IdArray) -> None:
        step = MAX_IDS_PER_MESSAGE
        for i in range(0, max(cached.size, evicted.size), step):
            self.send(encode_text(CacheReport(cached=tuple(cached[i:i + step].tolist()),
                                               evicted=tuple(evicted[i:i + step].tolist()))))

    async def _downloader(self) -> None:
        failures = 0
        while True:
            while not self._want:
                self._wake_download = trio.Event()
                await self._wake_download.wait()
            cache, source = self.cache, self._source
            assert cache is not None
            limit = await trio.to_thread.run_sync(source.max_batch_ids, abandon_on_cancel=True)
            batch: list[int] = []
            for data_id in list(self._want):
                if len(batch) >= limit:
                    break
                del self._want[data_id]
                if cache.is_allocated(data_id) and data_id not in cache:
                    batch.append(data_id)
            if not batch:
                continue
            ids = np.asarray(batch, dtype=np.int64)
            try:
                frame = await trio.to_thread.run_sync(source.fetch, ids, abandon_on_cancel=True)
            except DataError as exc:
                if exc.permanent:
                    self.log(logging.ERROR, f"{exc}; skipping {ids.size} ids")
                    continue
                self._want = {**dict.fromkeys(batch), **self._want}  # first, after a pause
                failures += 1
                delay = min(10.0, self.options.download_retry * 2.0 ** min(failures - 1, 5))
                self.log(logging.WARNING, f"{exc}; retrying in {delay:.1f} s")
                await trio.sleep(delay)
                continue
            failures = 0
            if self.cache is not cache:  # the project changed shape meanwhile
                continue
            labels = frame.labels.astype(np.int64)
            num_classes = self.net.num_outputs if self.net is not None else 0
            ok = labels < num_classes if self.net is not None and self.net.is_classifier \
                else np.ones(labels.size, dtype=bool)
            if not ok.all():
                self.log(logging.WARNING, f"{int((~ok).sum())} ids have a label the network "
                          "does not know yet; they wait for the project to change")
            new = cache.add(frame.ids[ok], labels[ok], frame.pixels[ok])
            self._report_cache(new, np.empty(0, dtype=np.int64))
            self.role.wake()
            self.update(phase=self.phase())
