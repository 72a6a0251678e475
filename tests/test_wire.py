"""Compressed frames (``training.wire``): the codec's error bounds and exact sizes, error
feedback's bookkeeping, the project's refusals, and the master refusing a result in another
encoding than its project's (a real master on loopback, a raw WebSocket client)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlitb.nn import Net
from mlitb.optim import make_optimizer
from mlitb.protocol import (
    BLOCK,
    Encoded,
    Encoding,
    Error,
    ParametersFrame,
    ResultFrame,
    ResultKind,
    Training,
    Welcome,
    WireError,
    decode_frame,
    encode_parameters,
    encode_result,
    encode_vector,
    parameters_encoding,
    payload_size,
    result_encoding,
)
from mlitb.training import ErrorFeedback, Project, TrainingError, training_from_json

F16_MAX = 65504.0
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
vectors = hnp.arrays(np.float32, st.integers(0, 3 * BLOCK + 7), elements=finite32)
# int8 scales of values within 1/254 of float32's largest can overflow (docs/protocol.md).
int8_vectors = hnp.arrays(np.float32, st.integers(0, 3 * BLOCK + 7),
                          elements=st.floats(-2.0 ** 126, 2.0 ** 126, width=32))


def result(vector: np.ndarray, encoding: Encoding, **kw: object) -> bytes:
    return encode_result(vector, parameter_version=3, samples=10, loss_sum=1.5,
                         encoding=encoding, **kw)  # type: ignore[arg-type]


# -- the codec -------------------------------------------------------------------------------------
@given(vectors)
def test_float32_is_exact_and_the_frame_unchanged(v: np.ndarray) -> None:
    frame = decode_frame(result(v, Encoding.FLOAT32))
    assert frame.encoding is Encoding.FLOAT32
    np.testing.assert_array_equal(frame.vector, v)
    assert result(v, Encoding.FLOAT32) == encode_result(v, parameter_version=3, samples=10,
                                                        loss_sum=1.5)


@given(vectors)
def test_float16_round_trip_is_within_half_precision(v: np.ndarray) -> None:
    data = result(v, Encoding.FLOAT16)
    assert len(data) == 40 + 2 * v.size
    frame = decode_frame(data)
    assert frame.encoding is Encoding.FLOAT16
    x = np.clip(v.astype(np.float64), -F16_MAX, F16_MAX)
    err = np.abs(frame.vector.astype(np.float64) - x)
    # Normal halves: relative error <= 2^-11; subnormals: absolute error <= 2^-25.
    assert (err <= np.maximum(np.abs(x) * 2.0 ** -11, 2.0 ** -25)).all()
    np.testing.assert_array_equal(frame.vector, np.clip(v, -F16_MAX, F16_MAX)
                                  .astype(np.float16).astype(np.float32))


@given(int8_vectors)
def test_int8_round_trip_is_within_half_a_scale(v: np.ndarray) -> None:
    data = result(v, Encoding.INT8)
    blocks = -(-v.size // BLOCK)
    assert len(data) == 40 + 4 * blocks + v.size
    frame = decode_frame(data)
    scales = np.frombuffer(data, "<f4", blocks, 40).astype(np.float64)
    for b in range(blocks):
        x = v[b * BLOCK:(b + 1) * BLOCK].astype(np.float64)
        d = frame.vector[b * BLOCK:(b + 1) * BLOCK].astype(np.float64)
        assert scales[b] == np.float32(np.abs(v[b * BLOCK:(b + 1) * BLOCK]).max() / np.float32(127))
        if scales[b] == 0:  # absmax / 127 underflows float32: the block travels as zeros
            assert not d.any() and np.abs(x).max() <= 127 * 2.0 ** -150
            continue
        # scale/2 from rounding, plus the float32 rounding of q * scale.
        bound = scales[b] / 2 * (1 + 1e-6) + np.abs(x) * 2.0 ** -24 + 1e-45
        assert (np.abs(d - x) <= bound).all()


def test_int8_rounds_half_to_even_and_zero_blocks_have_scale_zero() -> None:
    # absmax 127 gives scale 1: x / scale is x, so ties are visible.
    v = np.zeros(2 * BLOCK, np.float32)
    v[:6] = [127, 0.5, 1.5, 2.5, -0.5, -2.5]
    data = result(v, Encoding.INT8)
    scales = np.frombuffer(data, "<f4", 2, 40)
    q = np.frombuffer(data, np.int8, 6, 48)
    assert scales.tolist() == [1.0, 0.0]
    assert q.tolist() == [127, 0, 2, 2, 0, -2]


def test_float16_saturates_finite_values_and_keeps_infinities() -> None:
    v = np.array([1e6, -7e4, 65519, np.inf], np.float32)
    e = encode_vector(v, Encoding.FLOAT16)
    assert e.decoded[:3].tolist() == [F16_MAX, -F16_MAX, F16_MAX]
    assert e.decoded[3] == np.inf
    with pytest.raises(WireError, match="result.vector: value 3 is inf"):
        decode_frame(result(v, Encoding.FLOAT16))


def test_sizes_and_the_parameters_choice() -> None:
    assert [payload_size(e, 1000) for e in Encoding] == [4000, 2000, 4 * 4 + 1000]
    assert [parameters_encoding(w) for w in ("float32", "float16", "int8")] == \
        [Encoding.FLOAT32, Encoding.FLOAT16, Encoding.FLOAT16]
    assert [result_encoding(w) for w in ("float32", "float16", "int8")] == list(Encoding)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_parameters_frames_carry_their_encoding(encoding: Encoding) -> None:
    v = np.linspace(-1, 1, 300, dtype=np.float32)
    frame = decode_frame(encode_parameters(v, parameter_version=4, iteration=5,
                                           encoding=encoding), expected_length=300)
    assert isinstance(frame, ParametersFrame) and frame.encoding is encoding
    np.testing.assert_array_equal(frame.vector, encode_vector(v, encoding).decoded)
    assert not frame.vector.flags.writeable


def patched(data: bytes, offset: int, fmt: str, *values: object) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


V = np.linspace(-2, 3, 300, dtype=np.float32)
INT8 = result(V, Encoding.INT8)
HALF = result(V, Encoding.FLOAT16)


@pytest.mark.parametrize("data, named", [
    (patched(INT8, 6, "<H", 3), "result.encoding: unknown encoding 3"),
    (patched(INT8, 6, "<H", 0xFFFF), "unknown encoding 65535"),
    (INT8 + b"\0", "int8 needs a payload of 308 bytes for them, got 309"),
    (INT8[:-1], "got 307"),
    (HALF[:-2], "float16 needs a payload of 600 bytes for them, got 598"),
    (HALF + b"\0\0\0\0", "float16 needs a payload"),
    (patched(INT8, 6, "<H", 1), "float16 needs a payload of 600 bytes"),
    (patched(INT8, 40, "<f", -1.0), "result.scales: scale 0 is -1.0"),
    (patched(INT8, 44, "<f", math.nan), "result.scales: scale 1 is nan"),
    (patched(INT8, 48 + 5, "<b", -128), "result.vector: int8 value 5 is -128"),
    (patched(HALF, 40 + 2 * 7, "<H", 0x7E00), "result.vector: value 7 is nan"),
])
def test_bad_compressed_frames_are_refused_by_name(data: bytes, named: str) -> None:
    with pytest.raises(WireError) as info:
        decode_frame(data)
    assert named in str(info.value)
    assert info.value.code == "bad_frame"


def test_the_parameter_count_is_checked_in_every_encoding() -> None:
    for data in (INT8, HALF):
        with pytest.raises(WireError, match="expected 299 values"):
            decode_frame(data, expected_length=299)


def test_an_encoded_vector_must_match_the_frame_encoding() -> None:
    with pytest.raises(WireError, match="encoded as FLOAT16"):
        encode_result(encode_vector(V, Encoding.FLOAT16), parameter_version=0, samples=1,
                      loss_sum=0.0, encoding=Encoding.INT8)
    with pytest.raises(WireError, match="unknown encoding"):
        encode_result(V, parameter_version=0, samples=1, loss_sum=0.0,
                      encoding=7)  # type: ignore[arg-type]


# -- error feedback --------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.sampled_from([Encoding.FLOAT16, Encoding.INT8]), st.integers(1, 600),
       st.integers(1, 12), st.integers(0, 2**32 - 1), st.floats(1e-3, 1e3))
def test_error_feedback_loses_nothing_but_the_last_residual(
        encoding: Encoding, n: int, rounds: int, seed: int, magnitude: float) -> None:
    rng = np.random.default_rng(seed)
    feedback = ErrorFeedback()
    true_sum = np.zeros(n, np.float64)
    sent_sum = np.zeros(n, np.float64)
    for k in range(rounds):
        v = (rng.standard_normal(n) * magnitude * rng.random(n) ** 4).astype(np.float32)
        encoded = feedback.encode(v, encoding, parameter_version=k)
        # The bytes sent decode to what the feedback subtracted.
        frame = decode_frame(encode_result(encoded, parameter_version=k, samples=1,
                                           loss_sum=0.0, encoding=encoding))
        np.testing.assert_array_equal(frame.vector, encoded.decoded)
        true_sum += v
        sent_sum += frame.vector
    assert feedback.residual is not None
    gap = true_sum - feedback.residual - sent_sum
    # float32 sums of `rounds` vectors: a few ulps of the running magnitudes.
    scale = np.abs(true_sum).max() + np.abs(sent_sum).max() + 1e-30
    assert np.abs(gap).max() <= 1e-5 * scale * rounds


def test_error_feedback_resets_when_the_stream_breaks() -> None:
    feedback = ErrorFeedback()
    v = np.full(10, 0.3 / 127, np.float32)  # 0.3 of the scale: rounds to 0 alone
    v[0] = 1.0
    assert feedback.encode(v, Encoding.INT8, parameter_version=5).decoded[1] == 0
    assert feedback.residual is not None and feedback.residual[1] == pytest.approx(0.3 / 127)
    # The next version (or the same one, a round that did not step) keeps the residual:
    # 0.6 of the scale rounds to one step.
    again = feedback.encode(v, Encoding.INT8, parameter_version=6)
    assert again.decoded[1] == pytest.approx(1 / 127)
    assert feedback.encode(v, Encoding.INT8, parameter_version=6).decoded[1] == 0
    # ...a jump (missed rounds) or another size drops it.
    first = encode_vector(v, Encoding.INT8).decoded
    np.testing.assert_array_equal(feedback.encode(v, Encoding.INT8, parameter_version=9).decoded,
                                  first)
    assert feedback.encode(np.ones(3, np.float32), Encoding.INT8,
                           parameter_version=10).count == 3
    feedback.encode(v, Encoding.FLOAT32, parameter_version=11)
    assert feedback.residual is None


def test_error_feedback_does_not_carry_a_non_finite_residual() -> None:
    feedback = ErrorFeedback()
    feedback.encode(np.array([np.inf, 1.0], np.float32), Encoding.FLOAT16, parameter_version=0)
    assert feedback.residual is None


# -- the project's setting -------------------------------------------------------------------------
SPEC = [{"type": "input", "out_sx": 1, "out_sy": 1, "out_depth": 4},
        {"type": "softmax", "num_classes": 3}]


def project(wire: str, **kw: object) -> Project:
    net = Net(SPEC, seed=0)
    return Project("p", net, make_optimizer("adagrad", net.num_params), "adagrad", 1.0,
                   training=Training(wire=wire), **kw)  # type: ignore[arg-type]


def test_wire_is_a_training_setting_chosen_at_creation() -> None:
    assert Training().wire == "float32"
    assert training_from_json({}).wire == "float32"  # an old closure's settings
    with pytest.raises(TrainingError, match="training.wire: must be one of"):
        training_from_json({"wire": "int4"})
    p = project("int8")
    assert p.info().training.wire == "int8"
    with pytest.raises(TrainingError, match="the wire is chosen at creation"):
        p.set_training(Training(wire="float16"))
    p.set_training(Training(wire="int8", shift=2))
    assert p.training.shift == 2


def test_deterministic_projects_are_float32_only() -> None:
    with pytest.raises(TrainingError, match="deterministic projects .* float32 results only"):
        project("float16", samples_per_iteration=64)
    assert project("float32", samples_per_iteration=64).deterministic


def test_the_project_refuses_a_result_in_another_encoding() -> None:
    p = project("int8")
    frame = ResultFrame(parameter_version=0, kind=ResultKind.GRADIENT_SUM, samples=1, correct=0,
                        loss_sum=0.0, compute_seconds=0.0, vector=np.zeros(15, np.float32),
                        encoding=Encoding.FLOAT16)
    refused = p.accept_result(1, frame, 0.0)
    assert refused is not None and refused.code == "bad_frame"
    assert "takes int8 results, this one is float16" in refused


# -- the master ------------------------------------------------------------------------------------
@pytest.mark.trio
async def test_the_master_refuses_a_result_whose_encoding_is_not_the_projects() -> None:
    from helpers.master import N_PARAMS, client, make_project, running_master

    from mlitb.protocol import Allocation, CacheReport, Work

    with trio.fail_after(30):
        async with running_master() as (master, port):
            await make_project(port, training=Training(wire="int8"))
            async with client(port, role="trainer", project="p") as tr:
                welcome = await tr.expect(Welcome)
                assert welcome.project.training.wire == "int8"
                alloc = await tr.expect(Allocation)
                await tr.send(CacheReport(cached=alloc.added))
                params = await tr.expect(ParametersFrame)
                # int8 projects broadcast float16 parameters.
                assert params.encoding is Encoding.FLOAT16
                work = await tr.expect(Work)
                grad = np.full(N_PARAMS, 2.0, np.float32)
                for wrong in (Encoding.FLOAT32, Encoding.FLOAT16):
                    await tr.send(encode_result(grad, parameter_version=work.parameter_version,
                                                samples=4, loss_sum=4.0, encoding=wrong))
                    error = await tr.expect(Error)
                    assert error.code == "bad_frame"
                    assert "takes int8 results" in error.message
                project = master.projects["p"]
                assert project.current is not None and not project.current.results
                assert project.parameter_version == 0
                # The right encoding is taken and steps the model.
                await tr.send(encode_result(grad, parameter_version=work.parameter_version,
                                            samples=4, loss_sum=4.0, encoding=Encoding.INT8))
                later = await tr.expect(ParametersFrame, skip=(Work,))
                assert later.parameter_version == 1 and later.encoding is Encoding.FLOAT16
                np.testing.assert_allclose(later.vector, params.vector - 0.01, atol=1e-3)


@pytest.mark.trio
async def test_the_master_refuses_a_deterministic_compressed_project() -> None:
    from helpers.master import SPEC as MSPEC
    from helpers.master import TOKEN, client, running_master

    from mlitb.protocol import CreateProject

    with trio.fail_after(20):
        async with running_master() as (master, port):
            async with client(port, role="operator", token=TOKEN) as op:
                await op.expect(Welcome)
                reply = await op.request(CreateProject(
                    request_id="c", name="p", spec=tuple(MSPEC), samples_per_iteration=64,
                    training=Training(wire="int8")))
                assert isinstance(reply, Error) and reply.code == "invalid_value"
                assert "float32 results only" in reply.message
                assert "p" not in master.projects


def test_encoded_is_what_encode_result_sends() -> None:
    e = encode_vector(V, Encoding.INT8)
    assert isinstance(e, Encoded) and e.count == V.size
    assert encode_result(e, parameter_version=3, samples=10, loss_sum=1.5,
                         encoding=Encoding.INT8) == INT8


# -- closures --------------------------------------------------------------------------------------
def test_a_closure_keeps_the_wire_and_an_old_one_loads_as_float32() -> None:
    from mlitb.closure import (
        closure_from_dict,
        closure_from_project,
        closure_to_dict,
        project_from_closure,
    )

    data = closure_to_dict(closure_from_project(project("int8")))
    assert data["loop"]["training"]["wire"] == "int8"
    assert project_from_closure(closure_from_dict(data), "q").training.wire == "int8"
    # A closure written before the field (its hash, optional, covered what it had).
    del data["loop"]["training"]["wire"]
    data.pop("content_sha256", None)
    assert project_from_closure(closure_from_dict(data), "q").training.wire == "float32"


def test_a_deterministic_closure_with_a_compressed_wire_is_refused() -> None:
    from mlitb.closure import (
        closure_from_dict,
        closure_from_project,
        closure_to_dict,
        project_from_closure,
    )
    from mlitb.errors import ClosureError

    data = closure_to_dict(closure_from_project(project("float32", samples_per_iteration=8)))
    data["loop"]["training"]["wire"] = "float16"
    data.pop("content_sha256", None)
    with pytest.raises((ClosureError, TrainingError), match="float32 results only"):
        project_from_closure(closure_from_dict(data), "q")
