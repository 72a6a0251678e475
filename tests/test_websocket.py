"""mlitb/_websocket.py: the numpy masker gives wsproto's bytes exactly, chunk by chunk, and real
WebSocket messages still arrive intact through trio-websocket with it in place; a batch sent in
one write arrives as the same messages in the same order."""

from __future__ import annotations

import os
from functools import partial

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, open_websocket, serve_websocket
from wsproto import frame_protocol

from mlitb import _websocket


def wsproto_masker() -> type:
    assert _websocket.install()
    assert _websocket.replaced is not None
    return _websocket.replaced


def test_install_puts_the_numpy_masker_in_wsprotos_place() -> None:
    assert _websocket.install()
    assert frame_protocol.XorMaskerSimple is _websocket.NumpyXorMasker
    assert _websocket.replaced is not _websocket.NumpyXorMasker
    assert _websocket.install()  # idempotent


@given(key=st.binary(min_size=4, max_size=4),
       chunks=st.lists(st.binary(max_size=70), min_size=1, max_size=8))
def test_the_same_bytes_as_wsproto_chunk_by_chunk(key: bytes, chunks: list[bytes]) -> None:
    theirs, ours = wsproto_masker()(bytearray(key)), _websocket.NumpyXorMasker(key)
    for chunk in chunks:
        expected = theirs.process(bytearray(chunk))
        got = ours.process(chunk)
        assert isinstance(got, bytearray)
        assert got == expected


def test_a_large_payload_and_its_unmasking() -> None:
    key = os.urandom(4)
    data = os.urandom(290_003)
    masked = _websocket.NumpyXorMasker(key).process(data)
    assert masked == wsproto_masker()(bytearray(key)).process(bytearray(data))
    assert _websocket.NumpyXorMasker(key).process(masked) == data  # XOR twice is the identity
    assert data != masked


def test_messages_cross_a_real_websocket_intact() -> None:
    _websocket.install()
    sizes = [0, 1, 3, 4, 5, 65_535, 65_536, 65_537, 290_003]
    messages = [os.urandom(n) for n in sizes]

    async def main() -> None:
        async def echo(request: object) -> None:
            ws = await request.accept()  # type: ignore[attr-defined]
            for _ in messages:
                await ws.send_message(await ws.get_message())

        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, echo, "127.0.0.1", 0, None)
            port = server.port
            async with open_websocket("127.0.0.1", port, "/", use_ssl=False,
                                      max_message_size=1 << 20) as ws:
                for message in messages:
                    await ws.send_message(message)  # masked by the client
                    assert await ws.get_message() == message
            nursery.cancel_scope.cancel()

    trio.run(main)


async def _pair(nursery: trio.Nursery, handler: object) -> object:
    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    return server.port


def test_a_batch_arrives_as_its_messages_in_order() -> None:
    batch: list[str | bytes] = [os.urandom(90_000), "work order", "", b"", os.urandom(70_001),
                                "caf\u00e9 \u2713"]
    received: list[str | bytes] = []

    async def main() -> None:
        done = trio.Event()

        async def sender(request: object) -> None:
            ws = await request.accept()  # type: ignore[attr-defined]
            assert _websocket.batches_writes(ws)  # the fast path, with this trio-websocket
            await _websocket.send_messages(ws, batch)
            await _websocket.send_messages(ws, ["after"])
            await done.wait()

        async with trio.open_nursery() as nursery:
            port = await _pair(nursery, sender)
            async with open_websocket("127.0.0.1", port, "/", use_ssl=False,
                                      max_message_size=1 << 20) as ws:
                for _ in range(len(batch) + 1):
                    received.append(await ws.get_message())
            done.set()
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert received == [*batch, "after"]
    assert [type(m) for m in received] == [type(m) for m in [*batch, "after"]]


def test_a_batch_to_a_closed_connection_raises_connection_closed() -> None:
    async def main() -> None:
        closed = trio.Event()
        outcome: list[BaseException] = []

        async def sender(request: object) -> None:
            ws = await request.accept()  # type: ignore[attr-defined]
            await closed.wait()
            with trio.fail_after(5):
                while True:  # until the close (or the broken stream) reaches this side
                    try:
                        await _websocket.send_messages(ws, [b"x" * 10_000, "y"])
                    except ConnectionClosed as exc:
                        outcome.append(exc)
                        return
                    await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            port = await _pair(nursery, sender)
            async with open_websocket("127.0.0.1", port, "/", use_ssl=False):
                pass
            closed.set()
            with trio.fail_after(10):
                while not outcome:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert isinstance(outcome[0], ConnectionClosed)

    trio.run(main)


class _OnlyPublic:
    """A connection with trio-websocket's public sending API only."""

    def __init__(self) -> None:
        self.sent: list[str | bytes] = []

    async def send_message(self, message: str | bytes) -> None:
        self.sent.append(message)


def test_without_the_internals_it_sends_message_by_message() -> None:
    ws = _OnlyPublic()
    assert not _websocket.batches_writes(ws)  # type: ignore[arg-type]
    trio.run(_websocket.send_messages, ws, [b"a", "b", b"c"])
    assert ws.sent == [b"a", "b", b"c"]


@pytest.mark.parametrize("n", [1, 64])
def test_the_masker_is_used_for_what_a_client_sends(n: int) -> None:
    """A client's frames are masked with ours (wsproto looks the class up per frame)."""
    from wsproto import frame_protocol

    _websocket.install()
    calls = []
    original = _websocket.NumpyXorMasker.process

    def counting(self: _websocket.NumpyXorMasker, data: bytes | bytearray) -> bytearray:
        calls.append(len(data))
        return original(self, data)

    try:
        _websocket.NumpyXorMasker.process = counting  # type: ignore[method-assign]
        protocol = frame_protocol.FrameProtocol(client=True, extensions=[])
        protocol.send_data(b"z" * n, True)
    finally:
        _websocket.NumpyXorMasker.process = original  # type: ignore[method-assign]
    assert calls == [n]


def test_a_ping_that_crosses_our_close_is_not_answered() -> None:
    """trio-websocket issue #184: a Ping that arrives after the client sent its Close used to
    be answered, wsproto refused the Pong and the client's nursery failed. A raw wsproto
    server here sends exactly that: a Ping after it read the client's Close, then its own."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request

    _websocket.install()
    pinged = trio.Event()

    async def server(stream: trio.SocketStream) -> None:
        protocol = WSConnection(ConnectionType.SERVER)
        closing = None
        while closing is None:
            data = await stream.receive_some(65536)
            if not data:
                return
            protocol.receive_data(data)
            for event in protocol.events():
                if isinstance(event, Request):
                    await stream.send_all(protocol.send(AcceptConnection()))
                elif isinstance(event, CloseConnection):
                    closing = event
        # A Ping frame (FIN, opcode 9, unmasked) written by hand: wsproto, having read the
        # Close, would refuse to send one, which is the race this test stands for.
        await stream.send_all(b"\x89\x04late")
        pinged.set()
        await trio.sleep(0.2)  # the client reads the Ping before the Close answer
        await stream.send_all(protocol.send(closing.response()))
        await stream.aclose()

    closed: list[bool] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, server, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
                await ws.send_message("hello")
            closed.append(pinged.is_set())  # (the failure ended the run without reaching here)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert closed == [True]
