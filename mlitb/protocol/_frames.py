"""Binary frames: a short fixed little-endian header, then raw little-endian float32 (or uint8).

Every frame starts with the same 8 bytes::

    0  magic         2 bytes  b"ML"
    2  version       uint8    PROTOCOL_VERSION
    3  kind          uint8    FrameKind
    4  header_length uint16   bytes before the payload (24 or 40; a multiple of 8)
    6  encoding      uint16   how the vector is encoded (``Encoding``: 0 float32, 1 float16,
                              2 int8 blocks; ``mlitb.protocol._codec``); 0 for DATA_BATCH

Headers are multiples of 8 bytes, so payloads are aligned for ``Float32Array`` / ``np.frombuffer``.
Decoding float32 returns numpy views onto the frame's bytes (no copy), the other encodings
decoded float32 copies; encoding copies the vector once.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from ._codec import (
    ENCODING_VALUES,
    Encoded,
    Encoding,
    decode_vector,
    encode_vector,
    payload_size,
)
from ._errors import WireError
from ._limits import (
    MAX_BINARY_FRAME,
    MAX_DATA_FRAME,
    MAX_IDS_PER_MESSAGE,
    MAX_LABELS,
    MAX_PARAMETERS,
    MAX_U32,
    PROTOCOL_VERSION,
    CloseCode,
)

MAGIC: Final = b"ML"
F32: Final = np.dtype("<f4")
U32: Final = np.dtype("<u4")


class FrameKind(IntEnum):
    PARAMETERS = 1
    """master -> trainers, trackers, stats workers: one parameter version."""
    RESULT = 2
    """trainer -> master: the answer to a work order."""
    DATA_BATCH = 3
    """data server -> worker (an HTTP response body, never a WebSocket frame): data vectors."""


class ResultKind(IntEnum):
    GRADIENT_SUM = 1
    """The vector is the sum of per-sample gradients over ``samples`` samples."""
    PARAMETER_DELTA = 2
    """Local steps: the vector is (parameters after ``steps`` inner optimizer steps) -
    (parameters received); ``samples`` counts the samples those steps saw."""


_COMMON = struct.Struct("<2sBBHH")
# common, parameter_version, iteration, count, 4 reserved bytes
_PARAMETERS = struct.Struct("<2sBBHH III4x")
# common, parameter_version, result kind, 1 reserved, steps (u16), samples, correct, loss_sum,
# compute_seconds, count
_RESULT = struct.Struct("<2sBBHH IBxHIIdfI")
MAX_STEPS: Final = 0xFFFF
"""The most inner steps one result may report (a worker stops stepping there)."""
# common, count, depth, height, width, 6 reserved bytes
_DATA = struct.Struct("<2sBBHH IHHH6x")
_HEADERS: Final = {FrameKind.PARAMETERS: _PARAMETERS, FrameKind.RESULT: _RESULT,
                   FrameKind.DATA_BATCH: _DATA}
_KIND_VALUES: Final = frozenset(k.value for k in FrameKind)
_RESULT_KIND_VALUES: Final = frozenset(k.value for k in ResultKind)
_NAMES: Final = {FrameKind.PARAMETERS: "parameters", FrameKind.RESULT: "result",
                 FrameKind.DATA_BATCH: "data_batch"}


@dataclass(frozen=True, eq=False, kw_only=True)
class ParametersFrame:
    parameter_version: int
    iteration: int
    vector: npt.NDArray[np.float32]
    encoding: Encoding = Encoding.FLOAT32
    """How the vector travelled (the values are the decoded ones)."""


@dataclass(frozen=True, eq=False, kw_only=True)
class ResultFrame:
    parameter_version: int
    """The version of the parameters the result was computed on (older ones are stale)."""
    kind: ResultKind
    samples: int
    correct: int
    """Samples classified correctly (0 for regression)."""
    loss_sum: float
    """Loss summed over the samples (mean loss = loss_sum / samples)."""
    compute_seconds: float
    """Wall time the worker spent computing (the master subtracts it to estimate latency)."""
    vector: npt.NDArray[np.float32]
    steps: int = 0
    """Inner optimizer steps taken (``PARAMETER_DELTA``; 0 for gradient sums)."""
    encoding: Encoding = Encoding.FLOAT32
    """How the vector travelled: the master takes only its project's ``training.wire``."""


@dataclass(frozen=True, eq=False, kw_only=True)
class DataBatchFrame:
    ids: npt.NDArray[np.uint32]
    labels: npt.NDArray[np.uint32]
    """Class indices into the project's ``labels`` list."""
    pixels: npt.NDArray[np.uint8]
    """Shape ``(n, depth, height, width)``: channel-major, as the numpy engine takes it."""


