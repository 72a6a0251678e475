"""The wire protocol: round trips of every message and frame, every validation path, fuzzing."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlitb.errors import ProtocolError
from mlitb.protocol import (
    BYE_CLOSE_CODES,
    MAGIC,
    MAX_BINARY_FRAME,
    MAX_IDS_PER_MESSAGE,
    MAX_LARGE_TEXT_FRAME,
    MAX_TEXT_FRAME,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Ack,
    Allocation,
    Bye,
    CacheReport,
    CloseCode,
    CreateProject,
    DataCounts,
    DataRegistered,
    Error,
    FrameKind,
    Hello,
    Model,
    ParametersFrame,
    ProjectInfo,
    ProjectStatus,
    RegisterData,
    ResultFrame,
    ResultKind,
    SetAccess,
    SetHyperparameters,
    Status,
    Training,
    Welcome,
    WireError,
    Work,
    check_sender,
    decode_data_batch,
    decode_frame,
    decode_text,
    encode_data_batch,
    encode_frame,
    encode_parameters,
    encode_result,
    encode_text,
)
from mlitb.protocol._schema import Check, Length, Pattern, Printable, Range, Unique

DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# == strategies derived from the message annotations ===============================================
PRINTABLE = st.characters(categories=["L", "N", "P", "S"]) | st.just(" ")
JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**53), 2**53)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)
LAYERS = st.fixed_dictionaries(
    {"type": st.sampled_from(["input", "conv", "fc", "softmax"])},
    optional={"sx": st.integers(1, 32), "num_neurons": st.integers(1, 100),
              "activation": st.sampled_from(["relu", "tanh"]), "drop_prob": st.floats(0, 1)},
)


def strategy(tp: Any) -> st.SearchStrategy[Any]:
    """Valid values of annotation ``tp`` (kept small: few items, short strings)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _annotated(args[0], tp.__metadata__)
    if tp is int:
        return st.integers(0, 2**32 - 1)
    if tp is float:
        return st.floats(-1e6, 1e6, allow_nan=False)
    if tp is str:
        return st.text(max_size=12)
    if tp is bool:
        return st.booleans()
    if tp is Any:
        return JSON_VALUES
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return st.none() | strategy(inner)
    if origin is tuple:
        return st.lists(strategy(args[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(strategy(args[0]), strategy(args[1]), max_size=3)
    if dataclasses.is_dataclass(tp):
        return dataclass_strategy(tp)
    raise TypeError(tp)


def _annotated(base: Any, meta: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    def find(kind: type) -> Any:
        return next((m for m in meta if isinstance(m, kind)), None)
    rng, length, pattern = find(Range), find(Length), find(Pattern)
    lo, hi = (length.lo, length.hi) if length else (0, 10**9)
    if any(isinstance(m, Check) for m in meta):
        return LAYERS
    if base is int:
        return st.integers(int(rng.lo), int(rng.hi))
    if base is float:
        top = rng.hi if math.isfinite(rng.hi) else 1e9
        return st.floats(rng.lo, top, allow_nan=False)
    if base is str:
        if pattern:
            s = st.from_regex(pattern.regex, fullmatch=True)
            return s.filter(lambda x: lo <= len(x) <= hi) if length else s
        alphabet = PRINTABLE if find(Printable) else st.characters(codec="utf-8")
        return st.text(alphabet, min_size=lo, max_size=min(hi, 16))
    if get_origin(base) is tuple:
        item = strategy(get_args(base)[0])
        return st.lists(item, min_size=lo, max_size=min(hi, max(lo, 4)),
                        unique=find(Unique) is not None).map(tuple)
    if get_origin(base) is dict:
        key, value = (strategy(a) for a in get_args(base))
        return st.dictionaries(key, value, max_size=min(hi, 4))
    raise TypeError(base, meta)


@st.composite
def dataclass_strategy(draw: st.DrawFn, cls: type) -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs = {}
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required or draw(st.booleans()):
            kwargs[f.name] = draw(strategy(hints[f.name]))
    fix = FIXUPS.get(cls)
    if fix is not None:
        fix(draw, kwargs)
    return cls(**kwargs)


def _fix_hello(draw: st.DrawFn, kw: dict[str, Any]) -> None:
    kw["protocol"] = PROTOCOL_VERSION
    if kw["role"] == "operator":
        kw["project"] = None
        kw["join_token"] = None
    else:
        kw["token"] = None


def _fix_welcome(draw: st.DrawFn, kw: dict[str, Any]) -> None:
    urls = kw.get("data_urls", ())
    if urls:
        kw["data_url"] = urls[0]
    if kw["role"] == "operator":
        kw["project"] = None
    else:
        kw["authorized"] = False
        kw["project"] = draw(dataclass_strategy(ProjectInfo))


def _fix_one_of(cls: type, *names: str) -> Any:
    def fix(draw: st.DrawFn, kw: dict[str, Any]) -> None:
        keep = draw(st.sampled_from(names))
        for drop in names:
            if drop != keep:
                kw[drop] = None
        if kw.get(keep) is None:
            hint = typing.get_type_hints(cls, include_extras=True)[keep]
            kw[keep] = draw(strategy(get_args(hint)[0]))
    return fix


def _fix_ids(a: str, b: str) -> Any:
    def fix(draw: st.DrawFn, kw: dict[str, Any]) -> None:
        first = kw.get(a, ())
        kw[b] = tuple(i for i in kw.get(b, ()) if i not in first)
        if "total" in kw:
            kw["total"] = max(kw["total"], len(first))
    return fix


def _fix_counts(draw: st.DrawFn, kw: dict[str, Any]) -> None:
    kw["allocated"] = min(kw["allocated"], kw["total"])
    kw["unallocated"] = kw["total"] - kw["allocated"]
    kw["cached"] = min(kw["cached"], kw["total"])


def _fix_register(draw: st.DrawFn, kw: dict[str, Any]) -> None:
    names = kw["label_names"] or ("cat",)
    kw["label_names"] = names
    kw["labels"] = tuple(draw(st.integers(0, len(names) - 1)) for _ in kw["ids"])


def _fix_hyper(draw: st.DrawFn, kw: dict[str, Any]) -> None:
    if not kw.get("hyperparameters") and kw.get("iteration_time") is None:
        kw["iteration_time"] = 2.0


def _fix_training(draw: st.DrawFn, kw: dict[str, Any]) -> None:
    if kw.get("schedule", "constant") != "constant" and kw.get("horizon") is None:
        kw["horizon"] = draw(st.floats(1.0, 1e9))
    clip, refuse = kw.get("norm_clip", 4.0), kw.get("norm_refuse", 100.0)
    if clip is not None and refuse is not None and refuse < clip:
        kw["norm_refuse"] = clip


def _fix_workers(draw: st.DrawFn, kw: dict[str, Any]) -> None:
    seen: dict[int, Any] = {}
    for w in kw.get("workers", ()):
        seen.setdefault(w.worker_id, w)
    kw["workers"] = tuple(seen.values())


def _fix_access(draw: st.DrawFn, kw: dict[str, Any]) -> None:
    kw["keep"] = tuple(dict.fromkeys(kw.get("keep", ())))
    for kept in kw["keep"]:
        kw[f"{kept}_token"] = None


FIXUPS = {
    SetAccess: _fix_access,
    Hello: _fix_hello, Welcome: _fix_welcome,
    CreateProject: _fix_one_of(CreateProject, "spec", "closure", "zoo"),
    Work: _fix_one_of(Work, "seconds", "samples"), Allocation: _fix_ids("added", "removed"),
    CacheReport: _fix_ids("cached", "evicted"), DataCounts: _fix_counts,
    RegisterData: _fix_register, SetHyperparameters: _fix_hyper, ProjectStatus: _fix_workers,
    Training: _fix_training,
}


# == round trips ===================================================================================
@pytest.mark.parametrize("kind", sorted(MESSAGE_TYPES))
@FAST
@given(data=st.data())
def test_every_message_round_trips(kind: str, data: st.DataObject) -> None:
    message = data.draw(dataclass_strategy(MESSAGE_TYPES[kind]))
    text = encode_text(message)
    assert json.loads(text)["type"] == kind
    assert text.startswith(f'{{"type":"{kind}",')  # compact, its type first (UTF-8, not ASCII)
    assert decode_text(text, max_size=MAX_LARGE_TEXT_FRAME) == message


def test_optional_fields_may_be_omitted() -> None:
    assert decode_text(f'{{"type":"hello","protocol":{PROTOCOL_VERSION},"role":"trainer",'
                       '"client":"browser","host":"Firefox on Linux"}') == Hello(role="trainer", client="browser",
                                                              host="Firefox on Linux")
    assert decode_text('{"type":"allocation","total":0}') == Allocation(total=0)


def test_numbers_written_as_integers_decode_as_floats() -> None:
    # JavaScript's JSON.stringify(2.0) is "2"
    msg = decode_text('{"type":"work","iteration":3,"parameter_version":3,"seconds":2}')
    assert isinstance(msg, Work) and msg.seconds == 2.0 and isinstance(msg.seconds, float)


vectors = st.integers(0, 300).flatmap(
    lambda n: st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False),
                       min_size=n, max_size=n))
u32s = st.integers(0, 2**32 - 1)


@FAST
@given(values=vectors, version=u32s, iteration=u32s)
def test_parameters_frame_round_trips_zero_copy(values: list[float], version: int,
                                                iteration: int) -> None:
    vector = np.array(values, dtype=np.float32)
    data = encode_parameters(vector, parameter_version=version, iteration=iteration)
    assert isinstance(data, bytes) and len(data) == 24 + 4 * vector.size
    frame = decode_frame(data, expected_length=vector.size)
    assert isinstance(frame, ParametersFrame)
    assert (frame.parameter_version, frame.iteration) == (version, iteration)
    assert frame.vector.dtype == np.float32 and np.array_equal(frame.vector, vector)
    assert np.shares_memory(frame.vector, np.frombuffer(data, np.uint8)) or vector.size == 0
    assert not frame.vector.flags.writeable
    assert encode_frame(frame) == data


@FAST
@given(values=vectors, version=u32s, samples=u32s, data=st.data(),
       loss=st.floats(0, 1e30), seconds=st.floats(0, 1e6, width=32),
       kind=st.sampled_from(ResultKind))
def test_result_frame_round_trips_zero_copy(values: list[float], version: int, samples: int,
                                            data: st.DataObject, loss: float, seconds: float,
                                            kind: ResultKind) -> None:
    vector = np.array(values, dtype=np.float32)
    correct = data.draw(st.integers(0, samples))
    raw = bytearray(encode_result(vector, parameter_version=version, samples=samples,
                                  correct=correct, loss_sum=loss, compute_seconds=seconds,
                                  kind=kind))
    frame = decode_frame(raw)
    assert isinstance(frame, ResultFrame)
    assert (frame.parameter_version, frame.kind, frame.samples, frame.correct, frame.loss_sum,
            frame.compute_seconds) == (version, kind, samples, correct, loss, seconds)
    assert np.array_equal(frame.vector, vector)
    if vector.size:
        assert np.shares_memory(frame.vector, np.frombuffer(raw, np.uint8))
    assert encode_frame(frame) == bytes(raw)


def test_encode_copies_a_float32_vector_once_and_does_not_convert() -> None:
    vector = np.linspace(-1, 1, 1000, dtype=np.float32)
    data = encode_parameters(vector, parameter_version=7, iteration=9)
    assert data[24:] == vector.tobytes()
    frame = decode_frame(memoryview(data))
    assert np.shares_memory(frame.vector, np.frombuffer(data, np.uint8))
    # float64 input is converted (documented: pass float32 to avoid the conversion)
    assert encode_parameters(vector.astype(np.float64), parameter_version=7, iteration=9) == data


def test_data_batch_round_trips_zero_copy() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 3, 32, 32), dtype=np.uint8)
    ids, labels = np.array([9, 1, 4, 1000, 7]), np.array([0, 9, 3, 3, 2])
    data = encode_data_batch(ids, labels, pixels)
    assert len(data) == 24 + 5 * 8 + pixels.size
    batch = decode_data_batch(data, shape=(3, 32, 32), num_labels=10)
    assert np.array_equal(batch.ids, ids) and np.array_equal(batch.labels, labels)
    assert np.array_equal(batch.pixels, pixels) and batch.pixels.shape == (5, 3, 32, 32)
    for part in (batch.ids, batch.labels, batch.pixels):
        assert np.shares_memory(part, np.frombuffer(data, np.uint8))
    assert encode_frame(batch) == data
    empty = decode_data_batch(encode_data_batch([], [], np.zeros((0, 1, 8, 8), np.uint8)))
    assert empty.pixels.shape == (0, 1, 8, 8)


