"""mlitb/bench/protocol.py measures every message it lists, each a real round trip of the codec, beside
the hand-written codec msgspec replaced (mlitb/bench/_protocol_old.py); the two accept and refuse the
same frames with the same error code."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_protocol import JSON_VALUES, dataclass_strategy

from mlitb.bench import _protocol_old as old
from mlitb.bench import protocol as bench_protocol
from mlitb.protocol import MAX_LARGE_TEXT_FRAME, MESSAGE_TYPES, WireError, decode_text, encode_text

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_every_message_round_trips_and_gets_its_figures(capsys) -> None:
    for message in bench_protocol.messages().values():
        assert decode_text(encode_text(message), max_size=64 << 20) == message
    result = bench_protocol.run(0.002, as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed == result
    names = [r["message"] for r in result["messages"]]
    assert names[:2] == ["work", "hello"] and names[-1].startswith("result frame")
    assert all(r["encode_us"] > 0 and r["decode_us"] > 0 and r["bytes"] > 0
               for r in result["messages"])
    texts = [r for r in result["messages"] if not r["message"].startswith("result frame")]
    assert texts and all(r["encode_old_us"] > 0 and r["decode_old_us"] > 0 for r in texts)


def _outcome(decode: Any, text: str) -> Any:
    try:
        return decode(text, max_size=MAX_LARGE_TEXT_FRAME)
    except WireError as e:
        return (e.code, e.close_code, e.message_type)


@FAST
@given(data=st.data(), kind=st.sampled_from(sorted(MESSAGE_TYPES)))
def test_msgspec_and_the_old_codec_accept_and_refuse_alike(data: st.DataObject,
                                                           kind: str) -> None:
    """A valid message, then one field dropped or replaced by any JSON value: both codecs give
    the same message, or refuse with the same code, close code and message type."""
    message = data.draw(dataclass_strategy(MESSAGE_TYPES[kind]))
    text = encode_text(message)
    assert json.loads(old.encode_text(message)) == json.loads(text)
    obj = json.loads(text)
    key = data.draw(st.sampled_from(sorted(obj)))
    if data.draw(st.booleans()):
        del obj[key]
    else:
        obj[key] = data.draw(JSON_VALUES)
    mutated = json.dumps(obj)
    assert _outcome(decode_text, mutated) == _outcome(old.decode_text, mutated), mutated


@FAST
@given(kind=st.sampled_from(sorted(MESSAGE_TYPES)),
       fields=st.dictionaries(st.sampled_from(["request_id", "project", "ids", "labels", "role",
                                               "seconds", "spec", "total", "protocol", "x"]),
                              JSON_VALUES, max_size=5))
def test_random_objects_are_refused_alike(kind: str, fields: dict[str, Any]) -> None:
    text = json.dumps({"type": kind, **fields})
    assert _outcome(decode_text, text) == _outcome(old.decode_text, text), text
