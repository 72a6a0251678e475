"""RFC 8785 canonical JSON: the ``rfc8785`` library, which ``canonical_json`` calls, writes byte
for byte what mlitb's hand-written serializer wrote (kept in mlitb/bench/_closure_old.py), over every
kind of value a closure holds, so no closure's ``content_sha256`` changes with the library (or
with an upgrade of it: these tests would fail first)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from mlitb.bench._closure_old import canonical_json as reference
from mlitb.closure import canonical_json, load_closure
from mlitb.closure._canonical import MAX_SAFE_INTEGER
from mlitb.errors import ClosureError

# Unicode without lone surrogates (which UTF-8 cannot hold); the default alphabet reaches
# control characters and the astral planes, whose UTF-16 surrogate pairs sort below U+E000-U+FFFF
# although their code points are larger.
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_KEYS = st.one_of(_TEXT, st.sampled_from(["", "a", "\ufb33", "\U0001f600", "\u00e9", "\x7f",
                                          "\x00", "\ufffd", "\U0010ffff", "\ue000"]))
_CONTROL = st.text(st.characters(max_codepoint=0x24), max_size=8)
_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-300, max_value=1e-300, allow_nan=False),  # subnormals, tiny
    st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER).map(float),  # integers as floats
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, 1e21, 1e-7, 1e-6, 9.999e20,
                     123e-20, 0.1 + 0.2, 2.0**53, -(2.0**60), 1e16, 1.5e16]))
_INTS = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
_SCALARS = st.one_of(st.none(), st.booleans(), _INTS, _FLOATS, _TEXT, _CONTROL)
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(_KEYS, inner, max_size=6)), max_leaves=40)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_rfc8785_writes_what_the_hand_written_serializer_wrote(value) -> None:
    assert canonical_json(value) == rfc8785.dumps(value) == reference(value)


@settings(max_examples=200, deadline=None)
@given(st.lists(_FLOATS, max_size=20))
def test_numbers_in_lists_alike(values) -> None:
    assert rfc8785.dumps(values) == reference(values)


def test_every_decade_and_shortest_digits_alike() -> None:
    """Number formatting switches between fixed and exponent forms at 1e-7 and 1e21; the
    mantissas below take every length of shortest round-trip digits, 1 to 17."""
    mantissas = [1.0, 1.5, 2.5, 9.999999999999998, 1.2345678901234567, 3.3333333333333335,
                 7.000000000000001, 4.9406564584124654]
    values = [m * 10.0**e for m in mantissas for e in range(-323, 308)]
    values += [math.nextafter(v, math.inf) for v in values]
    values = [v for v in values if math.isfinite(v)]
    values += [-v for v in values]
    assert rfc8785.dumps(values) == reference(values)


def test_astral_keys_sort_by_utf16_code_units() -> None:
    value = {"\ufb33": 1, "\U0001f600": 2, "\ue000": 3, "\U00010000": 4, "z": 5, "": 6}
    assert rfc8785.dumps(value) == reference(value)
    assert rfc8785.dumps(value).startswith('{"":6,"z":5,"\U00010000":4,"\U0001f600":2'.encode())


@pytest.mark.parametrize("value", [2**53, -(2**53), math.nan, math.inf, -math.inf, "\ud800",
                                   {"\udfff": 1}, b"bytes", {1: 2}])
def test_both_refuse_what_json_cannot_hold(value) -> None:
    with pytest.raises((ClosureError, AttributeError)):  # AttributeError: a key that is no str
        reference(value)
    with pytest.raises((rfc8785.CanonicalizationError, UnicodeEncodeError)):
        rfc8785.dumps(value)


GOLDEN = Path(__file__).parent / "vectors" / "golden.closure.json"


def test_a_closure_written_before_the_library_still_verifies() -> None:
    """tests/vectors/golden.closure.json was written by the hand-written serializer (non-ASCII
    and astral labels, a data manifest, fractional times): its content hash must still hold."""
    closure = load_closure(GOLDEN)  # checks content_sha256 last
    stated = json.loads(GOLDEN.read_text(encoding="utf-8"))["content_sha256"]
    assert stated == "84c8a686f0c4a519038048c426d29f2c36ffdf71b1a05b225cef78bc63876ea9"
    assert closure.content_sha256() == stated


@pytest.mark.parametrize(("value", "message"), [
    (2**53, r"an integer is too large for portable JSON \(at most ±9007199254740991\): "
            r"9007199254740992"),
    ([1, {"a": -(2**53)}], "an integer is too large"),
    (math.nan, "a number is not finite, which JSON cannot hold: nan"),
    ({"x": [-math.inf]}, "a number is not finite"),
    ("a\ud800", "a string holds a lone surrogate"),
    ({"\udfff": 1}, "an object key holds a lone surrogate"),
    (b"bytes", "cannot be written in JSON: unsupported type: <class 'bytes'>"),
    ({1: 2}, "cannot be written in JSON: object keys must be strings"),
])
def test_canonical_json_refuses_with_a_closure_error(value, message) -> None:
    with pytest.raises(ClosureError, match=message):
        canonical_json(value)
