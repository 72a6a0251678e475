"""What mlitb adds to trio-websocket (and wsproto under it): two costs of the master's hot path.

Measured at 1,000 simulated trainers (mlitb/bench/loop.py; docs/performance.md, "The master at many
workers"), the master spends its rounds in the WebSocket layer, not in the reduce:

- **Masking.** Every frame a client sends is XOR-masked with a 4-byte key (RFC 6455 §5.3) and
  the server unmasks it. wsproto does that in pure Python (``XorMaskerSimple``: four strided
  ``bytearray.translate`` passes), 0.3-0.5 ms for one 290 KB result frame on this project's
  2-core machine. ``NumpyXorMasker`` computes the same bytes with one vectorized XOR (~15 µs);
  ``install()`` puts it in wsproto's place (the master, nodes and the CLI/console client call it
  where they import trio-websocket). It keeps wsproto's contract exactly: ``process(data)``
  returns a new ``bytearray`` and the key rotates by ``len(data) % 4`` so that a payload can be
  processed in chunks. If wsproto ever drops the class, ``install()`` leaves wsproto as it is.
- **One write per batch.** ``WebSocketConnection.send_message`` writes each message with its own
  socket ``send`` and trio schedule point; a round gives each trainer two messages (the parameters
  frame and its work order). ``send_messages`` frames every message with the connection's own
  wsproto state and writes them all with one ``send_all`` under the connection's send lock, which
  is what ``send_message`` does message by message. It needs five attributes of trio-websocket's
  ``WebSocketConnection`` that are not public API (``_wsproto``, ``_stream``, ``_stream_lock``,
  ``_close_reason``, ``_abort_web_socket``); where they are missing it falls back to
  ``send_message`` per message, and tests/test_websocket.py fails if the fast path is not taken
  with the trio-websocket installed.
- **No Pong after our Close.** trio-websocket answers a Ping even after the connection sent its
  Close frame; wsproto refuses that (``LocalProtocolError``), and the error escapes the
  connection's nursery (trio-websocket issue #184, unfixed in 0.12). A master that pings an
  idle client at the moment the client closes hit it. RFC 6455 §5.5.2 owes no Pong once a Close
  was sent, so ``install()`` makes the ping handler answer only while the connection is open.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, Ping, TextMessage

_installed = False
replaced: type | None = None
"""wsproto's own masker, once ``install()`` has taken its place (for the equivalence tests)."""


class NumpyXorMasker:
    """A drop-in for ``wsproto.frame_protocol.XorMaskerSimple``."""

    def __init__(self, masking_key: bytes | bytearray) -> None:
        self._masking_key = bytes(masking_key)

    def process(self, data: bytes | bytearray) -> bytearray:
        out = bytearray(data)
        n = len(out)
        if not n:
            return out
        key = self._masking_key
        whole = n - n % 4
        if whole:
            words = np.frombuffer(out, dtype=np.uint32, count=whole // 4)
            # XOR is bytewise, so the byte order of the 32-bit view does not matter as long as
            # the key is viewed the same way.
            np.bitwise_xor(words, np.frombuffer(key, dtype=np.uint32)[0], out=words)
        for i in range(whole, n):
            out[i] ^= key[i - whole]
        rotation = n % 4
        self._masking_key = key[rotation:] + key[:rotation]
        return out


def install() -> bool:
    """Make wsproto mask and unmask with ``NumpyXorMasker`` (True if it is in place), and
    trio-websocket answer pings only while the connection is open."""
    global _installed, replaced
    if _installed:
        return True
    _answer_pings_only_while_open()
    from wsproto import frame_protocol

    original = getattr(frame_protocol, "XorMaskerSimple", None)
    if original is None or not callable(getattr(original, "process", None)):
        return False
    replaced = original
    frame_protocol.XorMaskerSimple = NumpyXorMasker  # type: ignore[misc,assignment]
    _installed = True
    return True


def _answer_pings_only_while_open() -> None:
    handler = getattr(WebSocketConnection, "_handle_ping_event", None)
    if handler is None or getattr(handler, "_mlitb", False):
        return

    async def handle_ping(self: WebSocketConnection, event: Ping) -> None:
        protocol = getattr(self, "_wsproto", None)
        if protocol is not None and protocol.state is not ConnectionState.OPEN:
            return  # our Close is sent (or theirs came): no Pong is owed, wsproto would refuse
        await handler(self, event)

    handle_ping._mlitb = True  # type: ignore[attr-defined]
    WebSocketConnection._handle_ping_event = handle_ping  # type: ignore[method-assign]


_INTERNALS = ("_wsproto", "_stream", "_stream_lock", "_close_reason", "_abort_web_socket")


def batches_writes(ws: WebSocketConnection) -> bool:
    """Whether ``send_messages`` writes a batch at once on ``ws`` (else message by message)."""
    return all(hasattr(ws, name) for name in _INTERNALS)


async def send_messages(ws: WebSocketConnection, messages: Sequence[str | bytes]) -> None:
    """Send ``messages`` in order, as ``ws.send_message`` would one by one, in one write.

    Raises ``ConnectionClosed`` like ``send_message``: before writing if the connection is
    closing, and when the peer's side of the stream is gone (after aborting the connection, as
    trio-websocket does)."""
    if not batches_writes(ws):
        for message in messages:
            await ws.send_message(message)
        return
    if ws._close_reason:
        raise ConnectionClosed(ws._close_reason)
    protocol = ws._wsproto
    wire = b"".join(protocol.send(TextMessage(data=m) if isinstance(m, str) else
                                  BytesMessage(data=m)) for m in messages)
    async with ws._stream_lock:
        try:
            await ws._stream.send_all(wire)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            raise ConnectionClosed(ws._close_reason) from None