# == the header layout documented byte by byte in docs/protocol.md =================================
def test_parameters_header_layout() -> None:
    data = encode_parameters(np.array([1.5, -2.0], np.float32), parameter_version=0x01020304,
                             iteration=77)
    assert data[:2] == b"ML" and data[2] == PROTOCOL_VERSION and data[3] == FrameKind.PARAMETERS
    assert struct.unpack_from("<HHIII", data, 4) == (24, 0, 0x01020304, 77, 2)
    assert data[20:24] == bytes(4)
    assert struct.unpack_from("<2f", data, 24) == (1.5, -2.0)


def test_result_header_layout() -> None:
    data = encode_result(np.array([0.25], np.float32), parameter_version=5, samples=640,
                         correct=600, loss_sum=123.5, compute_seconds=1.75,
                         kind=ResultKind.PARAMETER_DELTA)
    assert data[:4] == b"ML" + bytes([PROTOCOL_VERSION, FrameKind.RESULT])
    assert struct.unpack_from("<HHIB", data, 4) == (40, 0, 5, 2)
    assert data[13:16] == bytes(3)
    assert struct.unpack_from("<IIdfI", data, 16) == (640, 600, 123.5, 1.75, 1)
    assert struct.unpack_from("<f", data, 40) == (0.25,)


