"""One worker: a trio client of the master with its own WebSocket, network and data cache.

``Worker(options).run()`` connects, says hello, and serves its role until asked to stop
(``request_stop``), removed, or refused; it reconnects with exponential backoff when the master
goes away. Per connection it runs a few tasks in one nursery:

- the *receiver* decodes every message and frame and updates the worker's state (it never blocks,
  so the WebSocket library keeps answering the master's pings);
- the *sender* writes the outbox to the WebSocket (one writer, in order);
- the *downloader* (trainers and stats workers) fetches allocated ids from the data server in
  batches, caches them, and reports them with ``cache_report``;
- the *trainer* answers each ``work`` order with exactly one RESULT frame, computing in a thread;
  the *evaluator* (stats) evaluates new parameter versions on the test cache; the *tracker* keeps
  the latest parameters in its network.

The network, the cache and the pacer outlive connections, so a reconnecting worker keeps its data.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from mlitb import __version__
from mlitb import _websocket
from mlitb._backoff import Backoff
from mlitb._tls import client_context
from mlitb.errors import MlitbError
from mlitb.nn import Net
from mlitb.optim import Optimizer, from_wire
from mlitb.protocol import (
    MAX_IDS_PER_MESSAGE,
    MAX_LARGE_TEXT_FRAME,
    Allocation,
    Bye,
    CacheReport,
    CloseCode,
    DataServers,
    Error,
    Hello,
    ParametersFrame,
    ProjectChanged,
    ProjectInfo,
    ResultFrame,
    ResultKind,
    StatsReport,
    Welcome,
    WireError,
    Work,
    decode_frame,
    decode_text,
    encode_result,
    encode_text,
    result_encoding,
)
from mlitb.training import (
    ComputeResult,
    DataCache,
    ErrorFeedback,
    Evaluation,
    IdArray,
    Pacer,
    Passes,
    Shape,
    compute_gradient,
    compute_local,
    empty_result,
    evaluate,
    inner_hyperparameters,
    make_inner,
)

from ._data import (
    DataError,
    DataSource,
    FailoverDataSource,
    HttpDataSource,
    reachable_data_url,
)
from ._events import ExitCode, LogLine, WorkerEnded, WorkerEvent, WorkerPhase, WorkerStatus


_websocket.install()  # every frame a client sends is masked (mlitb/_websocket.py)
log = logging.getLogger(__name__)

Role = Literal["trainer", "tracker", "stats"]
DataSourceFactory = Callable[[str, str, Shape], DataSource]
"""(data_url, project name, input shape) -> a data source."""
Reporter = Callable[[WorkerEvent], None]

# Close codes after which reconnecting cannot help, and the exit code they lead to.
FINAL_CLOSE_CODES: dict[int, ExitCode] = {
    CloseCode.VERSION_MISMATCH: ExitCode.REFUSED,
    CloseCode.HELLO_REQUIRED: ExitCode.REFUSED,
    CloseCode.NO_PROJECT: ExitCode.REFUSED,
    CloseCode.POLICY_VIOLATION: ExitCode.REFUSED,
    CloseCode.JOIN_REFUSED: ExitCode.REFUSED,
    CloseCode.REMOVED: ExitCode.REMOVED,
    CloseCode.PROJECT_DELETED: ExitCode.REMOVED,
    CloseCode.TOO_MANY_ERRORS: ExitCode.ERROR,
    CloseCode.PROTOCOL_ERROR: ExitCode.ERROR,
    CloseCode.UNSUPPORTED_DATA: ExitCode.ERROR,
    CloseCode.MESSAGE_TOO_BIG: ExitCode.ERROR,
}


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


def _describe_close(code: int | None, reason: str | None) -> str:
    try:
        name = CloseCode(code).name if code is not None else "none"
    except ValueError:
        name = {1005: "NO_STATUS", 1006: "ABNORMAL_CLOSURE"}.get(code or 0, "unknown")
    text = f"close code {code} ({name})"
    return f"{text}: {reason}" if reason else text


def _handshake_reason(exc: HandshakeError) -> str:
    """trio-websocket keeps the real cause of a failed handshake in ``__cause__``."""
    cause = exc.__cause__
    if cause is not None:
        return str(cause) or type(cause).__name__
    return str(exc) or type(exc).__name__


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
        self._clock = clock
        self._stop = trio.Event()
        self._stopping = False
        self._ws: WebSocketConnection | None = None
        self.backoff = Backoff(options.backoff_initial, options.backoff_max)
        self.pacer = Pacer()
        self.rng = np.random.default_rng(
            None if options.seed is None else [options.seed, options.index])
        # Kept across connections.
        self.net: Net | None = None
        self.inner: Optimizer | None = None
        """A ``local`` project's inner optimizer: its state carries over between rounds."""
        self._inner_key: tuple[str, int] | None = None
        self.feedback = ErrorFeedback()
        """Compressed results: what encoding lost, sent with the next result."""
        self.passes = Passes(self.rng)
        """The worker's passes over its cache (time budgets): kept between rounds."""
        self.cache: DataCache | None = None
        self._cache_key: tuple[str, Shape] | None = None
        # Per connection.
        self.status = WorkerStatus(index=options.index, phase="starting")
        self.info: ProjectInfo | None = None
        self.worker_id: int | None = None
        self.params: ParametersFrame | None = None
        self.sessions = 0
        self.results_sent = 0

    # -- reporting ----------------------------------------------------------------------------
    def _log(self, level: int, text: str) -> None:
        log.log(level, "worker %d: %s", self.options.index, text)
        self._report(LogLine(self.options.index, level, text))

    def _update(self, **changes: object) -> None:
        status = replace(self.status, **changes)  # type: ignore[arg-type]
        if self.cache is not None:
            status = replace(status, allocated=self.cache.allocated, cached=self.cache.usable)
        if status != self.status:
            self.status = status
            self._report(status)

    def _phase(self) -> WorkerPhase:
        role = self.options.role
        if role == "tracker":
            return "tracking"
        cache = self.cache
        if cache is None or cache.allocated == 0:
            return "idle"
        if cache.usable < cache.allocated:
            return "caching"
        return "training" if role == "trainer" else "evaluating"

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
        self._update(phase="stopped")
        self._report(WorkerEnded(self.options.index, int(code), reason))
        return int(code)

    async def _run_sessions(self) -> _SessionEnd:
        last_reason = ""
        while True:
            self._update(phase="connecting")
            try:
                end = await self._session()
            except HandshakeError as exc:
                end = _SessionEnd(f"cannot connect to {self.options.url}: "
                                  f"{_handshake_reason(exc)}")
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                end = _SessionEnd(f"connection to {self.options.url} failed: "
                                  f"{exc or type(exc).__name__}")
            finally:
                self._ws = None
            if self._stopping:
                return _SessionEnd("stopped", ExitCode.OK)
            if end.code is not None:
                level = logging.INFO if end.code == ExitCode.OK else logging.ERROR
                self._log(level, end.reason)
                return end
            delay = self.backoff.next()
            # The same failure again (the master is still away) is a debug line only.
            level = logging.DEBUG if end.reason == last_reason else logging.WARNING
            last_reason = end.reason
            self._log(level, f"{end.reason}; reconnecting in {delay:.2g} s")
            self._update(phase="waiting", worker_id=None)
            await trio.sleep(delay)

    # -- one connection -----------------------------------------------------------------------
    async def _session(self) -> _SessionEnd:
        options = self.options
        self.info, self.worker_id, self.params = None, None, None
        self.results_sent = 0
        ssl_context = client_context(options.cafile) if options.url.startswith("wss://") \
            else None
        async with open_websocket_url(
            options.url, ssl_context=ssl_context, max_message_size=MAX_LARGE_TEXT_FRAME,
            connect_timeout=options.connect_timeout, disconnect_timeout=options.close_timeout,
        ) as ws:
            self._ws = ws
            try:
                return await self._serve(ws)
            finally:
                # After an abnormal close trio-websocket 0.12 leaves the TCP stream open until
                # garbage collection: close it now, before reconnecting.
                stream = getattr(ws, "_stream", None)
                if stream is not None and ws.closed is not None:
                    with trio.CancelScope(shield=True):
                        try:
                            await stream.aclose()
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                            pass

    async def _serve(self, ws: WebSocketConnection) -> _SessionEnd:
        options = self.options
        hello = Hello(role=options.role, client="python", host=options.host,
                      project=options.project, join_token=options.join_token)
        try:
            await ws.send_message(encode_text(hello))
            welcome = await self._wait_welcome(ws)
            self._on_welcome(welcome)
        except ConnectionClosed as exc:
            return self._closed(exc, self._last_error)
        except _SessionEnd as refused:
            return refused
        end: _SessionEnd | None = None
        outbox_send, outbox_receive = trio.open_memory_channel[str | bytes](math.inf)
        work_send, work_receive = trio.open_memory_channel[Work](math.inf)
        self._outbox = outbox_send
        self._work = work_send
        self._wake_download = trio.Event()
        self._wake_eval = trio.Event()
        self._first_allocation = True
        self._want: dict[int, None] = {}
        try:
            async with trio.open_nursery() as nursery:
                def finish(result: _SessionEnd) -> None:
                    nonlocal end
                    if end is None:
                        end = result
                    nursery.cancel_scope.cancel()

                nursery.start_soon(self._receiver, ws, finish)
                nursery.start_soon(self._sender, ws, outbox_receive, finish)
                if options.role in ("trainer", "stats"):
                    nursery.start_soon(self._downloader)
                if options.role == "trainer":
                    nursery.start_soon(self._trainer, work_receive)
                elif options.role == "stats":
                    nursery.start_soon(self._evaluator)
        finally:
            outbox_send.close()
            work_send.close()
        assert end is not None
        return end

    _last_error: str | None = None

    async def _wait_welcome(self, ws: WebSocketConnection) -> Welcome:
        self._last_error = None
        with trio.move_on_after(self.options.hello_timeout):
            while True:
                data = await ws.get_message()
                if isinstance(data, bytes):
                    raise _SessionEnd("the master sent a binary frame before its welcome")
                try:
                    message = decode_text(data, max_size=MAX_LARGE_TEXT_FRAME)
                except WireError as exc:
                    raise _SessionEnd(f"the master's first message was invalid: {exc}") from None
                if isinstance(message, Welcome):
                    if message.project is None or message.role != self.options.role:
                        raise _SessionEnd("the master's welcome does not match the hello "
                                          f"(role {message.role}, project "
                                          f"{message.project.name if message.project else None})",
                                          ExitCode.ERROR)
                    return message
                if isinstance(message, Error):
                    self._last_error = message.message
                    continue  # the close follows
                raise _SessionEnd(f"the master answered the hello with {message.TYPE}")
        raise _SessionEnd(f"no welcome from the master within {self.options.hello_timeout:g} s")

    def _closed(self, exc: ConnectionClosed, error: str | None = None) -> _SessionEnd:
        code = exc.reason.code if exc.reason is not None else None
        reason = exc.reason.reason if exc.reason is not None else None
        text = _describe_close(code, error or reason)
        final = FINAL_CLOSE_CODES.get(code) if code is not None else None
        if final is not None:
            return _SessionEnd(f"the master closed the connection: {text}", final)
        return _SessionEnd(f"the connection closed: {text}")

    def _on_welcome(self, welcome: Welcome) -> None:
        info = welcome.project
        assert info is not None
        self.sessions += 1
        self.backoff.reset()
        self.worker_id = welcome.worker_id
        urls = self._data_urls(welcome.data_urls or (
            (welcome.data_url,) if welcome.data_url else ()))
        if welcome.server_version != __version__:
            self._log(logging.WARNING, f"the master runs mlitb {welcome.server_version}, this "
                      f"node {__version__}")
        self._apply_project(info)
        self.inner, self._inner_key = None, None  # a joiner's inner optimizer starts from zero
        self.feedback.reset()  # another worker id: a new stream of results
        self.passes = Passes(self.rng)  # and its first pass from the start
        assert self.cache is not None
        self.cache.clear_allocation()
        shape, name = self._shape(info), info.name
        self._source = FailoverDataSource(
            urls, lambda url: self._data_source_factory(url, name, shape))
        self.data_url = self._source.url
        self._log(logging.INFO, f"joined project {info.name} as {self.options.role} "
                  f"{welcome.worker_id} ({info.parameter_count} parameters, "
                  f"T={info.iteration_time:g} s)")
        self._update(phase=self._phase(), worker_id=welcome.worker_id, project=info.name,
                     iteration=info.iteration, parameter_version=None, results=0,
                     loss=None, test_error=None, samples_per_s=None)

    def _data_urls(self, announced: Sequence[str]) -> list[str]:
        """The announced data servers as this node reaches them."""
        urls = []
        for url in announced:
            reachable = reachable_data_url(url, self.options.url)
            if reachable != url:
                self._log(logging.INFO, f"the master announces a data server at {url}; "
                          f"using {reachable}")
            urls.append(reachable)
        return urls

    def _on_data_servers(self, message: DataServers) -> None:
        urls = self._data_urls(message.data_urls)
        self._source.update(urls)
        self.data_url = self._source.url
        self._log(logging.INFO, "data servers: " + (", ".join(urls) or "none"))

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
    async def _sender(self, ws: WebSocketConnection,
                      outbox: trio.MemoryReceiveChannel[str | bytes],
                      finish: Callable[[_SessionEnd], None]) -> None:
        try:
            async for data in outbox:
                await ws.send_message(data)
        except ConnectionClosed as exc:
            finish(self._closed(exc))

    def _send(self, data: str | bytes) -> None:
        try:
            self._outbox.send_nowait(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the connection is ending

    async def _receiver(self, ws: WebSocketConnection,
                        finish: Callable[[_SessionEnd], None]) -> None:
        bye: Bye | None = None
        error: str | None = None
        while True:
            try:
                data = await ws.get_message()
            except ConnectionClosed as exc:
                end = self._closed(exc, bye.message if bye and bye.message else error)
                if bye is not None:
                    end.reason = f"{end.reason} (bye: {bye.reason})"
                finish(end)
                return
            try:
                if isinstance(data, bytes):
                    self._on_frame(data)
                    continue
                message = decode_text(data, max_size=MAX_LARGE_TEXT_FRAME)
            except WireError as exc:
                self._log(logging.WARNING, f"ignored an invalid message from the master: {exc}")
                continue
            if isinstance(message, Work):
                self._work.send_nowait(message)
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
                bye = message
                self._log(logging.WARNING, f"the master says bye ({message.reason})"
                          + (f": {message.message}" if message.message else ""))
            elif isinstance(message, Error):
                error = message.message
                level = logging.DEBUG if message.code == "stale_result" else logging.WARNING
                self._log(level, f"the master refused something ({message.code}): "
                          f"{message.message}")
            else:
                self._log(logging.DEBUG, f"ignored a {message.TYPE} message")

    def _on_frame(self, data: bytes) -> None:
        frame = decode_frame(data, expected_length=self.info.parameter_count if self.info else None)
        if isinstance(frame, ResultFrame):
            raise WireError("the master sent a result frame", code="bad_frame")
        self.params = frame
        self._update(parameter_version=frame.parameter_version, iteration=frame.iteration)
        if self.options.role == "tracker" and self.net is not None:
            self.net.params = frame.vector
            self._log(logging.DEBUG, f"tracking parameters v{frame.parameter_version} "
                      f"(iteration {frame.iteration})")
        self._wake_eval.set()

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
        self._wake_eval.set()
        self._log(logging.DEBUG, f"allocation +{len(message.added)} -{len(message.removed)}: "
                  f"{cache.allocated} ids (the master says {message.total}), "
                  f"{need.size} to download")
        self._update(phase=self._phase())

    def _on_project_changed(self, info: ProjectInfo) -> None:
        old = self.info
        if old is not None and (old.spec, old.labels) == (info.spec, info.labels):
            self.info = info  # state, T or iteration only
        else:
            cache_before = self.cache
            self._apply_project(info)
            if self.cache is not cache_before:
                self._log(logging.WARNING, "the project's input shape changed: cache dropped")
                if cache_before is not None and len(cache_before):
                    self._report_cache(np.empty(0, dtype=np.int64), cache_before.cached_ids())
                self._want.clear()
            self._log(logging.INFO, f"project {info.name} changed: {len(info.labels)} labels, "
                      f"{info.parameter_count} parameters")
        assert self.cache is not None
        for data_id in self.cache.missing().tolist():  # e.g. ids skipped for an unknown label
            self._want[data_id] = None
        if self._want:
            self._wake_download.set()
        self._update(phase=self._phase())

    def _report_cache(self, cached: IdArray, evicted: IdArray) -> None:
        step = MAX_IDS_PER_MESSAGE
        for i in range(0, max(cached.size, evicted.size), step):
            self._send(encode_text(CacheReport(cached=tuple(cached[i:i + step].tolist()),
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
                    self._log(logging.ERROR, f"{exc}; skipping {ids.size} ids")
                    continue
                self._want = {**dict.fromkeys(batch), **self._want}  # first, after a pause
                failures += 1
                delay = min(10.0, self.options.download_retry * 2.0 ** min(failures - 1, 5))
                self._log(logging.WARNING, f"{exc}; retrying in {delay:.1f} s")
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
                self._log(logging.WARNING, f"{int((~ok).sum())} ids have a label the network "
                          "does not know yet; they wait for the project to change")
            new = cache.add(frame.ids[ok], labels[ok], frame.pixels[ok])
            self._report_cache(new, np.empty(0, dtype=np.int64))
            self._wake_eval.set()
            self._update(phase=self._phase())

    async def _trainer(self, work: trio.MemoryReceiveChannel[Work]) -> None:
        async for order in work:
            # Work orders that piled up behind a long computation are stale: answer each with an
            # empty result (every order gets exactly one) and compute the newest.
            while True:
                try:
                    newer = work.receive_nowait()
                except trio.WouldBlock:
                    break
                self._send_result(order, empty_result(self._num_params()))
                order = newer
            result = await self._compute(order)
            self._send_result(order, result)

    def _num_params(self) -> int:
        return self.info.parameter_count if self.info is not None else 0

    async def _compute(self, order: Work) -> ComputeResult:
        params, net, cache = self.params, self.net, self.cache
        if params is None or net is None or cache is None or \
                params.parameter_version != order.parameter_version or \
                params.vector.size != net.num_params:
            have = params.parameter_version if params is not None else None
            self._log(logging.WARNING, f"work order for parameters v{order.parameter_version}, "
                      f"but this worker holds v{have}: answering with 0 samples")
            return empty_result(self._num_params())
        view = cache.snapshot()
        seed = self.options.seed or 0
        info = self.info
        assert info is not None
        training = info.training
        inner = self._inner_optimizer(info, net, fresh=order.samples is not None) \
            if training.algorithm == "local" else None
        learning_rate = order.learning_rate if order.learning_rate is not None else \
            float(info.hyperparameters.get("learning_rate", 0.01))

        # Deterministic orders are drawn from (seed, iteration) alone, so that a replay can
        # follow them; time budgets continue the worker's pass.
        passes = self.passes if order.samples is None else None

        def run() -> ComputeResult:
            net.params = params.vector
            if inner is not None:
                return compute_local(
                    net, view, inner, learning_rate=learning_rate,
                    batch_size=training.batch_size, seconds=order.seconds,
                    samples=order.samples, rng=self.rng, seed=seed, iteration=order.iteration,
                    clock=self._clock, pacer=self.pacer, should_stop=lambda: self._stopping,
                    shift=training.shift, flip=training.flip, passes=passes)
            return compute_gradient(
                net, view, seconds=order.seconds, samples=order.samples, rng=self.rng,
                seed=seed, iteration=order.iteration, clock=self._clock, pacer=self.pacer,
                max_batch=self.options.max_batch, should_stop=lambda: self._stopping,
                shift=training.shift, flip=training.flip, passes=passes)

        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)

    def _inner_optimizer(self, info: ProjectInfo, net: Net, *, fresh: bool) -> Optimizer:
        """The inner optimizer for this round: the one kept from the last round with the
        project's current hyperparameters, or a new one (first round, another optimizer or
        net size, or ``fresh``: deterministic rounds each start from zero). The master's
        schedule sets the learning rate, so the inner optimizer's own step decay is off."""
        hp = from_wire(info.hyperparameters)
        key = (info.optimizer, net.num_params)
        if fresh or self.inner is None or self._inner_key != key:
            self.inner = make_inner(info.optimizer, hp, net)
            self._inner_key = key
        else:
            self.inner.set_hyperparameters(**inner_hyperparameters(hp))
        return self.inner

    def _send_result(self, order: Work, result: ComputeResult) -> None:
        training = self.info.training if self.info is not None else None
        local = training is not None and training.algorithm == "local"
        encoding = result_encoding(training.wire if training is not None else "float32")
        # Error feedback: what this encoding loses goes out with the next result. A result of
        # nothing (0 samples) is the zero vector as it is, and keeps the residual.
        vector = self.feedback.encode(result.vector, encoding,
                                      parameter_version=order.parameter_version) \
            if result.samples else result.vector
        self._send(encode_result(
            vector, parameter_version=order.parameter_version, samples=result.samples,
            correct=result.correct, loss_sum=result.loss_sum,
            compute_seconds=result.compute_seconds, steps=result.steps,
            kind=ResultKind.PARAMETER_DELTA if local else ResultKind.GRADIENT_SUM,
            encoding=encoding))
        self.results_sent += 1
        changes: dict[str, object] = {"results": self.results_sent, "iteration": order.iteration,
                                      "phase": self._phase()}
        if result.samples:
            changes["loss"] = result.loss
            if result.compute_seconds > 0:
                changes["samples_per_s"] = result.samples / result.compute_seconds
        self._update(**changes)

    async def _evaluator(self) -> None:
        evaluated: int | None = None
        reports = 0
        while True:
            self._wake_eval = trio.Event()
            params, net, cache = self.params, self.net, self.cache
            ready = (params is not None and net is not None and cache is not None
                     and params.parameter_version != evaluated
                     and params.vector.size == net.num_params
                     and 0 < cache.allocated == cache.usable)
            if not ready:
                await self._wake_eval.wait()
                continue
            assert params is not None and net is not None and cache is not None
            view = cache.snapshot()
            options = self.options
            # The first reports are quick subsets, so the curve starts at once: a whole test
            # set first would cost c seconds and then c / share of waiting (~30 s on CIFAR-10).
            every = max(1, options.stats_full_every)
            full = reports % every == every - 1
            if not full and len(view) > options.stats_subset:
                view = view.subset(options.stats_subset)

            def run() -> Evaluation:
                net.params = params.vector
                return evaluate(net, view, clock=self._clock, should_stop=lambda: self._stopping)

            started = self._clock()
            result = await trio.to_thread.run_sync(run, abandon_on_cancel=True)
            evaluated = params.parameter_version
            reports += 1
            # Keep to a share of one core: the trainers on this machine need the rest.
            share = min(max(options.stats_share, 1e-3), 1.0)
            rest = result.compute_seconds / share - (self._clock() - started)
            if rest > 0:
                await trio.sleep(rest)
            if result.samples == 0:
                continue
            loss = result.loss if result.loss is not None and math.isfinite(result.loss) \
                else None
            self._send(encode_text(StatsReport(
                parameter_version=params.parameter_version, iteration=params.iteration,
                samples=result.samples, error=min(max(result.error, 0.0), 1.0),
                loss=None if loss is None else max(loss, 0.0))))
            self.results_sent += 1
            self._update(results=self.results_sent, test_error=result.error, loss=loss,
                         samples_per_s=result.samples / result.compute_seconds
                         if result.compute_seconds > 0 else None)
