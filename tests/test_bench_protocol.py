"""bench/protocol.py measures every message it lists, each a real round trip of the codec."""

from __future__ import annotations

import json

from mlitb.bench import protocol as bench_protocol
from mlitb.protocol import decode_text, encode_text


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