def test_data_batch_header_layout() -> None:
    data = encode_data_batch([3, 4], [1, 0], np.full((2, 1, 2, 3), 200, np.uint8))
    assert data[:4] == b"ML" + bytes([PROTOCOL_VERSION, FrameKind.DATA_BATCH])
    assert struct.unpack_from("<HHIHHH", data, 4) == (24, 0, 2, 1, 2, 3)
    assert data[18:24] == bytes(6)
    assert struct.unpack_from("<2I2I", data, 24) == (3, 4, 1, 0)
    assert data[40:] == bytes([200] * 12)


# == validation: every path raises ProtocolError naming what failed ================================
HELLO = {"type": "hello", "protocol": PROTOCOL_VERSION, "role": "trainer", "client": "python",
         "host": "node-1"}


def refused(obj: Any, *, max_size: int = MAX_TEXT_FRAME) -> WireError:
    text = obj if isinstance(obj, str) else json.dumps(obj)
    with pytest.raises(WireError) as info:
        decode_text(text, max_size=max_size)
    assert isinstance(info.value, ProtocolError)
    return info.value


@pytest.mark.parametrize("obj, named", [
    ({"type": "no_such_type"}, "no_such_type"),
    ({"kind": "hello"}, "type"),
    ({"type": 3}, "type"),
    ({**HELLO, "role": "boss"}, "hello.role"),
    ({**HELLO, "host": 17}, "hello.host"),
    ({**HELLO, "host": ""}, "hello.host"),
    ({**HELLO, "host": "a\nb"}, "hello.host"),
    ({**HELLO, "project": "../etc"}, "hello.project"),
    ({**HELLO, "project": "p" * 65}, "hello.project"),
    ({**HELLO, "token": "secret"}, "hello.token"),
    ({**HELLO, "role": "operator", "project": "digits"}, "hello.project"),
    ({**HELLO, "colour": "blue"}, "hello.colour"),
    ({k: v for k, v in HELLO.items() if k != "client"}, "hello.client"),
    ({"type": "work", "parameter_version": 1, "seconds": 2}, "work.iteration"),
    ({"type": "work", "iteration": 1, "parameter_version": 1}, "work.seconds"),
    ({"type": "work", "iteration": 1, "parameter_version": 1, "seconds": 1, "samples": 5},
     "work.seconds"),
    ({"type": "work", "iteration": True, "parameter_version": 1, "seconds": 1}, "work.iteration"),
    ({"type": "work", "iteration": 1.5, "parameter_version": 1, "seconds": 1}, "work.iteration"),
    ({"type": "work", "iteration": 2**32, "parameter_version": 1, "seconds": 1},
     "work.iteration"),
    ({"type": "work", "iteration": 1, "parameter_version": 1, "seconds": "2"}, "work.seconds"),
    ({"type": "create_project", "request_id": "r", "name": "p", "spec": [{"type": "input"}],
      "iteration_time": 45}, "create_project.iteration_time"),
    ({"type": "create_project", "request_id": "r", "name": "p", "spec": [{"type": "input"}],
      "iteration_time": 0.1}, "create_project.iteration_time"),
    ({"type": "create_project", "request_id": "r", "name": "p"}, "create_project.spec"),
    ({"type": "create_project", "request_id": "r", "name": "p", "spec": []},
     "create_project.spec"),
    ({"type": "create_project", "request_id": "r", "name": "p", "spec": [{"sx": 3}]},
     "create_project.spec[0]"),
    ({"type": "create_project", "request_id": "r", "name": "p", "spec": [{"type": "input"}],
      "hyperparameters": {"Learning Rate": 0.1}}, "create_project.hyperparameters"),
    ({"type": "create_project", "request_id": "r", "name": "p", "spec": [{"type": "input"}],
      "hyperparameters": {"learning_rate": "fast"}},
     "create_project.hyperparameters.learning_rate"),
    ({"type": "set_hyperparameters", "request_id": "r", "project": "p"},
     "set_hyperparameters.hyperparameters"),
    ({"type": "allocation", "added": [1, 2, -3], "total": 3}, "allocation.added[2]"),
    ({"type": "allocation", "added": [1, 2, 2], "total": 3}, "allocation.added"),
    ({"type": "allocation", "added": [1, 2], "removed": [2], "total": 3}, "allocation.removed"),
    ({"type": "allocation", "added": [1, 2], "total": 1}, "allocation.total"),
    ({"type": "allocation", "added": "1,2", "total": 2}, "allocation.added"),
    ({"type": "cache_report", "cached": [1], "evicted": [1]}, "cache_report.evicted"),
    ({"type": "stats_report", "parameter_version": 1, "iteration": 1, "samples": 10,
      "error": 1.5}, "stats_report.error"),
    ({"type": "stats_report", "parameter_version": 1, "iteration": 1, "samples": 0,
      "error": 0.5}, "stats_report.samples"),
    ({"type": "stats_report", "parameter_version": 1, "iteration": 1, "samples": 10,
      "error": 0.5, "loss": -1}, "stats_report.loss"),
    ({"type": "register_data", "request_id": "r", "project": "p", "ids": [1, 2],
      "label_names": ["cat"], "labels": [0]}, "register_data.labels"),
    ({"type": "register_data", "request_id": "r", "project": "p", "ids": [1, 2],
      "label_names": ["cat"], "labels": [0, 1]}, "register_data.labels"),
    ({"type": "register_data", "request_id": "r", "project": "p", "ids": [1],
      "label_names": ["cat", "cat"], "labels": [0]}, "register_data.label_names"),
    ({"type": "register_data", "request_id": "r", "project": "p", "ids": [1],
      "label_names": ["cat"], "labels": [0], "split": "validation"}, "register_data.split"),
    ({"type": "subscribe", "request_id": "r", "interval": 0}, "subscribe.interval"),
    ({"type": "remove_worker", "request_id": "has space", "worker_id": 3},
     "remove_worker.request_id"),
    ({"type": "get_model", "request_id": "r", "project": "p", "format": "onnx"},
     "get_model.format"),
    ({"type": "error", "code": "oops", "message": "x"}, "error.code"),
    ({"type": "bye", "reason": "bored"}, "bye.reason"),
    ({"type": "welcome", "worker_id": 1, "role": "operator", "data_url": "ftp://x",
      "server_version": "0.1"}, "welcome.data_url"),
    ({"type": "welcome", "worker_id": 1, "role": "trainer", "data_url": "http://x:8001",
      "server_version": "0.1"}, "welcome.project"),
    ({"type": "status", "time": 1, "projects": [{"name": "p", "state": "running",
      "iteration": 1, "parameter_version": 1, "iteration_time": 2, "optimizer": "adagrad",
      "data": {"total": 10, "allocated": 4, "cached": 4, "unallocated": 5}}]},
     "status.projects[0].data.unallocated"),
    ({"type": "status", "time": 1, "projects": [{"name": "p", "state": "running",
      "iteration": 1, "parameter_version": 1, "iteration_time": 2, "optimizer": "adagrad",
      "data": {"total": 0, "allocated": 0, "cached": 0, "unallocated": 0},
      "workers": [{"worker_id": 1, "role": "trainer", "client": "python", "host": "h",
                   "state": "training", "latency_ms": -5}]}]},
     "status.projects[0].workers[0].latency_ms"),
    ({"type": "model", "request_id": "r", "project": "p", "format": "closure",
      "model": {"deep": json.loads("[" * 40 + "]" * 40)}},
     "model.model.deep"),
    (('{"type": "model", "request_id": "r", "project": "p", "format": "closure", '
      '"model": {"w": 1e400}}'), "model.model.w"),
])
def test_invalid_messages_name_the_field(obj: Any, named: str) -> None:
    error = refused(obj, max_size=MAX_LARGE_TEXT_FRAME)
    assert named in str(error), str(error)
    assert error.code == "bad_message" and error.close_code is None