Frame = ParametersFrame | ResultFrame


def _bad(message: str, field: str | None = None) -> WireError:
    return WireError(message, code="bad_frame", field=field)


# -- encoding --------------------------------------------------------------------------------------
def _u32(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
            not 0 <= value <= MAX_U32:
        raise _bad(f"{name}: must be an integer between 0 and {MAX_U32}, got {value!r:.40}")
    return int(value)


def _vector(vector: npt.ArrayLike, name: str) -> npt.NDArray[np.float32]:
    """A contiguous little-endian float32 1-D array: ``vector`` itself when it already is one."""
    array = np.ascontiguousarray(vector, dtype=F32)
    if array.ndim != 1:
        raise _bad(f"{name}.vector: must be one-dimensional, got shape {array.shape}")
    if array.size > MAX_PARAMETERS:
        raise WireError(f"{name}.vector: {array.size} values is over the limit of "
                        f"{MAX_PARAMETERS}", code="too_large")
    return array


def _encoded(vector: npt.ArrayLike | Encoded, encoding: Encoding, name: str) -> Encoded:
    try:
        kind = Encoding(encoding)
    except ValueError:
        raise _bad(f"{name}.encoding: unknown encoding {encoding!r:.40}") from None
    if isinstance(vector, Encoded):
        if vector.encoding is not kind:
            raise _bad(f"{name}.encoding: the vector is encoded as {vector.encoding.name}, the "
                       f"frame asks for {kind.name}")
        _vector(vector.decoded, name)  # the size limit
        return vector
    return encode_vector(_vector(vector, name), kind)


def encode_parameters(vector: npt.ArrayLike | Encoded, *, parameter_version: int, iteration: int,
                      encoding: Encoding = Encoding.FLOAT32) -> bytes:
    """A PARAMETERS frame with its vector in ``encoding`` (or already encoded: ``Encoded``).
    Pass a contiguous float32 vector to avoid a conversion copy."""
    encoded = _encoded(vector, encoding, "parameters")
    header = _PARAMETERS.pack(
        MAGIC, PROTOCOL_VERSION, FrameKind.PARAMETERS, _PARAMETERS.size, encoded.encoding,
        _u32(parameter_version, "parameters.parameter_version"),
        _u32(iteration, "parameters.iteration"), encoded.count,
    )
    return b"".join((header, encoded.payload))


def encode_result(
    vector: npt.ArrayLike | Encoded,
    *,
    parameter_version: int,
    samples: int,
    loss_sum: float,
    correct: int = 0,
    compute_seconds: float = 0.0,
    kind: ResultKind = ResultKind.GRADIENT_SUM,
    steps: int = 0,
    encoding: Encoding = Encoding.FLOAT32,
) -> bytes:
    """A RESULT frame with its vector in ``encoding``; pass an ``Encoded`` vector (error
    feedback's) to send exactly those bytes. The vector is not scanned for NaN/Inf here; the
    receiver does that."""
    encoded = _encoded(vector, encoding, "result")
    samples = _u32(samples, "result.samples")
    correct = _u32(correct, "result.correct")
    if correct > samples:
        raise _bad(f"result.correct: must not exceed samples ({samples}), got {correct}")
    for name, value in (("loss_sum", loss_sum), ("compute_seconds", compute_seconds)):
        if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value)
                and value >= 0):
            raise _bad(f"result.{name}: must be a finite number >= 0, got {value!r:.40}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or \
            not 0 <= steps <= MAX_STEPS:
        raise _bad(f"result.steps: must be an integer between 0 and {MAX_STEPS}, got {steps!r:.40}")
    header = _RESULT.pack(
        MAGIC, PROTOCOL_VERSION, FrameKind.RESULT, _RESULT.size, encoded.encoding,
        _u32(parameter_version, "result.parameter_version"), ResultKind(kind), int(steps),
        samples, correct,
        float(loss_sum), float(compute_seconds), encoded.count,
    )
    return b"".join((header, encoded.payload))


def encode_data_batch(ids: npt.ArrayLike, labels: npt.ArrayLike, pixels: npt.ArrayLike) -> bytes:
    """A DATA_BATCH body: ``n`` ids, ``n`` labels and uint8 ``pixels`` of shape (n, depth, h, w)."""
    ids_a = np.ascontiguousarray(ids, dtype=U32)
    labels_a = np.ascontiguousarray(labels, dtype=U32)
    pixels_a = np.ascontiguousarray(pixels)
    if pixels_a.dtype != np.uint8 or pixels_a.ndim != 4:
        raise _bad(f"data_batch.pixels: must be uint8 of shape (n, depth, height, width), got "
                   f"{pixels_a.dtype} {pixels_a.shape}")
    n, depth, height, width = pixels_a.shape
    if ids_a.shape != (n,) or labels_a.shape != (n,):
        raise _bad(f"data_batch: ids {ids_a.shape} and labels {labels_a.shape} must have shape "
                   f"({n},) like pixels")
    if n > MAX_IDS_PER_MESSAGE or not all(1 <= d <= 0xFFFF for d in (depth, height, width)):
        raise _bad(f"data_batch.pixels: shape {pixels_a.shape} is out of bounds (at most "
                   f"{MAX_IDS_PER_MESSAGE} vectors, each dimension 1-65535)")
    header = _DATA.pack(MAGIC, PROTOCOL_VERSION, FrameKind.DATA_BATCH, _DATA.size, 0,
                        n, depth, height, width)
    return b"".join((header, ids_a.data, labels_a.data, pixels_a.data))


def encode_frame(frame: ParametersFrame | ResultFrame | DataBatchFrame) -> bytes:
    """Encode any frame dataclass (the inverse of the decoders)."""
    if isinstance(frame, ParametersFrame):
        return encode_parameters(frame.vector, parameter_version=frame.parameter_version,
                                 iteration=frame.iteration, encoding=frame.encoding)
    if isinstance(frame, ResultFrame):
        return encode_result(frame.vector, parameter_version=frame.parameter_version,
                             samples=frame.samples, loss_sum=frame.loss_sum, correct=frame.correct,
                             compute_seconds=frame.compute_seconds, kind=frame.kind,
                             steps=frame.steps, encoding=frame.encoding)
    return encode_data_batch(frame.ids, frame.labels, frame.pixels)


# -- decoding --------------------------------------------------------------------------------------
def _header(data: bytes | bytearray | memoryview, max_size: int) -> tuple[FrameKind, int, int]:
    """Check the common header; return the kind, the frame's size and its encoding field
    (checked by the payload's decoder)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _bad(f"frame: must be bytes, got {type(data).__name__}")
    size = memoryview(data).nbytes
    if size > max_size:
        raise WireError(f"frame: {size} bytes is over the limit of {max_size} bytes",
                        code="too_large", close_code=CloseCode.MESSAGE_TOO_BIG)
    if size < _COMMON.size:
        raise _bad(f"frame.header: truncated: {size} bytes, the common header alone is "
                   f"{_COMMON.size}", field="header")
    magic, version, kind_byte, header_length, encoding = _COMMON.unpack_from(data)
    if magic != MAGIC:
        raise _bad(f"frame.magic: must be {MAGIC!r}, got {bytes(magic)!r}", field="magic")
    if version != PROTOCOL_VERSION:
        raise WireError(f"frame.version: protocol version mismatch: frame version {version}, "
                        f"this side speaks {PROTOCOL_VERSION}", code="version_mismatch",
                        close_code=CloseCode.VERSION_MISMATCH, field="version")
    if kind_byte not in _KIND_VALUES:
        raise _bad(f"frame.kind: unknown frame kind {kind_byte}", field="kind")
    kind = FrameKind(kind_byte)
    expected = _HEADERS[kind].size
    if header_length != expected:
        raise _bad(f"{_NAMES[kind]}.header_length: must be {expected}, got {header_length}",
                   field="header_length")
    if size < expected:
        raise _bad(f"{_NAMES[kind]}.header: truncated: {size} bytes, the header is {expected}",
                   field="header")
    if kind is FrameKind.DATA_BATCH and encoding != 0:
        raise _bad(f"data_batch.encoding: must be 0, got {encoding}", field="encoding")
    return kind, size, encoding


def _floats(data: bytes | bytearray | memoryview, name: str, header: int, size: int, count: int,
            expected_length: int | None, encoding: int) -> npt.NDArray[np.float32]:
    payload = size - header
    if encoding == Encoding.FLOAT32 and payload % 4:
        raise _bad(f"{name}.payload: {payload} bytes is not a whole number of float32 values",
                   field="payload")
    if expected_length is not None and count != expected_length and \
            encoding in ENCODING_VALUES and payload == payload_size(Encoding(encoding), count):
        raise _bad(f"{name}.vector: expected {expected_length} values (the project's parameter "
                   f"count), got {count}", field="vector")
    return decode_vector(data, name, header, size, count, encoding)


def decode_frame(
    data: bytes | bytearray | memoryview,
    *,
    expected_length: int | None = None,
    max_size: int = MAX_BINARY_FRAME,
) -> ParametersFrame | ResultFrame:
    """Validate a binary WebSocket frame; its vector is read-only float32: a view onto
    ``data`` (float32 frames) or the decoded values (float16, int8).

    ``expected_length``: the project's parameter count, checked when given. Result vectors must be
    finite. Raises ``WireError`` (a ``ProtocolError``) naming the frame kind and field.
    """
    kind, size, encoding = _header(data, max_size)
    if kind is FrameKind.PARAMETERS:
        _, _, _, _, _, version, iteration, count = _PARAMETERS.unpack_from(data)
        vector = _floats(data, "parameters", _PARAMETERS.size, size, count, expected_length,
                         encoding)
        return ParametersFrame(parameter_version=version, iteration=iteration, vector=vector,
                               encoding=Encoding(encoding))
    if kind is FrameKind.RESULT:
        (_, _, _, _, _, version, result_kind, steps, samples, correct, loss_sum, seconds,
         count) = _RESULT.unpack_from(data)
        if result_kind not in _RESULT_KIND_VALUES:
            raise _bad(f"result.kind: unknown result kind {result_kind}", field="kind")
        if correct > samples:
            raise _bad(f"result.correct: must not exceed samples ({samples}), got {correct}",
                       field="correct")
        for field, value in (("loss_sum", loss_sum), ("compute_seconds", seconds)):
            if not (math.isfinite(value) and value >= 0):
                raise _bad(f"result.{field}: must be a finite number >= 0, got {value}",
                           field=field)
        vector = _floats(data, "result", _RESULT.size, size, count, expected_length, encoding)
        if not math.isfinite(float(vector.sum(dtype=np.float64))):
            bad = int(np.flatnonzero(~np.isfinite(vector))[0])
            raise _bad(f"result.vector: value {bad} is {vector[bad]} (results must be finite)",
                       field="vector")
        return ResultFrame(parameter_version=version, kind=ResultKind(result_kind),
                           samples=samples, correct=correct, loss_sum=loss_sum,
                           compute_seconds=seconds, vector=vector, steps=steps,
                           encoding=Encoding(encoding))
    raise _bad("data_batch.kind: data batches come over HTTP from the data server, not over the "
               "WebSocket; use decode_data_batch", field="kind")


def decode_data_batch(
    data: bytes | bytearray | memoryview,
    *,
    shape: tuple[int, int, int] | None = None,
    num_labels: int | None = None,
    max_size: int = MAX_DATA_FRAME,
) -> DataBatchFrame:
    """Validate a DATA_BATCH body; ids, labels and pixels are views onto ``data`` (no copy).

    ``shape``: the project's input ``(depth, height, width)``; ``num_labels``: its label count.
    """
    kind, size, _ = _header(data, max_size)
    if kind is not FrameKind.DATA_BATCH:
        raise _bad(f"data_batch.kind: expected a data batch, got a {_NAMES[kind]} frame",
                   field="kind")
    _, _, _, _, _, n, depth, height, width = _DATA.unpack_from(data)
    if n > MAX_IDS_PER_MESSAGE:
        raise _bad(f"data_batch.count: at most {MAX_IDS_PER_MESSAGE} vectors, got {n}",
                   field="count")
    if min(depth, height, width) < 1 or (shape is not None and (depth, height, width) != shape):
        want = f"{shape}" if shape is not None else "positive dimensions"
        raise _bad(f"data_batch.shape: expected {want}, got {(depth, height, width)}",
                   field="shape")
    vector_size = depth * height * width
    expected = _DATA.size + n * (8 + vector_size)
    if size != expected:
        raise _bad(f"data_batch.payload: {n} vectors of {vector_size} bytes need a frame of "
                   f"{expected} bytes, got {size}", field="payload")
    ids = np.frombuffer(data, dtype=U32, count=n, offset=_DATA.size)
    labels = np.frombuffer(data, dtype=U32, count=n, offset=_DATA.size + 4 * n)
    limit = MAX_LABELS if num_labels is None else num_labels
    if n and int(labels.max()) >= limit:
        raise _bad(f"data_batch.labels: must be below {limit}, got {int(labels.max())}",
                   field="labels")
    pixels = np.frombuffer(data, dtype=np.uint8, count=n * vector_size, offset=_DATA.size + 8 * n)
    return DataBatchFrame(ids=ids, labels=labels,
                          pixels=pixels.reshape(n, depth, height, width))
