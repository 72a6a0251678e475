"""A master over real WebSockets on loopback and a protocol client written from docs/protocol.md
(tests of the master, its limits, hostile clients, the wire)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import trio
from trio_websocket import open_websocket_url

from mlitb.master import Master
from mlitb.protocol import (
    MAX_LARGE_TEXT_FRAME,
    Ack,
    CreateProject,
    DataRegistered,
    Hello,
    RegisterData,
    Status,
    Welcome,
    decode_frame,
    decode_text,
    encode_text,
)

TOKEN = "test-token"
SPEC = [
    {"type": "input", "out_sx": 1, "out_sy": 1, "out_depth": 4},
    {"type": "fc", "num_neurons": 5, "activation": "relu"},
    {"type": "softmax", "num_classes": 3},
]
N_PARAMS = 4 * 5 + 5 + 5 * 3 + 3


class Client:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, message: Any) -> None:
        await self.ws.send_message(message if isinstance(message, (bytes, str))
                                   else encode_text(message))

    async def receive(self) -> Any:
        data = await self.ws.get_message()
        if isinstance(data, bytes):
            return decode_frame(data)
        return decode_text(data, max_size=MAX_LARGE_TEXT_FRAME)

    async def expect(self, kind: type, skip: tuple[type, ...] = (Status,)) -> Any:
        while True:
            message = await self.receive()
            if isinstance(message, kind):
                return message
            if not isinstance(message, skip):
                raise AssertionError(f"expected {kind.__name__}, got {message!r}")

    async def request(self, message: Any) -> Any:
        await self.send(message)
        while True:
            reply = await self.receive()
            if getattr(reply, "request_id", None) == message.request_id:
                return reply


@asynccontextmanager
async def client(port: int, **hello: Any) -> AsyncIterator[Client]:
    async with open_websocket_url(f"ws://127.0.0.1:{port}/",
                                  max_message_size=MAX_LARGE_TEXT_FRAME) as ws:
        c = Client(ws)
        await c.send(Hello(client="python", host="test", **hello))
        yield c


@asynccontextmanager
async def running_master(**kwargs: Any) -> AsyncIterator[tuple[Master, int]]:
    master = Master(operator_token=TOKEN, **kwargs)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(master.serve, "127.0.0.1", 0)
        yield master, port
        nursery.cancel_scope.cancel()


async def make_project(port: int, name: str = "p", t: float = 1.0, **kw: Any) -> None:
    async with client(port, role="operator", token=TOKEN) as op:
        welcome = await op.expect(Welcome)
        assert welcome.authorized
        reply = await op.request(CreateProject(request_id="c", name=name, spec=tuple(SPEC),
                                               iteration_time=t, **kw))
        assert isinstance(reply, Ack), reply
        reply = await op.request(RegisterData(request_id="d", project=name, ids=tuple(range(10)),
                                              label_names=("a", "b", "c"),
                                              labels=tuple(i % 3 for i in range(10))))
        assert isinstance(reply, DataRegistered)
        assert reply.labels == ("a", "b", "c") and reply.train == 10