@pytest.mark.parametrize("text", [
    "", "{", "[1, 2]", '"hello"', "null", "NaN",
    '{"type": "work", "iteration": 1, "parameter_version": 1, "seconds": NaN}',
    '{"type": "work", "iteration": 1, "parameter_version": 1, "seconds": Infinity}',
    "[" * 100_000 + "]" * 100_000,
    '{"type": "ack", "request_id": "' + "9" * 5000 + '"}',
    '{"type": "work", "iteration": ' + "9" * 5000 + "}",
])
def test_malformed_json_is_a_protocol_error(text: str) -> None:
    error = refused(text)
    assert error.code == "bad_message"


def test_not_text_at_all() -> None:
    with pytest.raises(WireError, match="text frame"):
        decode_text(b'{"type": "ack"}')  # type: ignore[arg-type]


def test_protocol_version_mismatch_is_clear_and_closes() -> None:
    error = refused({**HELLO, "protocol": PROTOCOL_VERSION + 1, "new_field": 1})
    assert "version mismatch" in str(error) and "hello.protocol" in str(error)
    assert f"speaks version {PROTOCOL_VERSION + 1}" in str(error)
    assert (error.code, error.close_code) == ("version_mismatch", CloseCode.VERSION_MISMATCH)
    missing = refused({k: v for k, v in HELLO.items() if k != "protocol"})
    assert "hello.protocol" in str(missing)
    assert "hello.protocol" in str(refused({**HELLO, "protocol": "1"}))
    assert encode_text(Hello(role="trainer", client="python", host="h")).startswith(
        f'{{"type":"hello","protocol":{PROTOCOL_VERSION},')


