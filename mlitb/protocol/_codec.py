"""How a binary frame's vector is encoded (its header's ``encoding`` field; docs/protocol.md,
"Encodings").

- ``FLOAT32`` (0): raw little-endian float32, ``4n`` bytes; the only encoding of a project whose
  ``training.wire`` is ``float32`` (the default), and frames exactly as before the field.
- ``FLOAT16`` (1): IEEE binary16, ``2n`` bytes, rounded to nearest, ties to even; finite values
  beyond the largest half (65504) saturate to it, so an overflow is an error the worker's
  feedback keeps, not an infinity the master refuses.
- ``INT8`` (2): blocks of ``BLOCK`` (256) values, the last one shorter; first one float32 scale
  per block, ``scale = float32(absmax / 127)``, then ``n`` int8 values
  ``q = clip(round_half_even(x / scale), -127, 127)`` (the division in float64), the receiver's
  value ``float32(q * scale)``; ``4 * ceil(n / 256) + n`` bytes. A block of zeros has scale 0,
  and so has a block whose ``absmax / 127`` underflows float32 (absmax at most 127 * 2**-150,
  ~9e-44): it travels as zeros (a worker's error feedback keeps what it held).

Every rule is one IEEE operation in float32 or float64 (float32 division equals float64
division rounded to float32: 53 >= 2 * 24 + 2 bits), so the browser's ``mlitb/browser/lib/protocol.js``
writes the same bytes for the same vector; the tests compare them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from ._errors import WireError

Wire = Literal["float32", "float16", "int8"]
"""A project's ``training.wire``: how its results (and parameters) travel."""


class Encoding(IntEnum):
    FLOAT32 = 0
    FLOAT16 = 1
    INT8 = 2


ENCODING_OF_WIRE: Final[dict[str, Encoding]] = {
    "float32": Encoding.FLOAT32, "float16": Encoding.FLOAT16, "int8": Encoding.INT8}
WIRE_OF_ENCODING: Final[dict[Encoding, str]] = {v: k for k, v in ENCODING_OF_WIRE.items()}
ENCODING_VALUES: Final = frozenset(e.value for e in Encoding)
BLOCK: Final = 256
"""Values per int8 block (one float32 scale each)."""
F16_MAX: Final = 65504.0
F32: Final = np.dtype("<f4")
F16: Final = np.dtype("<f2")
_NAN32: Final = np.float32(np.nan)


def result_encoding(wire: str) -> Encoding:
    """The encoding of a project's RESULT frames: its ``training.wire``."""
    return ENCODING_OF_WIRE[wire]


def parameters_encoding(wire: str) -> Encoding:
    """The encoding of a project's PARAMETERS frames: float16 for both compressed kinds.

    Parameters are re-encoded every round from the master's float32 copy, so their rounding
    never accumulates; but it has no feedback either, and int8 would round a small weight in a
    block with a large one to 0 (an error of up to absmax/254 on every weight, every round),
    while float16 keeps ~3 significant digits of each. float16 halves the bytes."""
    return Encoding.FLOAT32 if ENCODING_OF_WIRE[wire] is Encoding.FLOAT32 else Encoding.FLOAT16


