"""Connection caps on the master (issue 11): every TCP connection counts from its accept to its
close, upgraded or not; over its cap in total or per remote address, a connection is closed
with 4008 TOO_MANY_CONNECTIONS after its upgrade (or at once, when 64 are being refused
already) and the connections already open keep working. Real WebSockets and raw sockets on
loopback; clients come from several loopback addresses (Linux routes all of 127/8 to lo) to
tell "per address" from "in total"."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from helpers.master import TOKEN, Client, running_master
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from mlitb._connections import REFUSAL_TIMEOUT, REFUSALS_AT_ONCE
from mlitb.master import Master
from mlitb.master._caps import ConnectionCaps, ConnectionLimits, address_key, fit_to_fd_limit
from mlitb.protocol import (
    MAX_LARGE_TEXT_FRAME,
    CloseCode,
    Hello,
    ListProjects,
    ProjectList,
    Welcome,
)


async def connect(nursery: trio.Nursery, port: int, source: str) -> WebSocketConnection:
    """A WebSocket to the master on 127.0.0.1 from the loopback address ``source``."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    return await wrap_client_stream(nursery, stream, "127.0.0.1", "/",
                                    max_message_size=MAX_LARGE_TEXT_FRAME)


async def operator(nursery: trio.Nursery, port: int, source: str) -> Client:
    c = Client(await connect(nursery, port, source))
    await c.send(Hello(role="operator", client="python", host="caps", token=TOKEN))
    assert (await c.expect(Welcome)).authorized
    return c


async def still_works(c: Client) -> None:
    reply = await c.request(ListProjects(request_id="l"))
    assert isinstance(reply, ProjectList)


async def refused(nursery: trio.Nursery, port: int, source: str) -> str:
    """Connect from ``source``, expect the 4008 close before any message; its reason."""
    ws = await connect(nursery, port, source)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert closed.value.reason.code == CloseCode.TOO_MANY_CONNECTIONS == 4008
    return closed.value.reason.reason or ""


@pytest.mark.trio
async def test_over_the_per_address_and_total_caps_a_connection_gets_4008_and_others_go_on():
    limits = ConnectionLimits(max_connections=4, max_per_address=2)
    with trio.fail_after(30):
        async with running_master(connection_limits=limits) as (master, port), \
                trio.open_nursery() as nursery:
            # One that never says hello counts too: strangers hold sockets as well.
            silent = await connect(nursery, port, "127.0.0.1")
            first = await operator(nursery, port, "127.0.0.1")
            reason = await refused(nursery, port, "127.0.0.1")
            assert "per address" in reason and "127.0.0.1" in reason, reason
            await still_works(first)

            others = [await operator(nursery, port, "127.0.0.2") for _ in range(2)]
            reason = await refused(nursery, port, "127.0.0.3")  # a fresh address, but 4 open
            assert "4 connections at most" in reason, reason
            for c in [first, *others]:
                await still_works(c)
            assert master.caps.total == 4 and master.caps.refused == 2

            # A connection that ends frees its place (after the hello or before it).
            await silent.aclose()
            while master.caps.total > 3:
                await trio.sleep(0.01)
            again = await operator(nursery, port, "127.0.0.1")
            await still_works(again)
            await others[0].ws.aclose()
            while master.caps.total > 3:
                await trio.sleep(0.01)
            await still_works(await operator(nursery, port, "127.0.0.3"))
            assert master.caps.per_address == {"127.0.0.1": 2, "127.0.0.2": 1, "127.0.0.3": 1}
            nursery.cancel_scope.cancel()