def test_text_size_limits() -> None:
    big = {"type": "ack", "request_id": "r", "pad": "x" * MAX_TEXT_FRAME}
    error = refused(big)
    assert (error.code, error.close_code) == ("too_large", CloseCode.MESSAGE_TOO_BIG)
    # a larger cap (authorized operator) still holds small types to MAX_TEXT_FRAME
    error = refused(big, max_size=MAX_LARGE_TEXT_FRAME)
    assert error.code == "too_large" and "ack" in str(error)
    # ... but lets a large type through
    model = Model(request_id="m", project="cifar10", format="closure",
                  model={"parameters": "QUJD" * MAX_TEXT_FRAME})
    text = encode_text(model)
    assert len(text) > MAX_TEXT_FRAME
    assert refused(text).code == "too_large"
    assert decode_text(text, max_size=MAX_LARGE_TEXT_FRAME) == model
    # non-ASCII text is measured in UTF-8 bytes
    assert refused('"' + "é" * (MAX_TEXT_FRAME // 2 + 1) + '"').code == "too_large"


def test_id_lists_are_bounded() -> None:
    ids = list(range(MAX_IDS_PER_MESSAGE + 1))
    error = refused({"type": "allocation", "added": ids, "total": len(ids)})
    assert "allocation.added" in str(error)
    half = MAX_IDS_PER_MESSAGE // 2 + 1
    error = refused({"type": "cache_report", "cached": list(range(half)),
                     "evicted": list(range(half, 2 * half))})
    assert "cache_report.evicted" in str(error)


def test_request_id_is_echoed_in_the_error() -> None:
    error = refused({"type": "pause", "request_id": "req-42", "project": "bad name!"})
    assert error.request_id == "req-42" and error.field == "project"
    assert error.message_type == "pause"
    reply = Error(code=error.code, message=str(error), request_id=error.request_id)
    assert decode_text(encode_text(reply)) == reply
    assert refused({"type": "pause", "request_id": 42, "project": "p"}).request_id is None


def test_encoding_validates_too() -> None:
    with pytest.raises(WireError, match="work.seconds"):
        encode_text(Work(iteration=1, parameter_version=1, seconds=2.0, samples=10))
    with pytest.raises(WireError, match="status.time"):
        encode_text(Status(time=math.nan))
    with pytest.raises(WireError, match="ack.request_id"):
        encode_text(Ack(request_id=""))
    with pytest.raises(WireError, match="not a protocol message"):
        encode_text(DataCounts(total=0, allocated=0, cached=0, unallocated=0))  # type: ignore
    with pytest.raises(WireError, match="data_registered.labels"):
        encode_text(DataRegistered(request_id="r", project="p", labels=("a", "a"), train=1,
                                   test=0))


def test_encoding_accepts_numpy_numbers() -> None:
    msg = Allocation(added=tuple(np.arange(3, dtype=np.int64)), total=np.int64(3))  # type: ignore
    assert decode_text(encode_text(msg)) == Allocation(added=(0, 1, 2), total=3)


def test_check_sender() -> None:
    create = CreateProject(request_id="c1", name="p", spec=({"type": "input"},))
    check_sender(create, "operator", authorized=True)
    for role, authorized in (("operator", False), ("trainer", True), ("stats", False)):
        with pytest.raises(WireError) as info:
            check_sender(create, role, authorized=authorized)  # type: ignore[arg-type]
        assert info.value.code == "forbidden" and info.value.request_id == "c1"
    with pytest.raises(WireError, match="only the master"):
        check_sender(Allocation(total=0), "trainer", authorized=False)
    with pytest.raises(WireError, match="role 'tracker'"):
        check_sender(CacheReport(), "tracker", authorized=False)
    for role in ("trainer", "tracker", "stats", "operator"):
        check_sender(decode_text('{"type":"list_projects","request_id":"l"}'), role,
                     authorized=False)  # type: ignore[arg-type]


def test_bye_reasons_all_have_close_codes() -> None:
    from mlitb.protocol import ByeReason
    assert set(BYE_CLOSE_CODES) == set(get_args(ByeReason))
    assert all(code >= 1000 for code in BYE_CLOSE_CODES.values())


# -- binary frames ---------------------------------------------------------------------------------
def frame_error(data: Any, **kwargs: Any) -> WireError:
    with pytest.raises(WireError) as info:
        decode_frame(data, **kwargs)
    assert isinstance(info.value, ProtocolError)
    return info.value


GOOD_RESULT = encode_result(np.ones(4, np.float32), parameter_version=2, samples=8, correct=3,
                            loss_sum=1.0, compute_seconds=0.5)


def patched(data: bytes, offset: int, fmt: str, *values: Any) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


@pytest.mark.parametrize("data, named", [
    (b"", "header"),
    (b"ML\x01", "header"),
    (GOOD_RESULT[:30], "header"),
    (b"XX" + GOOD_RESULT[2:], "magic"),
    (patched(GOOD_RESULT, 3, "<B", 9), "kind"),
    (patched(GOOD_RESULT, 4, "<H", 24), "header_length"),
    (patched(GOOD_RESULT, 6, "<H", 9), "result.encoding: unknown encoding 9"),
    (patched(GOOD_RESULT, 6, "<H", 1), "float16 needs a payload of 8 bytes"),
    (patched(GOOD_RESULT, 12, "<B", 7), "result.kind"),
    (patched(GOOD_RESULT, 20, "<I", 9), "result.correct"),
    (patched(GOOD_RESULT, 24, "<d", math.nan), "result.loss_sum"),
    (patched(GOOD_RESULT, 24, "<d", -1.0), "result.loss_sum"),
    (patched(GOOD_RESULT, 32, "<f", math.inf), "result.compute_seconds"),
    (patched(GOOD_RESULT, 36, "<I", 5), "result.count"),
    (GOOD_RESULT + b"\0\0", "result.payload"),
    (GOOD_RESULT[:-4], "result.count"),
    (patched(GOOD_RESULT, 44, "<f", math.nan), "result.vector"),
    (patched(GOOD_RESULT, 52, "<f", -math.inf), "result.vector"),
    (encode_data_batch([1], [0], np.zeros((1, 1, 1, 1), np.uint8)), "data_batch"),
    ("not bytes", "bytes"),
])
def test_invalid_frames_name_the_field(data: Any, named: str) -> None:
    error = frame_error(data)
    assert named in str(error), str(error)
    assert error.code == "bad_frame" and error.close_code is None


def test_nan_in_result_vector_names_the_value() -> None:
    error = frame_error(patched(GOOD_RESULT, 48, "<f", math.nan))
    assert "result.vector: value 2 is nan" in str(error)


def test_frame_version_mismatch() -> None:
    error = frame_error(patched(GOOD_RESULT, 2, "<B", PROTOCOL_VERSION + 1))
    assert "frame.version" in str(error) and "version mismatch" in str(error)
    assert (error.code, error.close_code) == ("version_mismatch", CloseCode.VERSION_MISMATCH)


def test_wrong_vector_length() -> None:
    error = frame_error(GOOD_RESULT, expected_length=22_466)
    assert "result.vector" in str(error) and "22466" in str(error)
    params = encode_parameters(np.zeros(3, np.float32), parameter_version=0, iteration=0)
    assert "parameters.vector" in str(frame_error(params, expected_length=4))


def test_frame_too_large() -> None:
    error = frame_error(GOOD_RESULT, max_size=len(GOOD_RESULT) - 1)
    assert (error.code, error.close_code) == ("too_large", CloseCode.MESSAGE_TOO_BIG)
    assert MAX_BINARY_FRAME >= 24 + 4 * 22_466
    with pytest.raises(WireError, match="over the limit"):
        encode_parameters(np.zeros(MAX_BINARY_FRAME // 4 + 1, np.float32), parameter_version=0,
                          iteration=0)


def test_invalid_frame_arguments_are_refused_on_encode() -> None:
    v = np.zeros(2, np.float32)
    with pytest.raises(WireError, match="result.correct"):
        encode_result(v, parameter_version=1, samples=1, correct=2, loss_sum=0.0)
    with pytest.raises(WireError, match="result.loss_sum"):
        encode_result(v, parameter_version=1, samples=1, loss_sum=math.nan)
    with pytest.raises(WireError, match="parameters.parameter_version"):
        encode_parameters(v, parameter_version=-1, iteration=0)
    with pytest.raises(WireError, match="parameters.vector"):
        encode_parameters(np.zeros((2, 2), np.float32), parameter_version=1, iteration=0)


def test_invalid_data_batches() -> None:
    good = encode_data_batch([1, 2], [0, 3], np.zeros((2, 3, 4, 4), np.uint8))
    cases = {
        "data_batch.shape": {"data": good, "shape": (1, 4, 4)},
        "data_batch.labels": {"data": good, "num_labels": 3},
        "data_batch.payload": {"data": good[:-1]},
        "data_batch.kind": {"data": GOOD_RESULT},
    }
    for named, kwargs in cases.items():
        with pytest.raises(WireError, match=re.escape(named)):
            decode_data_batch(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(WireError, match="data_batch.pixels"):
        encode_data_batch([1], [0], np.zeros((1, 4, 4), np.uint8))


# == fuzzing: nothing but ProtocolError comes out ==================================================
@FAST
@given(data=st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    for decode in (decode_frame, decode_data_batch):
        try:
            decode(data)
        except ProtocolError:
            pass


@FAST
@given(kind=st.sampled_from([1, 2, 3, 9]), body=st.binary(max_size=120),
       header_length=st.sampled_from([24, 40, 8, 0]))
def test_random_frames_with_a_valid_prefix_raise_only_protocol_errors(
        kind: int, body: bytes, header_length: int) -> None:
    data = MAGIC + bytes([PROTOCOL_VERSION, kind]) + struct.pack("<HH", header_length, 0) + body
    for decode in (decode_frame, decode_data_batch):
        try:
            decode(data)
        except ProtocolError:
            pass


@FAST
@given(text=st.text(max_size=200))
def test_random_text_raises_only_protocol_errors(text: str) -> None:
    try:
        decode_text(text)
    except ProtocolError:
        pass


@FAST
@given(kind=st.sampled_from(sorted(MESSAGE_TYPES)),
       fields=st.dictionaries(st.sampled_from(["request_id", "project", "ids", "labels", "role",
                                               "seconds", "spec", "total", "protocol", "x"]),
                              JSON_VALUES, max_size=5))
def test_random_json_messages_raise_only_protocol_errors(kind: str, fields: dict[str, Any]) -> None:
    try:
        decode_text(json.dumps({"type": kind, **fields}))
    except ProtocolError:
        pass


@FAST
@given(data=st.data(), kind=st.sampled_from(sorted(MESSAGE_TYPES)))
def test_mutated_valid_messages_raise_only_protocol_errors(data: st.DataObject, kind: str) -> None:
    obj = json.loads(encode_text(data.draw(dataclass_strategy(MESSAGE_TYPES[kind]))))
    key = data.draw(st.sampled_from(sorted(obj)))
    if data.draw(st.booleans()):
        del obj[key]
    else:
        obj[key] = data.draw(JSON_VALUES)
    try:
        decode_text(json.dumps(obj), max_size=MAX_LARGE_TEXT_FRAME)
    except ProtocolError:
        pass


# == docs/protocol.md stays in step ================================================================
def test_docs_cover_every_message_and_close_code() -> None:
    text = DOCS.read_text()
    for kind in MESSAGE_TYPES:
        assert f"`{kind}`" in text, kind
    for code in CloseCode:
        assert str(int(code)) in text, code


def test_docs_examples_are_valid_messages() -> None:
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    seen = set()
    for block in blocks:
        message = decode_text(block, max_size=MAX_LARGE_TEXT_FRAME)
        seen.add(type(message).TYPE)
    assert seen == set(MESSAGE_TYPES), set(MESSAGE_TYPES) - seen


def test_set_access_keeps_a_token_only_when_none_is_given_for_it() -> None:
    base = '{"type":"set_access","request_id":"1","project":"p"'
    kept = decode_text(base + ',"contributor_token":"fresh-token-1","keep":["join"]}')
    assert isinstance(kept, SetAccess) and kept.keep == ("join",) and kept.join_token is None
    for tail, where in ((',"join_token":"new-join-token","keep":["join"]}', "join_token"),
                        (',"keep":["contributor","contributor"]}', "keep"),
                        (',"keep":["everything"]}', "keep[0]")):
        with pytest.raises(WireError) as refused:
            decode_text(base + tail)
        assert str(refused.value).startswith(f"set_access.{where}:"), refused.value


def test_encoding_accepts_str_and_int_subclasses() -> None:
    class Reason(str):
        code = "stale_result"

    class Count(int):
        pass

    reply = Error(code="stale_result", message=Reason("computed on version 3"))
    assert decode_text(encode_text(reply)) == Error(code="stale_result",
                                                    message="computed on version 3")
    assert decode_text(encode_text(Allocation(total=Count(3)))) == Allocation(total=3)


# == the wording of errors: msgspec's, translated to message.field and the reason in words =========
_STATUS_PROJECT = {"name": "p", "state": "running", "iteration": 1, "parameter_version": 1,
                   "iteration_time": 2, "optimizer": "adagrad",
                   "data": {"total": 0, "allocated": 0, "cached": 0, "unallocated": 0}}
_CREATE = {"type": "create_project", "request_id": "r", "name": "p", "spec": [{"type": "input"}]}


@pytest.mark.parametrize("obj, said", [
    ({**HELLO, "role": "boss"},
     "hello.role: must be one of 'trainer', 'tracker', 'stats', 'operator', got 'boss'"),
    ({**HELLO, "host": 17}, "hello.host: must be a string, got integer 17"),
    ({**HELLO, "colour": "blue"}, "hello.colour: unknown field"),
    ({k: v for k, v in HELLO.items() if k != "client"}, "hello.client: missing required field"),
    ('{"type":"hello","protocol":2,"role":"trainer","client":"python","host":"a\\ud800"}',
     "hello.host: must be valid Unicode (no lone surrogates)"),
    ({"type": "work", "iteration": 2**32, "parameter_version": 1, "seconds": 1},
     "work.iteration: must be between 0 and 4294967295, got 4294967296"),
    ({"type": "work", "iteration": 1, "parameter_version": 1, "seconds": "2"},
     "work.seconds: must be a number or null, got string '2'"),
    ('{"type":"work","iteration":1,"parameter_version":1,"seconds":1e400}',
     "work.seconds: must be a finite number, got inf"),
    ({"type": "allocation", "added": [1, 2, -3], "total": 3},
     "allocation.added[2]: must be between 0 and 4294967295, got -3"),
    ({"type": "allocation", "added": list(range(MAX_IDS_PER_MESSAGE + 1)), "total": 1},
     f"allocation.added: must have at most {MAX_IDS_PER_MESSAGE} items, got "
     f"{MAX_IDS_PER_MESSAGE + 1}"),
    ({**_CREATE, "hyperparameters": {"Learning Rate": 0.1}},
     "create_project.hyperparameters.Learning Rate: must be a lower-case identifier "
     "(a-z 0-9 _), got 'Learning Rate'"),
    ({**_CREATE, "hyperparameters": {"momentum": 0.9, "learning_rate": "fast"}},
     "create_project.hyperparameters.learning_rate: must be a number, got string 'fast'"),
    ({**_CREATE, "labels": ["a", "b\tc"]},
     "create_project.labels[1]: must not contain control characters, got 'b\\tc'"),
    ({**_CREATE, "training": {"bogus": 2}}, "create_project.training.bogus: unknown field"),
    ({**_CREATE, "training": {"schedule": "cosine"}},
     "create_project.training.horizon: schedule 'cosine' needs a horizon"),
    ({"type": "status", "time": 1, "projects": [{**_STATUS_PROJECT, "workers": [
        {"worker_id": 1, "role": "trainer", "client": "python", "host": "h\n",
         "state": "training"}]}]},
     "status.projects[0].workers[0].host: must not contain control characters, got 'h\\n'"),
    ('{"type":"model","request_id":"r","project":"p","format":"closure",'
     '"model":{"a":[1],"w":{"x":-1e400}}}', "model.model.w.x: must be a finite number, got -inf"),
    ({"type": "model", "request_id": "r", "project": "p", "format": "closure",
      "model": {"a": json.loads("[" * 900 + "]" * 900)}}, "nests deeper than 32 levels"),
])
def test_errors_say_the_field_and_the_reason_in_words(obj: Any, said: str) -> None:
    error = refused(obj, max_size=MAX_LARGE_TEXT_FRAME)
    assert said in str(error), str(error)
    assert str(error).split(":")[0] in said or said.startswith("nests")
    assert error.code == "bad_message" and error.close_code is None


def test_encoding_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(WireError, match=r"^work\.learning_rate: must be a finite number, got nan"):
        encode_text(Work(iteration=1, parameter_version=1, seconds=1.0, learning_rate=math.nan))
    with pytest.raises(WireError, match=r"^bye\.message: must be valid Unicode"):
        encode_text(Bye(reason="removed", message="a\ud800"))
    with pytest.raises(WireError, match=r"^model\.model\.w\[1\]: must be a finite number"):
        encode_text(Model(request_id="m", project="p", format="closure",
                          model={"w": [1.0, math.inf]}))
    with pytest.raises(WireError, match=r"^model\.model: object keys must be strings"):
        encode_text(Model(request_id="m", project="p", format="closure", model={1: 2}))
    with pytest.raises(WireError, match=r"^model\.model\.s: must be a JSON value, got set"):
        encode_text(Model(request_id="m", project="p", format="closure", model={"s": {1}}))
    # numpy numbers in free-form JSON are numbers
    model = Model(request_id="m", project="p", format="closure",
                  model={"w": [np.float32(0.5), np.int64(2)]})
    assert decode_text(encode_text(model), max_size=MAX_LARGE_TEXT_FRAME).model == {"w": [0.5, 2]}


@FAST
@given(data=st.data(), kind=st.sampled_from(sorted(MESSAGE_TYPES)))
def test_random_values_of_the_types_own_fields_raise_only_wire_errors(data: st.DataObject,
                                                                      kind: str) -> None:
    names = [f.name for f in dataclasses.fields(MESSAGE_TYPES[kind])] + ["type", "x"]
    fields = data.draw(st.dictionaries(st.sampled_from(names), JSON_VALUES, max_size=len(names)))
    try:
        message = decode_text(json.dumps({"type": kind, **fields}), max_size=MAX_LARGE_TEXT_FRAME)
    except WireError:
        return
    assert decode_text(encode_text(message), max_size=MAX_LARGE_TEXT_FRAME) == message
