"""mlitb/_transport.py on real sockets: the outbox, the keepalive against a master that stops
answering (it vanished without closing), and a node that notices it and reconnects."""

from __future__ import annotations

from functools import partial

import pytest
import trio
from trio_websocket import open_websocket, serve_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.events import Message as WsMessage

from mlitb._transport import Outbox, keepalive, open_master
from mlitb.errors import MasterUnreachableError
from mlitb.protocol import Hello, ProjectInfo, Welcome, decode_text, encode_text


class SilentMaster:
    """A raw WebSocket server: it accepts, answers the hello with ``welcome`` (if any), then
    never reads again, so no ping is ever answered (a host that vanished)."""

    def __init__(self, welcome: Welcome | None = None) -> None:
        self.welcome = welcome
        self.hellos: list[Hello] = []
        self.accepted = 0

    async def serve(self, stream: trio.SocketStream) -> None:
        protocol = WSConnection(ConnectionType.SERVER)
        self.accepted += 1
        greeted = False
        while not greeted:
            data = await stream.receive_some(65536)
            if not data:
                return
            protocol.receive_data(data)
            for event in protocol.events():
                if isinstance(event, Request):
                    await stream.send_all(protocol.send(AcceptConnection()))
                    if self.welcome is None:
                        greeted = True
                elif isinstance(event, WsMessage):
                    hello = decode_text(event.data)
                    assert isinstance(hello, Hello)
                    self.hellos.append(hello)
                    if self.welcome is not None:
                        await stream.send_all(protocol.send(TextMessage(
                            data=encode_text(self.welcome))))
                    greeted = True
        await trio.sleep_forever()  # holds the socket open, reads nothing


async def _listen(nursery: trio.Nursery, handler: object) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


def test_the_keepalive_returns_when_the_master_stops_answering_pings() -> None:
    async def main() -> float:
        silent = SilentMaster()
        async with trio.open_nursery() as nursery:
            port = await _listen(nursery, silent.serve)
            async with open_master(f"ws://127.0.0.1:{port}/", close_timeout=0.2) as ws:
                started = trio.current_time()
                with trio.fail_after(5):
                    await keepalive(ws, interval=0.2, timeout=0.3, quiet=lambda: 1e9,
                                    heard=lambda: pytest.fail("a silent master answered"))
                took = trio.current_time() - started
            nursery.cancel_scope.cancel()
        return took

    took = trio.run(main)
    assert 0.45 <= took < 2.0  # one interval, then one unanswered ping's timeout


def test_the_keepalive_goes_on_while_pings_are_answered_and_skips_a_peer_just_heard() -> None:
    heard: list[float] = []

    async def main() -> bool:
        async def handler(request: object) -> None:
            await request.accept()  # type: ignore[attr-defined]
            await trio.sleep_forever()  # trio-websocket answers pings by itself

        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as ws:
                returned = False
                with trio.move_on_after(1.0):
                    await keepalive(ws, interval=0.1, timeout=0.5, quiet=lambda: 1e9,
                                    heard=lambda: heard.append(trio.current_time()))
                    returned = True
                pings = len(heard)
                with trio.move_on_after(0.5):  # heard a moment ago: no pings at all
                    await keepalive(ws, interval=0.1, timeout=0.5, quiet=lambda: 0.0,
                                    heard=lambda: heard.append(trio.current_time()))
                assert len(heard) == pings
            nursery.cancel_scope.cancel()
        return returned

    assert trio.run(main) is False
    assert len(heard) >= 4


def test_the_outbox_writes_in_order_and_refuses_when_full() -> None:
    received: list[str | bytes] = []

    async def main() -> None:
        async def handler(request: object) -> None:
            ws = await request.accept()  # type: ignore[attr-defined]
            for _ in range(5):
                received.append(await ws.get_message())

        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as ws:
                outbox = Outbox(4)
                assert all(outbox.put(m) for m in ("a", b"b", "c", "d"))
                assert outbox.put("e") is False  # full: the caller decides (the master drops)
                nursery.start_soon(outbox.run, ws)
                with trio.fail_after(5):
                    while len(received) < 4:
                        await trio.sleep(0.01)
                assert outbox.put("f")
                outbox.close()
                assert outbox.put("g")  # closed: nothing to say any more, not an error
                with trio.fail_after(5):
                    while len(received) < 5:
                        await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert received == ["a", b"b", "c", "d", "f"]


def test_open_master_names_what_is_wrong_and_lets_the_blocks_errors_through() -> None:
    async def main() -> None:
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.close()  # nothing listens there now
        with pytest.raises(MasterUnreachableError, match="nothing listens there"):
            async with open_master(f"ws://127.0.0.1:{port}/"):
                pass
        silent = SilentMaster()
        async with trio.open_nursery() as nursery:
            port = await _listen(nursery, silent.serve)
            with pytest.raises(OSError, match="from the block"):
                async with open_master(f"ws://127.0.0.1:{port}/", close_timeout=0.2):
                    raise OSError("from the block")
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_node_notices_a_master_gone_silent_and_connects_again() -> None:
    from mlitb.nn import Net
    from mlitb.nodes import Worker, WorkerOptions
    from mlitb.nodes._reports import LogLine

    spec = [{"type": "input", "out_sx": 2, "out_sy": 2, "out_depth": 1},
            {"type": "softmax", "num_classes": 2}]
    info = ProjectInfo(name="p", state="running", spec=tuple(spec), labels=("a", "b"),
                       iteration_time=2.0, iteration=0, parameter_version=0,
                       parameter_count=Net(spec).num_params)
    silent = SilentMaster(Welcome(worker_id=1, role="tracker", data_url=None,
                                  server_version="0", project=info))
    lines: list[str] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await _listen(nursery, silent.serve)
            worker = Worker(WorkerOptions(url=f"ws://127.0.0.1:{port}/", role="tracker",
                                          project="p", ping_interval=0.2, backoff_initial=0.05,
                                          backoff_max=0.1, close_timeout=0.2),
                            report=lambda e: lines.append(e.text)
                            if isinstance(e, LogLine) else None)
            nursery.start_soon(worker.run)
            with trio.fail_after(10):
                while silent.accepted < 2:
                    await trio.sleep(0.02)
            worker.request_stop()
            nursery.cancel_scope.deadline = trio.current_time() + 3

    trio.run(main)
    assert any("the master did not answer a ping within 0.2 s" in line for line in lines), lines
    assert len(silent.hellos) >= 2 and silent.hellos[0].role == "tracker"
