"""mlitb/master/_eventlog.py: a bounded log whose subscribers get exactly what they missed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mlitb.master._eventlog import EventLog


@given(size=st.integers(1, 20), logged=st.integers(0, 60), seen=st.integers(0, 60),
       most=st.integers(1, 30))
def test_since_gives_the_newest_unseen_events(size: int, logged: int, seen: int,
                                              most: int) -> None:
    events = EventLog(lambda: 1.5, size=size)
    for i in range(logged):
        events.log("data", f"event {i}")
    seen = min(seen, logged)
    got = [e.message for e in events.since(seen, most)]
    kept = range(max(0, logged - size), logged)  # what the log still holds
    expected = [f"event {i}" for i in kept if i >= seen][-most:]
    assert got == expected
    assert events.count == logged and len(events) == min(size, logged)
    assert events.oldest_kept() == max(0, logged - size)
    assert all(e.time == 1.5 for e in events)


def test_messages_are_cut_at_2048_characters() -> None:
    events = EventLog(lambda: 0.0)
    events.log("error", "x" * 5000, "p", 3)
    (event,) = list(events)
    assert len(event.message) == 2048 and event.project == "p" and event.worker_id == 3
