"""The client session without I/O (mlitb/protocol/_session.py): the handshake, request ids and
the close-code policy every client of the master follows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlitb.protocol import (
    FINAL_CLOSE_CODES,
    Ack,
    Answered,
    Bye,
    ClientSession,
    CloseCode,
    Error,
    Finality,
    FrameArrived,
    Hello,
    ListProjects,
    ProjectList,
    Pushed,
    Refused,
    RequestRefusedError,
    SessionError,
    Status,
    Welcome,
    WireError,
    as_answer,
    decode_text,
    describe_close,
    encode_text,
)

OPERATOR = Hello(role="operator", client="python", host="h", token="t")


def welcome(role: str = "operator") -> str:
    return encode_text(Welcome(worker_id=7, role=role, authorized=True, data_url=None,  # type: ignore[arg-type]
                               server_version="0"))


def opened() -> ClientSession:
    session = ClientSession(OPERATOR)
    session.start()
    session.receive(welcome())
    return session


def test_the_session_starts_with_its_hello_and_opens_on_the_welcome() -> None:
    session = ClientSession(OPERATOR)
    assert decode_text(session.start()) == OPERATOR
    assert session.state == "greeting"
    with pytest.raises(RuntimeError):
        session.request(ListProjects(request_id="-"))  # not before the welcome
    event = session.receive(welcome())
    assert event is not None and event.welcome.worker_id == 7  # type: ignore[union-attr]
    assert session.state == "open" and session.welcome is not None


def test_an_error_before_the_welcome_is_a_refusal_whose_message_explains_the_close() -> None:
    session = ClientSession(OPERATOR)
    session.start()
    event = session.receive(encode_text(Error(code="bad_token", message="wrong operator token")))
    assert isinstance(event, Refused) and event.error.code == "bad_token"
    closed = session.closed(CloseCode.POLICY_VIOLATION, "")
    assert closed.final is Finality.REFUSED
    assert closed.reason == "wrong operator token"
    assert closed.description == "close code 1008 (POLICY_VIOLATION): wrong operator token"


@pytest.mark.parametrize("first", [b"\x00", encode_text(Ack(request_id="r1"))])
def test_anything_but_a_welcome_or_an_error_first_breaks_the_session(first) -> None:
    session = ClientSession(OPERATOR)
    session.start()
    with pytest.raises(SessionError) as raised:
        session.receive(first)
    assert raised.value.final is None  # another connection may go better


def test_a_welcome_for_another_role_or_project_is_final() -> None:
    session = ClientSession(Hello(role="tracker", client="python", host="h", project="p"))
    session.start()
    with pytest.raises(SessionError, match="does not match the hello") as raised:
        session.receive(welcome("operator"))
    assert raised.value.final is Finality.ERROR


def test_answers_are_matched_to_their_requests_by_id_and_the_rest_is_pushed() -> None:
    session = opened()
    first, text = session.request(ListProjects(request_id="-"))
    second, _ = session.request(ListProjects(request_id="-"))
    assert decode_text(text).request_id == first != second  # type: ignore[union-attr]
    assert session.pending == (first, second)
    status = Status(time=1.0, projects=(), events=())
    assert session.receive(encode_text(status)) == Pushed(status)
    reply = ProjectList(request_id=second, projects=())
    assert session.receive(encode_text(reply)) == Answered(second, reply)
    assert session.pending == (first,)
    assert isinstance(session.receive(b"frame"), FrameArrived)


def test_an_abandoned_request_drops_its_late_answer_but_not_a_late_error() -> None:
    session = opened()
    request_id, _ = session.request(ListProjects(request_id="-"))
    session.abandon(request_id)
    assert session.receive(encode_text(Ack(request_id=request_id))) is None
    error = Error(code="internal", message="x", request_id=request_id)
    assert session.receive(encode_text(error)) == Pushed(error)


def test_an_invalid_message_raises_and_leaves_the_session_usable() -> None:
    session = opened()
    with pytest.raises(WireError):
        session.receive('{"type": "nonsense"}')
    assert session.state == "open"
    request_id, _ = session.request(ListProjects(request_id="-"))
    assert isinstance(session.receive(encode_text(Ack(request_id=request_id))), Answered)


def test_a_bye_explains_the_close_that_follows_and_unanswered_requests_are_named() -> None:
    session = opened()
    request_id, _ = session.request(ListProjects(request_id="-"))
    session.receive(encode_text(Bye(reason="removed", message="by the operator")))
    closed = session.closed(CloseCode.REMOVED, "removed")
    assert closed.final is Finality.REMOVED and closed.unanswered == (request_id,)
    assert closed.description == "close code 4003 (REMOVED): by the operator (bye: removed)"
    assert session.state == "closed" and session.pending == ()


@pytest.mark.parametrize("code", list(CloseCode) + [1005, 1006, 4999, None])
def test_only_the_final_close_codes_stop_a_client(code) -> None:
    closed = opened().closed(code, None)
    assert closed.final is FINAL_CLOSE_CODES.get(code)  # type: ignore[arg-type]
    expected = {CloseCode.GOING_AWAY, CloseCode.NORMAL, CloseCode.INTERNAL_ERROR,
                CloseCode.TIMED_OUT, CloseCode.TOO_MANY_CONNECTIONS}
    assert (closed.final is None) == (code in expected or code in (1005, 1006, 4999, None))


def test_close_codes_are_described_by_name() -> None:
    assert describe_close(4002, "no project") == "close code 4002 (NO_PROJECT): no project"
    assert describe_close(1006) == "close code 1006 (ABNORMAL_CLOSURE)"
    assert describe_close(4999) == "close code 4999 (unknown)"
    assert describe_close(None) == "close code None (none)"


def test_an_answer_is_the_expected_type_or_a_refusal() -> None:
    assert as_answer(Ack(request_id="r1"), Ack) == Ack(request_id="r1")
    with pytest.raises(RequestRefusedError) as refused:
        as_answer(Error(code="forbidden", message="no"), Ack)
    assert refused.value.code == "forbidden"
    with pytest.raises(Exception, match="expected ProjectList"):
        as_answer(Ack(request_id="r1"), ProjectList)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["send", "answer", "abandon", "push"]),
                          st.integers(0, 20)), max_size=60))
def test_every_answer_reaches_the_request_it_belongs_to_and_nothing_else(steps) -> None:
    session = opened()
    sent: list[str] = []
    waiting: set[str] = set()
    for action, pick in steps:
        if action == "send":
            request_id, _ = session.request(ListProjects(request_id="-"))
            assert request_id not in sent
            sent.append(request_id)
            waiting.add(request_id)
        elif action == "push":
            assert isinstance(session.receive(encode_text(Status(time=0.0, projects=(),
                                                                 events=()))), Pushed)
        elif sent:
            request_id = sent[pick % len(sent)]
            if action == "abandon":
                session.abandon(request_id)
                waiting.discard(request_id)
                continue
            event = session.receive(encode_text(Ack(request_id=request_id)))
            if request_id in waiting:
                assert event == Answered(request_id, Ack(request_id=request_id))
                waiting.discard(request_id)
            else:
                assert event is None  # answered before, or abandoned
        assert set(session.pending) == waiting
    assert set(session.closed(CloseCode.GOING_AWAY).unanswered) == waiting


def test_the_master_reads_a_hello_first_and_nothing_else() -> None:
    from mlitb.protocol import read_hello

    assert read_hello(encode_text(OPERATOR)) == OPERATOR
    for first in (b"\x00", encode_text(Ack(request_id="r1"))):
        with pytest.raises(WireError) as refused:
            read_hello(first)
        assert refused.value.code == "hello_required"
        assert refused.value.close_code == CloseCode.HELLO_REQUIRED
    with pytest.raises(WireError) as refused:
        read_hello('{"type": "hello", "protocol": 999}')
    assert refused.value.close_code == CloseCode.VERSION_MISMATCH