async def raw(port: int, source: str, data: bytes = b"") -> trio.SocketStream:
    """A TCP connection from ``source`` that sends ``data`` (or nothing) and no more."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    if data:
        await stream.send_all(data)
    return stream


async def closed_by_server(stream: trio.SocketStream, within: float) -> bool:
    """Whether the server closes ``stream`` within ``within`` seconds (what it sent before is
    skipped)."""
    with trio.move_on_after(within):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:  # reset: closed as well
            pass
        return True
    return False


HALF_AN_UPGRADE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"


@pytest.mark.trio
async def test_connections_that_never_finish_the_upgrade_count_and_over_the_cap_are_closed():
    """Strangers that connect and send nothing, or half an upgrade, hold places until their
    deadline; over the cap the next is closed (at once when 64 are being refused already);
    the count returns to 0 when they are gone."""
    limits = ConnectionLimits(max_connections=6, max_per_address=3)
    with trio.fail_after(60):
        async with running_master(connection_limits=limits) as (master, port), \
                trio.open_nursery() as nursery:
            caps = master.caps
            first = await operator(nursery, port, "127.0.0.2")
            strangers = [await raw(port, "127.0.0.2"), await raw(port, "127.0.0.2",
                                                                  HALF_AN_UPGRADE)]
            while caps.per_address["127.0.0.2"] < 3:
                await trio.sleep(0.01)
            # Over the per-address cap: a raw socket is let through to hear 4008, and closed
            # when it has not upgraded within REFUSAL_TIMEOUT; a WebSocket hears 4008.
            over = await raw(port, "127.0.0.2")
            started = trio.current_time()
            assert await closed_by_server(over, REFUSAL_TIMEOUT + 1.5)
            assert trio.current_time() - started >= REFUSAL_TIMEOUT - 0.5
            assert "per address" in await refused(nursery, port, "127.0.0.2")
            await still_works(first)

            strangers += [await raw(port, "127.0.0.3") for _ in range(3)]
            while caps.total < 6:
                await trio.sleep(0.01)
            assert "6 connections at most" in await refused(nursery, port, "127.0.0.4")
            # A flood over the total: 64 are held for their refusal, the next is closed at once.
            flood = [await raw(port, "127.0.0.4") for _ in range(REFUSALS_AT_ONCE)]
            while len(caps.refusals) < REFUSALS_AT_ONCE:
                await trio.sleep(0.01)
            assert await closed_by_server(await raw(port, "127.0.0.4"), 0.5)
            assert caps.total == 6 and dict(caps.per_address) == {"127.0.0.2": 3,
                                                                  "127.0.0.3": 3}
            await still_works(first)
            for stream in flood:
                await stream.aclose()

            # Some strangers leave, the others reach the upgrade deadline (10 s).
            for stream in strangers[:2]:
                await stream.aclose()
            while caps.total > 4:
                await trio.sleep(0.01)
            await still_works(await operator(nursery, port, "127.0.0.2"))
            for stream in strangers[2:]:
                assert await closed_by_server(stream, 12)
            await first.ws.aclose()
            while caps.total > 1:  # the operator of the line above
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert caps.total == 0 and not caps.per_address and not caps.refusals


@pytest.mark.trio
async def test_the_default_caps_let_a_classroom_behind_one_address_in():
    """200 browser tabs behind one NAT address, each a page connection and two trainers:
    600 connections from one address, all welcomed."""
    with trio.fail_after(60):
        async with running_master() as (master, port), AsyncExitStack() as stack:
            nursery = await stack.enter_async_context(trio.open_nursery())
            limiter = trio.CapacityLimiter(50)
            welcomed: list[Client] = []

            async def one() -> None:
                async with limiter:
                    welcomed.append(await operator(nursery, port, "127.0.0.1"))

            async with trio.open_nursery() as opening:
                for _ in range(600):
                    opening.start_soon(one)
            assert len(welcomed) == 600 and master.caps.refused == 0
            await still_works(welcomed[-1])
            nursery.cancel_scope.cancel()


def test_connection_caps_count_and_release_per_address() -> None:
    caps = ConnectionCaps(ConnectionLimits(max_connections=3, max_per_address=2))
    assert caps.admit("a") is None and caps.admit("a") is None
    assert "per address" in (caps.admit("a") or "")
    assert caps.admit("b") is None
    assert "3 connections at most" in (caps.admit("c") or "")
    caps.release("a")
    assert caps.admit("c") is None
    assert caps.total == 3 and dict(caps.per_address) == {"a": 1, "b": 1, "c": 1}
    assert caps.refused == 2
    for reason in ("x" * 200,):
        caps = ConnectionCaps(ConnectionLimits(max_connections=10, max_per_address=1))
        caps.admit(reason)
        assert len((caps.admit(reason) or "").encode()) <= 123  # fits a close frame


def test_address_keys_an_ipv6_host_by_its_64_and_a_mapped_ipv4_as_ipv4() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") \
        == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("/run/mlitb.sock") == "/run/mlitb.sock"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8"])
def test_connection_limits_refuse_what_is_not_a_count(bad: object) -> None:
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        ConnectionLimits(max_connections=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_per_address"):
        ConnectionLimits(max_per_address=bad)  # type: ignore[arg-type]


def ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) here")
@pytest.mark.trio
async def test_an_ipv6_client_counts_by_its_64() -> None:
    limits = ConnectionLimits(max_connections=4, max_per_address=1)
    master = Master(operator_token=TOKEN, connection_limits=limits)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(master.serve, "::1", 0)
            held = await trio.open_tcp_stream("::1", port)
            while master.caps.total < 1:
                await trio.sleep(0.01)
            assert dict(master.caps.per_address) == {"::/64": 1}
            ws = await wrap_client_stream(nursery, await trio.open_tcp_stream("::1", port),
                                          "::1", "/")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == CloseCode.TOO_MANY_CONNECTIONS
            assert "::/64 has that many" in (closed.value.reason.reason or "")
            await held.aclose()
            while master.caps.total:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


def test_fit_to_fd_limit_shares_the_descriptors_between_servers() -> None:
    import resource

    from mlitb._connections import FD_RESERVE
    from mlitb._connections import fit_to_fd_limit as fit_all

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        master, data = ConnectionLimits(10, 5), ConnectionLimits(20, 5)
        assert fit_all(master, data)[0] == (master, data)
        huge = (ConnectionLimits(10**9, 10**9), ConnectionLimits(3 * 10**9, 10))
        (m, d), now = fit_all(*huge)
        if hard != resource.RLIM_INFINITY:
            assert m.max_connections + d.max_connections + FD_RESERVE <= now <= hard
            assert 2.5 < d.max_connections / m.max_connections < 3.5  # in proportion
            assert m.max_per_address == m.max_connections and d.max_per_address == 10
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_fit_to_fd_limit_never_promises_more_connections_than_descriptors() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        fitted, now = fit_to_fd_limit(ConnectionLimits(max_connections=10, max_per_address=5))
        assert fitted == ConnectionLimits(max_connections=10, max_per_address=5)
        assert now >= 2 * 10 + 256 or now == hard
        huge = ConnectionLimits(max_connections=10**9, max_per_address=10**9)
        fitted, now = fit_to_fd_limit(huge)
        if hard != resource.RLIM_INFINITY:
            assert 2 * fitted.max_connections + 256 <= now <= hard
            assert fitted.max_per_address == fitted.max_connections
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_mlitb_master_offers_the_masters_default_caps() -> None:
    from mlitb.cli import _master as _cli_master
    from mlitb.master import _caps

    assert _cli_master.DEFAULT_MAX_CONNECTIONS == _caps.DEFAULT_MAX_CONNECTIONS
    assert _cli_master.DEFAULT_MAX_CONNECTIONS_PER_ADDRESS == \
        _caps.DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    # The data server's defaults are the same numbers (--max-data-connections...).
    assert _caps.DEFAULT_CONNECTION_LIMITS == ConnectionLimits(
        _cli_master.DEFAULT_MAX_CONNECTIONS, _cli_master.DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)


@pytest.mark.trio
async def test_a_node_refused_over_the_cap_retries_and_trains_once_there_is_room(
        tmp_path: Path) -> None:
    """4008 is not final: a real ``mlitb node join`` keeps retrying with backoff and gets in
    when a place frees."""
    import subprocess
    import sys

    from helpers.replay import PROJECT, write_digits

    from mlitb.cluster import open_store, serve_cluster
    from mlitb.dataserver import DataClient
    from mlitb.datasets import DIGITS_SPEC

    train_zip, _ = write_digits(tmp_path)
    master = Master(operator_token=TOKEN,
                    connection_limits=ConnectionLimits(max_connections=10, max_per_address=1))
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            address = await nursery.start(lambda task_status: serve_cluster(
                master, open_store(tmp_path / "data"), "127.0.0.1", 0, 0,
                task_status=task_status))
            master.create_project(PROJECT, DIGITS_SPEC, iteration_time=0.5)
            await trio.to_thread.run_sync(
                lambda: DataClient(address.data_url, token=TOKEN).upload(PROJECT, train_zip))
            assert master.port is not None
            holder = await operator(nursery, master.port, "127.0.0.1")  # the only place
            log_path = tmp_path / "node.log"
            with open(log_path, "w") as log:
                node = subprocess.Popen(
                    [sys.executable, "-m", "mlitb", "node", "join", address.master_url,
                     "--project", PROJECT, "--workers", "1"], stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                while master.caps.refused < 2:  # refused, and it came back
                    assert node.poll() is None, log_path.read_text()
                    await trio.sleep(0.1)
                assert master.projects[PROJECT].samples_trained == 0
                await holder.ws.aclose()
                while master.projects[PROJECT].parameter_version < 3:
                    assert node.poll() is None, log_path.read_text()
                    await trio.sleep(0.1)
            finally:
                node.kill()
                node.wait()
            assert "4008 (TOO_MANY_CONNECTIONS)" in log_path.read_text()
            nursery.cancel_scope.cancel()
