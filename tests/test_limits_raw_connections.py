"""Issue 11's connection caps against raw TCP connections, beside a training node: the master's
port and the embedded data server's count every connection from its accept to its close, sent
anything or not. A real master with its data server (low caps), a real ``mlitb node join``
process on 127.0.0.1, and strangers on 127.0.0.2-4 (Linux routes all of 127/8 to lo) holding
raw sockets that send nothing, half a WebSocket upgrade, or half an HTTP request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from helpers.replay import PROJECT, node, write_digits
from test_limits_connections import HALF_AN_UPGRADE, closed_by_server, raw

from mlitb._connections import REFUSAL_TIMEOUT, ConnectionCaps, ConnectionLimits
from mlitb.cluster import ClusterAddress, open_store, serve_cluster
from mlitb.dataserver import DataClient, DataServerError
from mlitb.datasets import DIGITS_SPEC
from mlitb.master import Master
from mlitb.master._server import HELLO_TIMEOUT

TOKEN = "raw-connections-token"
HALF_A_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
STALLED_BODY = (f"POST /projects/{PROJECT}/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: text/plain\r\nContent-Length: 100\r\n\r\n").encode()


@asynccontextmanager
async def capped_cluster(tmp_path: Path, master_limits: ConnectionLimits,
                         data_caps: ConnectionCaps
                         ) -> AsyncIterator[tuple[Master, ClusterAddress]]:
    """A master and its data server with these caps, the digits project, a node training."""
    train_zip, test_zip = write_digits(tmp_path)
    master = Master(operator_token=TOKEN, connection_limits=master_limits)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(lambda task_status: serve_cluster(
            master, open_store(tmp_path / "data"), "127.0.0.1", 0, 0,
            data_connection_limits=data_caps, task_status=task_status))
        master.create_project(PROJECT, DIGITS_SPEC, iteration_time=0.5, optimizer="adam",
                              hyperparameters={"learning_rate": 0.01})
        client = DataClient(address.data_url, token=TOKEN)
        await trio.to_thread.run_sync(lambda: client.upload(PROJECT, train_zip))
        await trio.to_thread.run_sync(lambda: client.upload(PROJECT, test_zip, split="test"))
        async with node(address, tmp_path):
            while master.projects[PROJECT].parameter_version < 2:  # trains before the strangers
                await trio.sleep(0.1)
            yield master, address
        nursery.cancel_scope.cancel()


async def read_answer(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes."""
    answer = b""
    with trio.fail_after(REFUSAL_TIMEOUT + 2):
        while chunk := await stream.receive_some(65536):
            answer += chunk
    return answer


@pytest.mark.trio
async def test_strangers_that_never_upgrade_fill_the_masters_cap_and_the_node_trains_on(
        tmp_path: Path) -> None:
    data_caps = ConnectionCaps(server="the data server")
    with trio.fail_after(120):
        async with capped_cluster(tmp_path, ConnectionLimits(max_connections=8,
                                                             max_per_address=4),
                                  data_caps) as (master, address):
            project, caps = master.projects[PROJECT], master.caps
            assert master.port is not None
            port = master.port
            trainers = project.trainers()
            assert caps.total == 1 and len(trainers) == 1  # the node's worker
            start = project.parameter_version
            strangers = [await raw(port, "127.0.0.2"), await raw(port, "127.0.0.2"),
                         await raw(port, "127.0.0.2", HALF_AN_UPGRADE),
                         await raw(port, "127.0.0.2", HALF_AN_UPGRADE)]
            strangers += [await raw(port, "127.0.0.3") for _ in range(3)]
            while caps.total < 8:
                await trio.sleep(0.01)
            assert dict(caps.per_address) == {"127.0.0.1": 1, "127.0.0.2": 4, "127.0.0.3": 3}
            # Over the per-address cap, and over the total from a fresh address: closed (within
            # the refusal deadline: they never upgrade to hear 4008).
            over = [await raw(port, "127.0.0.2"), await raw(port, "127.0.0.4", HALF_AN_UPGRADE)]
            closed = []

            async def watch(stream: trio.SocketStream) -> None:
                closed.append(await closed_by_server(stream, REFUSAL_TIMEOUT + 1.5))

            async with trio.open_nursery() as watching:
                for stream in over:
                    watching.start_soon(watch, stream)
            assert closed == [True, True] and caps.refused == 2
            # The client side leaves (127.0.0.2) or the upgrade deadline closes them (.3).
            for stream in strangers[:4]:
                await stream.aclose()
            for stream in strangers[4:]:
                assert await closed_by_server(stream, HELLO_TIMEOUT + 2)
            while caps.total > 1:
                await trio.sleep(0.01)
            assert dict(caps.per_address) == {"127.0.0.1": 1} and not caps.refusals
            # The node trained all along, never dropped.
            assert project.parameter_version - start >= 3, (start, project.parameter_version)
            assert project.trainers() == trainers
            assert not [e for e in master.events if e.kind in ("lost", "left", "error")]
    assert caps.total == 0 and not caps.per_address
    assert data_caps.total == 0 and not data_caps.per_address


