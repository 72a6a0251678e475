"""WebSocket masking at numpy speed, for wsproto (under trio-websocket).

Every frame a client sends is XOR-masked with a 4-byte key (RFC 6455 §5.3), and the server
unmasks it. wsproto does that in pure Python (``XorMaskerSimple``: four strided
``bytearray.translate`` passes), about 0.3-0.5 ms for one 290 KB result frame on this project's
2-core machine: at 1,000 trainers that alone was a fifth of the master's CPU per round
(docs/performance.md, "The master at many workers"). ``NumpyXorMasker`` computes the same bytes
with one vectorized XOR (~15 µs).

``install()`` puts it in wsproto's place; the master, nodes and the CLI/console client call it
where they import trio-websocket. It keeps wsproto's contract exactly: ``process(data)`` returns
a new ``bytearray`` and the key rotates by ``len(data) % 4`` so that a frame's payload can be
processed in chunks (tests/test_wsmask.py checks it byte for byte against wsproto's own class).
If wsproto ever drops the class this relies on, ``install()`` leaves wsproto as it is.
"""

from __future__ import annotations

import numpy as np

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
    """Make wsproto mask and unmask with ``NumpyXorMasker``; True if it is in place."""
    global _installed, replaced
    if _installed:
        return True
    try:
        from wsproto import frame_protocol
    except ImportError:  # pragma: no cover (trio-websocket depends on wsproto)
        return False
    original = getattr(frame_protocol, "XorMaskerSimple", None)
    if original is None or not callable(getattr(original, "process", None)):
        return False
    replaced = original
    frame_protocol.XorMaskerSimple = NumpyXorMasker  # type: ignore[misc,assignment]
    _installed = True
    return True
