"""The worker's trio client against a small fake master (real WebSockets on loopback, port 0).

The fake master is written here with trio-websocket's ``serve_websocket``: each accepted
connection is handed to the test body, which plays the master's side of docs/protocol.md by hand.
Data comes from an in-memory data source (the HTTP data server has its own tests).
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from mlitb._backoff import Backoff
from mlitb.datasets import DIGITS_SPEC, digits
from mlitb.nn import Net, normalize
from mlitb.nodes._reports import ExitCode, LogLine, WorkerEnded, WorkerEvent, WorkerStatus
from mlitb.nodes._worker import Worker, WorkerOptions
from mlitb.protocol import (
    Allocation,
    Bye,
    CacheReport,
    CloseCode,
    DataBatchFrame,
    Error,
    Hello,
    Message,
    ProjectChanged,
    ProjectInfo,
    ResultFrame,
    StatsReport,
    Welcome,
    Work,
    decode_frame,
    decode_text,
    encode_parameters,
    encode_text,
)
from mlitb.training import IdArray

PROJECT = "digits"
SPEC = normalize(DIGITS_SPEC)
NUM_PARAMS = Net(SPEC).num_params


# -- fixtures -------------------------------------------------------------------------------------
class FakeSource:
    """An in-memory data server: the first 400 digits training images, ids 0..399."""

    def __init__(self, fail_first: int = 0) -> None:
        train, _, _ = digits()
        self.pixels = np.ascontiguousarray(train.images[:400].transpose(0, 3, 1, 2))
        self.labels = train.labels[:400].astype(np.uint32)
        self.requests: list[list[int]] = []
        self.fail_first = fail_first

    def max_batch_ids(self) -> int:
        return 64

    def fetch(self, ids: IdArray) -> DataBatchFrame:
        from mlitb.nodes._data import DataError

        self.requests.append(ids.tolist())
        if self.fail_first > 0:
            self.fail_first -= 1
            raise DataError("data server: connection refused (fake)")
        return DataBatchFrame(ids=ids.astype(np.uint32), labels=self.labels[ids],
                              pixels=self.pixels[ids])


@dataclass
class Conn:
    """One connection to the fake master, driven by the test."""

    ws: WebSocketConnection
    done: trio.Event = field(default_factory=trio.Event)

    async def receive(self) -> Message | bytes:
        data = await self.ws.get_message()
        if isinstance(data, bytes):
            return data
        return decode_text(data)

    async def expect(self, kind: type[Any], *, skip: tuple[type[Any], ...] = (CacheReport,)
                     ) -> Any:
        while True:
            message = await self.receive()
            if isinstance(message, bytes):
                if kind is ResultFrame:
                    return decode_frame(message, expected_length=None)
                raise AssertionError("unexpected binary frame")
            if isinstance(message, kind):
                return message
            if not isinstance(message, skip):
                raise AssertionError(f"expected {kind.__name__}, got {message!r}")

    async def send(self, message: Message | bytes) -> None:
        await self.ws.send_message(message if isinstance(message, bytes)
                                   else encode_text(message))

    async def close(self, code: int, reason: str | None = None) -> None:
        await self.ws.aclose(code, reason)
        self.done.set()


class FakeMaster:
    def __init__(self) -> None:
        self._send, self.connections = trio.open_memory_channel[Conn](16)
        self.port = 0

    async def handler(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        conn = Conn(ws)
        await self._send.send(conn)
        await conn.done.wait()

    async def accept(self) -> Conn:
        return await self.connections.receive()


@asynccontextmanager
async def fake_master() -> AsyncIterator[FakeMaster]:
    master = FakeMaster()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, master.handler, "127.0.0.1", 0, None)
        master.port = server.port
        yield master
        nursery.cancel_scope.cancel()


def project_info(spec: list[dict[str, Any]] | None = None, version: int = 0,
                 labels: int = 10) -> ProjectInfo:
    spec = spec or SPEC
    return ProjectInfo(name=PROJECT, state="running", spec=tuple(spec),
                       labels=tuple(str(i) for i in range(labels)), iteration_time=2.0,
                       iteration=version, parameter_version=version,
                       parameter_count=Net(spec).num_params)


def welcome(role: str = "trainer", worker_id: int = 7, **kwargs: Any) -> Welcome:
    return Welcome(worker_id=worker_id, role=role,  # type: ignore[arg-type]
                   data_url="http://127.0.0.1:9", server_version="0.1.0",
                   project=project_info(**kwargs))


def parameters(version: int, count: int = NUM_PARAMS) -> bytes:
    vector = Net(SPEC, seed=version).params if count == NUM_PARAMS else \
        np.random.default_rng(version).normal(0, 0.1, count).astype(np.float32)
    return encode_parameters(vector, parameter_version=version, iteration=version)


@dataclass
class Running:
    worker: Worker
    events: list[WorkerEvent]
    code: int | None = None
    finished: trio.Event = field(default_factory=trio.Event)

    def ended(self) -> WorkerEnded:
        ends = [e for e in self.events if isinstance(e, WorkerEnded)]
        assert len(ends) == 1
        return ends[0]

    def logs(self) -> str:
        return "\n".join(e.text for e in self.events if isinstance(e, LogLine))

    def last_status(self) -> WorkerStatus:
        return [e for e in self.events if isinstance(e, WorkerStatus)][-1]


@asynccontextmanager
async def running_worker(port: int, role: str = "trainer", source: FakeSource | None = None,
                         **options: Any) -> AsyncIterator[Running]:
    opts = WorkerOptions(url=f"ws://127.0.0.1:{port}/", role=role,  # type: ignore[arg-type]
                         project=PROJECT, host="test-host", backoff_initial=0.05,
                         backoff_max=0.2, hello_timeout=5.0, seed=1, download_retry=0.05,
                         **options)
    events: list[WorkerEvent] = []
    src = source or FakeSource()
    worker = Worker(opts, report=events.append, data_source=lambda url, project, shape: src)
    state = Running(worker, events)

    async def run() -> None:
        state.code = await worker.run()
        state.finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        yield state
        if not state.finished.is_set():
            worker.request_stop()
        await state.finished.wait()


async def greet(master: FakeMaster, role: str = "trainer", **kwargs: Any) -> tuple[Conn, Hello]:
    conn = await master.accept()
    hello = await conn.expect(Hello)
    await conn.send(welcome(role, **kwargs))
    return conn, hello


async def cached_ids(conn: Conn, until: int) -> set[int]:
    """Collect cache_report messages until ``until`` ids are reported."""
    cached: set[int] = set()
    while len(cached) < until:
        report = await conn.expect(CacheReport, skip=())
        cached |= set(report.cached)
    return cached


# -- tests ----------------------------------------------------------------------------------------
@pytest.mark.trio
async def test_trainer_flow_hello_allocation_work_result() -> None:
    with trio.fail_after(20):
        async with fake_master() as master, running_worker(master.port) as run:
            conn, hello = await greet(master)
            assert (hello.role, hello.client, hello.host, hello.project) == \
                ("trainer", "python", "test-host", PROJECT)
            # Nothing cached yet: a work order still gets exactly one result, with 0 samples.
            await conn.send(parameters(3))
            await conn.send(Work(iteration=3, parameter_version=3, seconds=0.05))
            empty = await conn.expect(ResultFrame)
            assert (empty.parameter_version, empty.samples) == (3, 0)
            assert empty.vector.size == NUM_PARAMS and not empty.vector.any()

            await conn.send(Allocation(added=tuple(range(200)), total=200))
            assert await cached_ids(conn, 200) == set(range(200))

            await conn.send(parameters(5))
            await conn.send(Work(iteration=5, parameter_version=5, seconds=0.3))
            started = time.monotonic()
            result = await conn.expect(ResultFrame)
            assert time.monotonic() - started < 2.0
            assert result.parameter_version == 5 and result.samples > 0
            assert result.vector.size == NUM_PARAMS and np.isfinite(result.vector).all()
            assert 0 < result.compute_seconds < 1.0
            assert result.correct <= result.samples and result.loss_sum > 0

            # Deterministic mode: exactly the samples asked for.
            await conn.send(parameters(6))
            await conn.send(Work(iteration=6, parameter_version=6, samples=77))
            result = await conn.expect(ResultFrame)
            assert (result.parameter_version, result.samples) == (6, 77)

            status = run.last_status()
            assert status.worker_id == 7 and status.allocated == status.cached == 200
            assert status.phase == "training" and status.results == 3

            await conn.send(Bye(reason="removed", message="removed by an operator"))
            await conn.close(CloseCode.REMOVED)
            await run.finished.wait()
        assert run.code == ExitCode.REMOVED
        assert "removed by an operator" in run.ended().reason


@pytest.mark.trio
async def test_deterministic_results_match_a_direct_computation() -> None:
    """Two workers with the same share and seed compute the same bytes for the same order."""
    vectors = []
    with trio.fail_after(30):
        for _ in range(2):
            async with fake_master() as master, running_worker(master.port):
                conn, _ = await greet(master)
                await conn.send(Allocation(added=tuple(range(100, 300)), total=200))
                await cached_ids(conn, 200)
                await conn.send(parameters(9))
                await conn.send(Work(iteration=9, parameter_version=9, samples=64))
                result = await conn.expect(ResultFrame)
                vectors.append(result.vector.tobytes())
                await conn.close(CloseCode.NORMAL)
    assert vectors[0] == vectors[1]


@pytest.mark.trio
async def test_allocation_removal_and_reallocation() -> None:
    source = FakeSource()
    with trio.fail_after(20):
        async with fake_master() as master, running_worker(master.port, source=source) as run:
            conn, _ = await greet(master)
            await conn.send(Allocation(added=tuple(range(100)), total=100))
            await cached_ids(conn, 100)
            await conn.send(Allocation(removed=tuple(range(50)), total=50))
            await conn.send(Allocation(added=tuple(range(10)), total=60))
            # Ids removed earlier are still cached: reported at once, not downloaded again.
            report = await conn.expect(CacheReport, skip=())
            assert set(report.cached) == set(range(10))
            assert sum(len(r) for r in source.requests) == 100
            await conn.send(parameters(1))
            await conn.send(Work(iteration=1, parameter_version=1, samples=5))
            await conn.expect(ResultFrame)
            assert run.last_status().allocated == run.last_status().cached == 60
            await conn.close(CloseCode.NORMAL)


@pytest.mark.trio
async def test_download_errors_are_retried() -> None:
    source = FakeSource(fail_first=2)
    with trio.fail_after(20):
        async with fake_master() as master, running_worker(master.port, source=source) as run:
            conn, _ = await greet(master)
            await conn.send(Allocation(added=tuple(range(30)), total=30))
            assert await cached_ids(conn, 30) == set(range(30))
            assert len(source.requests) == 3
            assert "retrying" in run.logs()
            await conn.close(CloseCode.NORMAL)


@pytest.mark.trio
async def test_work_for_an_unknown_version_gets_an_empty_result() -> None:
    with trio.fail_after(20):
        async with fake_master() as master, running_worker(master.port):
            conn, _ = await greet(master)
            await conn.send(Allocation(added=tuple(range(50)), total=50))
            await cached_ids(conn, 50)
            await conn.send(parameters(2))
            await conn.send(Work(iteration=3, parameter_version=3, seconds=0.1))
            result = await conn.expect(ResultFrame)
            assert (result.parameter_version, result.samples) == (3, 0)
            await conn.close(CloseCode.NORMAL)


@pytest.mark.trio
async def test_project_changed_rebuilds_the_net() -> None:
    grown = [dict(layer) for layer in SPEC]
    grown[-2] = {**grown[-2], "num_neurons": 11}
    grown[-1] = {**grown[-1], "num_classes": 11}
    grown_count = Net(grown).num_params
    with trio.fail_after(20):
        async with fake_master() as master, running_worker(master.port) as run:
            conn, _ = await greet(master)
            await conn.send(Allocation(added=tuple(range(40)), total=40))
            await cached_ids(conn, 40)
            await conn.send(ProjectChanged(project=project_info(grown, version=4, labels=11)))
            await conn.send(parameters(4, grown_count))
            await conn.send(Work(iteration=4, parameter_version=4, samples=10))
            result = await conn.expect(ResultFrame)
            assert result.vector.size == grown_count and result.samples == 10
            assert run.worker.net is not None and run.worker.net.num_params == grown_count
            await conn.close(CloseCode.NORMAL)


@pytest.mark.trio
async def test_reconnects_with_backoff_after_the_master_goes_away() -> None:
    with trio.fail_after(20):
        async with fake_master() as master, running_worker(master.port) as run:
            conn, _ = await greet(master, worker_id=1)
            await conn.send(Allocation(added=tuple(range(30)), total=30))
            await cached_ids(conn, 30)
            closed_at = time.monotonic()
            await conn.send(Bye(reason="shutdown"))
            await conn.close(CloseCode.GOING_AWAY)
            # Second connection: a new hello, a new worker id; the cache survives.
            conn2 = await master.accept()
            delay = time.monotonic() - closed_at
            assert 0.02 <= delay < 2.0
            await conn2.expect(Hello)
            await conn2.send(welcome(worker_id=2))
            await conn2.send(Allocation(added=tuple(range(30)), total=30))
            report = await conn2.expect(CacheReport, skip=())
            assert set(report.cached) == set(range(30))
            # An abrupt drop (no close handshake) is retried too.
            await conn2.ws._stream.aclose()  # type: ignore[attr-defined]
            conn2.done.set()
            conn3 = await master.accept()
            await conn3.expect(Hello)
            await conn3.send(welcome(worker_id=3))
            await conn3.send(Allocation(added=tuple(range(30)), total=30))
            await conn3.send(parameters(1))
            await conn3.send(Work(iteration=1, parameter_version=1, samples=3))
            assert (await conn3.expect(ResultFrame)).samples == 3
            assert run.worker.sessions == 3
            assert "reconnecting in" in run.logs()
            await conn3.close(CloseCode.NORMAL)


@pytest.mark.trio
async def test_connection_refused_is_retried_until_stopped() -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with trio.fail_after(10):
        async with running_worker(port) as run:
            while run.logs().count("reconnecting in") < 3:
                await trio.sleep(0.05)
            run.worker.request_stop()
            await run.finished.wait()
        assert run.code == ExitCode.OK
        assert "nothing listens there (connection refused)" in run.logs()


@pytest.mark.trio
@pytest.mark.parametrize("code, error", [
    (CloseCode.NO_PROJECT, "unknown_project"),
    (CloseCode.VERSION_MISMATCH, "version_mismatch"),
])
async def test_refused_hello_is_final(code: int, error: str) -> None:
    with trio.fail_after(10):
        async with fake_master() as master, running_worker(master.port) as run:
            conn = await master.accept()
            await conn.expect(Hello)
            await conn.send(Error(code=error, message=f"refused: {error}"))  # type: ignore[arg-type]
            await conn.close(code)
            await run.finished.wait()
        assert run.code == ExitCode.REFUSED
        assert f"refused: {error}" in run.ended().reason
        assert run.worker.sessions == 0


@pytest.mark.trio
async def test_stop_closes_with_1000() -> None:
    with trio.fail_after(10):
        async with fake_master() as master, running_worker(master.port) as run:
            conn, _ = await greet(master)
            await conn.send(Allocation(added=tuple(range(20)), total=20))
            await cached_ids(conn, 20)
            # Stop in the middle of a long computation: the worker leaves at once.
            await conn.send(parameters(1))
            await conn.send(Work(iteration=1, parameter_version=1, seconds=20.0))
            await trio.sleep(0.2)
            started = time.monotonic()
            run.worker.request_stop()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await conn.receive()
            assert closed.value.reason.code == CloseCode.NORMAL
            await run.finished.wait()
            assert time.monotonic() - started < 2.0
            conn.done.set()
        assert run.code == ExitCode.OK


@pytest.mark.trio
async def test_stats_worker_starts_with_quick_subsets_and_reports_the_whole_set_every_kth() -> None:
    with trio.fail_after(20):
        async with fake_master() as master, running_worker(
                master.port, role="stats", stats_subset=50, stats_full_every=3,
                stats_share=1.0) as run:
            conn, _ = await greet(master, role="stats")
            await conn.send(Allocation(added=tuple(range(120)), total=120))
            sizes = []
            for version in range(1, 5):
                await conn.send(parameters(version))
                report = await conn.expect(StatsReport)
                assert report.parameter_version == version
                sizes.append(report.samples)
            assert sizes == [50, 50, 120, 50]  # the first is quick: the curve starts at once
            assert run.worker.results_sent == 4
            await conn.close(CloseCode.NORMAL)


@pytest.mark.trio
async def test_stats_worker_reports_test_error() -> None:
    with trio.fail_after(20):
        async with fake_master() as master, running_worker(master.port, role="stats") as run:
            conn, hello = await greet(master, role="stats")
            assert hello.role == "stats"
            await conn.send(parameters(1))  # before the test ids: nothing to evaluate yet
            await conn.send(Allocation(added=tuple(range(120)), total=120))
            report = await conn.expect(StatsReport)
            assert (report.parameter_version, report.iteration, report.samples) == (1, 1, 120)
            assert 0.0 <= report.error <= 1.0 and report.loss is not None
            net = Net(SPEC, seed=1)
            source = FakeSource()
            x = (source.pixels[:120].astype(np.float32) / 255.0) - 0.5
            stats = net.evaluate(x, source.labels[:120].astype(np.int64))
            assert report.error == pytest.approx(1 - stats.correct / 120)
            assert report.loss == pytest.approx(stats.loss / 120, rel=1e-5)
            await conn.send(parameters(2))
            report = await conn.expect(StatsReport)
            assert report.parameter_version == 2
            assert run.last_status().test_error == pytest.approx(report.error)
            await conn.close(CloseCode.NORMAL)


@pytest.mark.trio
async def test_tracker_keeps_the_latest_parameters() -> None:
    with trio.fail_after(20):
        async with fake_master() as master, running_worker(master.port, role="tracker") as run:
            conn, _ = await greet(master, role="tracker")
            for version in (1, 2, 3):
                await conn.send(parameters(version))
            while run.last_status().parameter_version != 3:
                await trio.sleep(0.01)
            assert run.worker.net is not None
            np.testing.assert_array_equal(run.worker.net.params, Net(SPEC, seed=3).params)
            assert run.last_status().phase == "tracking"
            await conn.close(CloseCode.NORMAL)


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    import random

    backoff = Backoff(0.5, 10.0, random.Random(0))
    delays = [backoff.next() for _ in range(8)]
    caps = [0.5, 1, 2, 4, 8, 10, 10, 10]
    for delay, cap in zip(delays, caps):
        assert cap / 2 <= delay <= cap
    backoff.reset()
    assert backoff.next() <= 0.5


def test_reachable_data_url() -> None:
    from mlitb.nodes._data import reachable_data_url

    assert reachable_data_url("http://127.0.0.1:8001", "ws://lab-pc:8000/") == \
        "http://lab-pc:8001"
    assert reachable_data_url("http://0.0.0.0:8001/x", "ws://10.0.0.5:8000") == \
        "http://10.0.0.5:8001/x"
    assert reachable_data_url("http://127.0.0.1:8001", "ws://localhost:8000") == \
        "http://127.0.0.1:8001"
    assert reachable_data_url("http://data:8001", "ws://lab-pc:8000") == "http://data:8001"
