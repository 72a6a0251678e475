"""The node as a real process tree (``python -m mlitb.nodes join ...``) against the fake master:
worker processes connect and answer work orders, SIGINT makes every worker close with 1000 and
the node exit 0, and a node whose workers are all refused exits non-zero with a clear message."""

from __future__ import annotations

import signal
import sys
import time

import pytest
import trio
from helpers.nodes import NodeProcess, node_command, start_node
from test_node_worker import PROJECT, Conn, fake_master, greet, parameters
from trio_websocket import ConnectionClosed

from mlitb.protocol import CloseCode, Error, Hello, ResultFrame, Work


async def open_node(nursery: trio.Nursery, port: int, *args: str) -> NodeProcess:
    return await start_node(nursery, node_command(port, *args))


@pytest.mark.trio
async def test_workers_train_and_sigint_leaves_cleanly() -> None:
    with trio.fail_after(60):
        async with fake_master() as master, trio.open_nursery() as nursery:
            node = await open_node(nursery, master.port, "--workers", "2")
            try:
                conns: list[Conn] = []
                hosts = set()
                for worker_id in (11, 12):
                    conn, hello = await greet(master, worker_id=worker_id)
                    assert (hello.role, hello.client, hello.project) == \
                        ("trainer", "python", PROJECT)
                    hosts.add(hello.host)
                    conns.append(conn)
                assert len(hosts) == 1
                for conn in conns:  # no data allocated: an empty but valid result each
                    await conn.send(parameters(1))
                    await conn.send(Work(iteration=1, parameter_version=1, seconds=0.1))
                    result = await conn.expect(ResultFrame)
                    assert (result.parameter_version, result.samples) == (1, 0)

                started = time.monotonic()
                node.process.send_signal(signal.SIGINT)
                for conn in conns:
                    with pytest.raises(ConnectionClosed) as closed:
                        while True:
                            await conn.receive()
                    assert closed.value.reason.code == CloseCode.NORMAL
                    conn.done.set()
                code = await node.process.wait()
                assert time.monotonic() - started < 4.0
            finally:
                if node.process.returncode is None:
                    node.process.kill()
            nursery.cancel_scope.deadline = trio.current_time() + 2
        assert code == 0, node.text
        assert "left the master: 2 of 2 workers closed cleanly" in node.text
        assert "Traceback" not in node.text


@pytest.mark.trio
async def test_all_workers_refused_exits_2_with_the_reason() -> None:
    with trio.fail_after(60):
        async with fake_master() as master, trio.open_nursery() as nursery:
            node = await open_node(nursery, master.port, "--task", "stats")
            try:
                conn = await master.accept()
                hello = await conn.expect(Hello)
                assert hello.role == "stats"
                await conn.send(Error(code="unknown_project",
                                      message=f"no project named {PROJECT!r}"))
                await conn.close(CloseCode.NO_PROJECT)
                code = await node.process.wait()
            finally:
                if node.process.returncode is None:
                    node.process.kill()
            nursery.cancel_scope.deadline = trio.current_time() + 2
        assert code == 2, node.text
        assert "the worker stopped" in node.text  # --task stats: one worker by default
        assert "no project named 'digits'" in node.text
        assert "Traceback" not in node.text


def children_of(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    try:
        with open(path) as file:
            return [int(p) for p in file.read().split()]
    except OSError:
        pytest.skip("needs Linux's /proc/PID/task/PID/children")


@pytest.mark.trio
async def test_killed_workers_are_reported_and_the_node_ends_when_all_died() -> None:
    with trio.fail_after(60):
        async with fake_master() as master, trio.open_nursery() as nursery:
            node = await open_node(nursery, master.port, "--workers", "2")
            try:
                conns = [(await greet(master, worker_id=i))[0] for i in (1, 2)]
                workers = children_of(node.process.pid)
                workers = [pid for pid in workers
                           if "resource_tracker" not in open(f"/proc/{pid}/cmdline").read()]
                assert len(workers) == 2
                import os

                os.kill(workers[0], signal.SIGKILL)
                while "died (exit code -9)" not in node.text:
                    await trio.sleep(0.05)
                assert node.process.returncode is None  # the other worker goes on
                os.kill(workers[1], signal.SIGKILL)
                code = await node.process.wait()
                for conn in conns:
                    conn.done.set()
            finally:
                if node.process.returncode is None:
                    node.process.kill()
            nursery.cancel_scope.deadline = trio.current_time() + 2
        assert code == 1, node.text
        assert "all 2 workers stopped: the process died (exit code -9) (x2)" in node.text
        assert "Traceback" not in node.text


@pytest.mark.trio
async def test_a_node_killed_with_sigkill_takes_its_workers_with_it() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    with trio.fail_after(60):
        async with fake_master() as master, trio.open_nursery() as nursery:
            node = await open_node(nursery, master.port, "--workers", "2")
            try:
                conns = [(await greet(master, worker_id=i))[0] for i in (1, 2)]
                node.process.send_signal(signal.SIGKILL)
                started = time.monotonic()
                for conn in conns:  # lost, not left: no close handshake
                    with pytest.raises(ConnectionClosed) as closed:
                        while True:
                            await conn.receive()
                    assert closed.value.reason.code == 1006
                    conn.done.set()
                assert time.monotonic() - started < 2.0
            finally:
                if node.process.returncode is None:
                    node.process.kill()
            nursery.cancel_scope.deadline = trio.current_time() + 2


@pytest.mark.trio
async def test_stopping_the_node_stops_its_workers_and_continuing_continues_them() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads the parent's state from /proc")
    with trio.fail_after(60):
        async with fake_master() as master, trio.open_nursery() as nursery:
            node = await open_node(nursery, master.port, "--workers", "1")
            try:
                conn, _ = await greet(master)
                node.process.send_signal(signal.SIGSTOP)
                await trio.sleep(0.8)  # the worker notices within 0.2 s and stops itself
                await conn.send(parameters(1))
                await conn.send(Work(iteration=1, parameter_version=1, seconds=0.01))
                with trio.move_on_after(1.0) as silent:
                    await conn.expect(ResultFrame)
                assert silent.cancelled_caught, "a worker of a stopped node answered"
                node.process.send_signal(signal.SIGCONT)
                with trio.fail_after(5):
                    result = await conn.expect(ResultFrame)
                assert result.parameter_version == 1
                node.process.send_signal(signal.SIGINT)
                assert await node.process.wait() == 0
                conn.done.set()
            finally:
                if node.process.returncode is None:
                    node.process.send_signal(signal.SIGCONT)
                    node.process.kill()
            nursery.cancel_scope.deadline = trio.current_time() + 2
