"""mlitb/_wsmask.py: the numpy masker gives wsproto's bytes exactly, chunk by chunk, and real
WebSocket messages still arrive intact through trio-websocket with it in place."""

from __future__ import annotations

import os

import trio
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import open_websocket, serve_websocket
from wsproto import frame_protocol

from mlitb import _wsmask


def wsproto_masker() -> type:
    assert _wsmask.install()
    assert _wsmask.replaced is not None
    return _wsmask.replaced


def test_install_puts_the_numpy_masker_in_wsprotos_place() -> None:
    assert _wsmask.install()
    assert frame_protocol.XorMaskerSimple is _wsmask.NumpyXorMasker
    assert _wsmask.replaced is not _wsmask.NumpyXorMasker
    assert _wsmask.install()  # idempotent


@given(key=st.binary(min_size=4, max_size=4),
       chunks=st.lists(st.binary(max_size=70), min_size=1, max_size=8))
def test_the_same_bytes_as_wsproto_chunk_by_chunk(key: bytes, chunks: list[bytes]) -> None:
    theirs, ours = wsproto_masker()(bytearray(key)), _wsmask.NumpyXorMasker(key)
    for chunk in chunks:
        expected = theirs.process(bytearray(chunk))
        got = ours.process(chunk)
        assert isinstance(got, bytearray)
        assert got == expected


def test_a_large_payload_and_its_unmasking() -> None:
    key = os.urandom(4)
    data = os.urandom(290_003)
    masked = _wsmask.NumpyXorMasker(key).process(data)
    assert masked == wsproto_masker()(bytearray(key)).process(bytearray(data))
    assert _wsmask.NumpyXorMasker(key).process(masked) == data  # XOR twice is the identity
    assert data != masked


def test_messages_cross_a_real_websocket_intact() -> None:
    _wsmask.install()
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