def blocks_of(count: int) -> int:
    return -(-count // BLOCK)


def payload_size(encoding: Encoding, count: int) -> int:
    """The exact payload bytes of ``count`` values in ``encoding``."""
    if encoding is Encoding.FLOAT32:
        return 4 * count
    if encoding is Encoding.FLOAT16:
        return 2 * count
    return 4 * blocks_of(count) + count


@dataclass(frozen=True, eq=False)
class Encoded:
    """A vector in one encoding: the payload bytes and the float32 values a receiver decodes
    from them (what error feedback subtracts)."""

    encoding: Encoding
    payload: bytes | memoryview
    decoded: npt.NDArray[np.float32]

    @property
    def count(self) -> int:
        return int(self.decoded.size)


def encode_vector(vector: npt.NDArray[np.float32], encoding: Encoding) -> Encoded:
    """``vector`` (contiguous little-endian float32, 1-D) in ``encoding``."""
    if encoding is Encoding.FLOAT32:
        return Encoded(encoding, vector.data, vector)
    if encoding is Encoding.FLOAT16:
        # Saturate finite values (an infinity or NaN stays one: the receiver refuses it).
        half = np.where(np.isfinite(vector), np.clip(vector, -F16_MAX, F16_MAX),
                        vector).astype(F16)
        return Encoded(encoding, half.tobytes(), half.astype(F32))
    if encoding is not Encoding.INT8:
        raise ValueError(f"unknown encoding {encoding!r}")
    n = vector.size
    nb = blocks_of(n)
    padded = np.zeros(nb * BLOCK, dtype=F32)
    padded[:n] = vector
    blocks = padded.reshape(nb, BLOCK)
    # np.max propagates NaN (a block with a NaN gets a NaN scale); float32 division is IEEE's.
    scale = (np.abs(blocks).max(axis=1) / np.float32(127)).astype(F32)
    scale[np.isnan(scale)] = _NAN32  # one NaN bit pattern, as JavaScript writes it
    ok = np.isfinite(scale) & (scale > 0)
    divisor = np.where(ok, scale, np.float32(1)).astype(np.float64)
    q = np.clip(np.rint(blocks.astype(np.float64) / divisor[:, None]), -127, 127)
    q[~ok] = 0
    q8 = q.astype(np.int8).reshape(-1)[:n]
    decoded = dequantize(q8, scale)
    return Encoded(encoding, b"".join((scale.tobytes(), q8.tobytes())), decoded)


def dequantize(q: npt.NDArray[np.int8], scale: npt.NDArray[np.float32]
               ) -> npt.NDArray[np.float32]:
    """int8 values times their block's scale, in float32 (q * scale is exact in float64, so
    this is one rounding, as in JavaScript)."""
    n = q.size
    out = q.astype(F32)
    full = n // BLOCK
    # Within 1/254 of float32's largest value, 127 * scale can round to infinity: the receiver
    # then refuses the result as it refuses any infinity (a worker that far gone has diverged).
    with np.errstate(over="ignore", invalid="ignore"):
        if full:
            out[:full * BLOCK].reshape(full, BLOCK)[...] *= scale[:full, None]
        if n > full * BLOCK:
            out[full * BLOCK:] *= scale[full]
    return out


def _bad(message: str, field: str) -> WireError:
    return WireError(message, code="bad_frame", field=field)


def decode_vector(data: bytes | bytearray | memoryview, name: str, offset: int, size: int,
                  count: int, encoding: int) -> npt.NDArray[np.float32]:
    """The float32 vector of a frame's payload (``data[offset:size]``), its size checked
    exactly. float32 payloads are read-only views onto ``data``; the others are decoded copies.
    int8 scales must be finite and >= 0 and its values in [-127, 127], as encoders write them.
    """
    if encoding not in ENCODING_VALUES:
        raise _bad(f"{name}.encoding: unknown encoding {encoding} (0 float32, 1 float16, "
                   "2 int8)", "encoding")
    kind = Encoding(encoding)
    payload = size - offset
    expected = payload_size(kind, count)
    if payload != expected:
        raise _bad(f"{name}.count: header says {count} values, {WIRE_OF_ENCODING[kind]} needs "
                   f"a payload of {expected} bytes for them, got {payload}", "count")
    if kind is Encoding.FLOAT32:
        return np.frombuffer(data, dtype=F32, count=count, offset=offset)
    if kind is Encoding.FLOAT16:
        out = np.frombuffer(data, dtype=F16, count=count, offset=offset).astype(F32)
        out.flags.writeable = False
        return out
    nb = blocks_of(count)
    scale = np.frombuffer(data, dtype=F32, count=nb, offset=offset)
    q = np.frombuffer(data, dtype=np.int8, count=count, offset=offset + 4 * nb)
    if nb and not (np.isfinite(scale).all() and scale.min() >= 0):
        bad = int(np.flatnonzero(~(np.isfinite(scale) & (scale >= 0)))[0])
        raise _bad(f"{name}.scales: scale {bad} is {scale[bad]} (int8 scales are finite and "
                   ">= 0)", "scales")
    if count and int(q.min()) < -127:
        raise _bad(f"{name}.vector: int8 value {int(np.argmin(q))} is -128 (values are "
                   "-127 to 127)", "vector")
    out = dequantize(q, scale)
    out.flags.writeable = False
    return out