@pytest.mark.trio
async def test_the_data_servers_cap_answers_503_and_batches_are_served_meanwhile(
        tmp_path: Path) -> None:
    data_caps = ConnectionCaps(ConnectionLimits(max_connections=6, max_per_address=3),
                               server="the data server")
    with trio.fail_after(120):
        async with capped_cluster(tmp_path, ConnectionLimits(), data_caps) as (master,
                                                                                address):
            project = master.projects[PROJECT]
            start = project.parameter_version
            data_port = int(address.data_url.rsplit(":", 1)[1])
            client = DataClient(address.data_url, token=TOKEN)

            def batch() -> int:
                return len(client.batch(PROJECT, [0, 1, 2]).ids)

            # The node's downloads are done (no connection for a second): the counts below
            # are the strangers' and this test's own.
            quiet_since = trio.current_time()
            while trio.current_time() - quiet_since < 1.0:
                if data_caps.total:
                    quiet_since = trio.current_time()
                await trio.sleep(0.005)

            # Strangers hold places with a request whose body never comes (its deadline is
            # 30 s; a silent connection's is 5 s, too short to count on here).
            strangers = [await raw(data_port, "127.0.0.2", STALLED_BODY) for _ in range(3)]
            while data_caps.per_address["127.0.0.2"] < 3:
                await trio.sleep(0.01)
            # The fourth from that address is answered 503 with a reason and Retry-After...
            over = await raw(data_port, "127.0.0.2", HALF_A_REQUEST + b"\r\n")
            answer = await read_answer(over)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert b"\r\nRetry-After: 5\r\n" in answer
            assert b"at most 3 connections per address; 127.0.0.2 has that many" in answer
            # ...and a raw one that sends nothing is closed at the refusal deadline.
            assert await closed_by_server(await raw(data_port, "127.0.0.2"),
                                          REFUSAL_TIMEOUT + 1.5)
            # Another address is served: batches for the node and any client.
            assert await trio.to_thread.run_sync(batch) == 3

            strangers += [await raw(data_port, "127.0.0.3", STALLED_BODY) for _ in range(3)]
            while data_caps.total < 6:
                await trio.sleep(0.01)
            with pytest.raises(DataServerError) as busy:
                await trio.to_thread.run_sync(batch)
            assert busy.value.status == 503
            assert "the data server serves 6 connections at most" in str(busy.value)
            for stream in strangers[3:]:
                await stream.aclose()
            while data_caps.total > 3:
                await trio.sleep(0.01)
            assert await trio.to_thread.run_sync(batch) == 3  # room again
            for stream in strangers[:3]:
                await stream.aclose()
            # One that stays silent is closed by the idle deadline (5 s keep-alive).
            silent, opened = await raw(data_port, "127.0.0.2"), trio.current_time()
            assert await closed_by_server(silent, 10)
            assert trio.current_time() - opened >= 4.5
            while data_caps.total:
                await trio.sleep(0.01)
            assert not data_caps.per_address and not data_caps.refusals
            # And some of the node's own requests: its downloads open a connection each, and
            # a closed one counts until the server has read the close (the node retries).
            assert data_caps.refused >= 3
            assert project.parameter_version - start >= 3
            assert not [e for e in master.events if e.kind in ("lost", "left", "error")]


@pytest.mark.trio
async def test_the_data_servers_default_caps_let_a_classroom_behind_one_address_in(
        tmp_path: Path) -> None:
    """600 keep-alive connections from one address at once (100 machines behind a NAT, each
    browser holding its 6 to the data port), every one answered."""
    import resource

    from mlitb.dataserver import serve_data_server

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * 600 + 512  # both ends of every connection live in this process
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"600 connections need {needed} file descriptors here; the hard limit "
                        f"is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    caps = ConnectionCaps(server="the data server")
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(partial(
                    serve_data_server, open_store(tmp_path / "data"), "127.0.0.1", 0,
                    connection_limits=caps))
                answers: list[bytes] = []
                streams: list[trio.SocketStream] = []
                peak = 0

                async def ask() -> None:
                    # Connect and ask at once: an idle connection is closed after 5 s, and on
                    # a loaded machine 600 opened one by one may take that long.
                    nonlocal peak
                    stream = await raw(port, "127.0.0.1", b"GET /healthz HTTP/1.1\r\n"
                                       b"Host: 127.0.0.1\r\n\r\n")
                    streams.append(stream)
                    answers.append(await stream.receive_some(65536))
                    peak = max(peak, caps.total)

                async with trio.open_nursery() as asking:
                    for _ in range(600):
                        asking.start_soon(ask)
                assert len(answers) == 600 and caps.refused == 0
                assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers)
                assert peak == 600  # all held at once, kept alive
                for stream in streams:
                    await stream.aclose()
                while caps.total:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
