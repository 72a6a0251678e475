"""Issue 11 on the master, over real WebSockets on loopback: every operator action needs the
operator token (a table over every message that changes something); a project with a join
token refuses trainers, trackers and stats workers without it (close 4007) and a real node
process exits with a clear message instead of retrying, and joins with ``--token``; tokens never
appear in status, project info, closures or the master's files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from mlitb.cluster import open_store, project_files, serve_cluster
from mlitb.dataserver import DataClient, DataServerError, write_archive
from mlitb.datasets import DIGITS_SPEC, digits
from mlitb.master import Master
from mlitb.protocol import (
    CLIENT_MESSAGES,
    Ack,
    Bye,
    CloseCode,
    CreateProject,
    DeleteProject,
    Error,
    Hello,
    Pause,
    RegisterData,
    RegisterDataServer,
    RemoveWorker,
    Resume,
    SetAccess,
    SetHyperparameters,
    SetOperatorToken,
    Welcome,
    decode_text,
    encode_text,
)

OPERATOR = "op-secret-token"
JOIN = "join-secret-token-1"
SPEC = [{"type": "input", "out_sx": 8, "out_sy": 8, "out_depth": 3},
        {"type": "softmax", "num_classes": 2}]

# One example of every operator message that needs the token (the table must name them all).
OPERATOR_ACTIONS: dict[type, Any] = {
    CreateProject: CreateProject(request_id="r", name="new", spec=tuple(SPEC)),
    DeleteProject: DeleteProject(request_id="r", project="victim"),
    Pause: Pause(request_id="r", project="p"),
    Resume: Resume(request_id="r", project="p"),
    SetHyperparameters: SetHyperparameters(request_id="r", project="p",
                                           hyperparameters={"learning_rate": 0.5}),
    RemoveWorker: RemoveWorker(request_id="r", worker_id=999),
    RegisterData: RegisterData(request_id="r", project="p", ids=(), label_names=(), labels=()),
    RegisterDataServer: RegisterDataServer(request_id="r", url="http://evil:8001"),
    SetAccess: SetAccess(request_id="r", project="p", join_token="stolen-token"),
    SetOperatorToken: SetOperatorToken(request_id="r", operator_token="stolen-operator-token"),
}


def test_the_table_names_every_operator_action() -> None:
    assert set(OPERATOR_ACTIONS) == {cls for cls in CLIENT_MESSAGES if cls.TOKEN}


@asynccontextmanager
async def operator(url: str, token: str | None) -> AsyncIterator[tuple[Any, Any]]:
    async with open_websocket_url(url) as ws:
        await ws.send_message(encode_text(Hello(role="operator", client="python", host="t",
                                                token=token)))
        yield ws, decode_text(await ws.get_message())


async def answer(ws: Any, message: Any) -> Any:
    await ws.send_message(encode_text(message))
    while True:
        reply = decode_text(await ws.get_message(), max_size=64 << 20)
        if getattr(reply, "request_id", None) == message.request_id:
            return reply


@pytest.mark.trio
@pytest.mark.parametrize("cls", list(OPERATOR_ACTIONS), ids=lambda c: c.TYPE)
async def test_every_operator_action_needs_the_operator_token(cls: type) -> None:
    master = Master(operator_token=OPERATOR)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(master.serve, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{port}"
            master.create_project("p", SPEC)
            master.create_project("victim", SPEC)
            before = (set(master.projects), master.projects["p"].paused,
                      dict(master.projects["p"].hyperparameters())
                      if hasattr(master.projects["p"], "hyperparameters") else None,
                      master.access.get("p"))
            # Without a token: read-only, every action refused with "forbidden".
            async with operator(url, None) as (ws, welcome):
                assert isinstance(welcome, Welcome) and not welcome.authorized
                reply = await answer(ws, OPERATOR_ACTIONS[cls])
                assert isinstance(reply, Error) and reply.code == "forbidden", reply
                assert "operator token" in reply.message
            after = (set(master.projects), master.projects["p"].paused,
                     dict(master.projects["p"].hyperparameters())
                     if hasattr(master.projects["p"], "hyperparameters") else None,
                     master.access.get("p"))
            assert after == before  # nothing changed
            # A wrong token: error bad_token, close 1008.
            async with operator(url, "wrong-token") as (ws, welcome):
                assert isinstance(welcome, Error) and welcome.code == "bad_token"
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == CloseCode.POLICY_VIOLATION
            # With the token: carried out (or refused for what it says, never "forbidden").
            async with operator(url, OPERATOR) as (ws, welcome):
                assert welcome.authorized
                reply = await answer(ws, OPERATOR_ACTIONS[cls])
                assert not (isinstance(reply, Error) and reply.code == "forbidden"), reply
                if cls in (CreateProject, DeleteProject, Pause, SetAccess):
                    assert not isinstance(reply, Error), reply
            nursery.cancel_scope.cancel()


async def member_hello(url: str, role: str, join_token: str | None,
                       raw: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """Say hello as ``role``; (first message, close code or None if the connection stays)."""
    async with open_websocket_url(url) as ws:
        if raw is not None:
            await ws.send_message(json.dumps(raw))
        else:
            await ws.send_message(encode_text(Hello(role=role, client="python", host="t",
                                                    project="p", join_token=join_token)))
        first = decode_text(await ws.get_message(), max_size=64 << 20)
        if isinstance(first, Welcome):
            return first, None
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            return first, exc.reason.code


@pytest.mark.trio
async def test_a_join_token_project_refuses_members_without_it(tmp_path: Path) -> None:
    files = project_files(tmp_path)
    master = Master(operator_token=OPERATOR, files=files)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(master.serve, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{port}"
            master.create_project("p", SPEC)
            master.create_project("open", SPEC)
            async with operator(url, OPERATOR) as (ws, _):
                reply = await answer(ws, SetAccess(request_id="a", project="p", join_token=JOIN))
                assert not isinstance(reply, Error), reply
            for role in ("trainer", "tracker", "stats"):
                for given in (None, "wrong-token", JOIN[:-1]):
                    first, code = await member_hello(url, role, given)
                    assert isinstance(first, Error) and first.code == "join_refused", first
                    assert "needs its join token" in first.message
                    assert code == CloseCode.JOIN_REFUSED == 4007
                    assert JOIN not in first.message
                first, code = await member_hello(url, role, JOIN)
                assert isinstance(first, Welcome) and code is None
            # A client from before the field (no join_token at all) still joins an open project.
            first, code = await member_hello(url, "trainer", None, raw={
                "type": "hello", "protocol": 2, "role": "trainer", "client": "python",
                "host": "old", "project": "open"})
            assert isinstance(first, Welcome) and first.project.name == "open"
            # The token is nowhere the operator or others can read, nor in the closure.
            status = encode_text(master.status(None))
            closure = json.dumps(master.closure_of("p"))
            info = encode_text(Welcome(worker_id=1, role="trainer", data_url="http://x",
                                       server_version="x", project=master.projects["p"].info()))
            await master.save_project("p")
            saved = "".join(p.read_text() for p in files.root.iterdir() if p.is_file())
            for text in (status, closure, info, saved):
                assert JOIN not in text
            assert "join_sha256" in (files.root / "access.json").read_text()
            nursery.cancel_scope.cancel()
    # A restarted master keeps the (hashed) join token.
    restarted = Master(operator_token=OPERATOR, files=files)
    restarted.restore()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(restarted.serve, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{port}"
            assert (await member_hello(url, "trainer", None))[1] == CloseCode.JOIN_REFUSED
            assert isinstance((await member_hello(url, "trainer", JOIN))[0], Welcome)
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_node_without_the_join_token_exits_and_one_with_it_trains(
        tmp_path: Path) -> None:
    master = Master(operator_token=OPERATOR)
    store = open_store(tmp_path / "data")
    train, _, names = digits()
    archive = write_archive(tmp_path / "train.zip", [(names[int(y)], image[..., 0]) for image, y
                                                     in zip(train.images[:400],
                                                            train.labels[:400])])
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            address = await nursery.start(lambda task_status: serve_cluster(
                master, store, "127.0.0.1", 0, 0, task_status=task_status))
            master.create_project("p", DIGITS_SPEC, iteration_time=1.0)
            master.set_access("p", join_token=JOIN)
            await trio.to_thread.run_sync(
                lambda: DataClient(address.data_url, token=OPERATOR).upload("p", archive))
            command = [sys.executable, "-m", "mlitb", "node", "join", address.master_url,
                       "--project", "p", "--workers", "1"]
            for extra in ([], ["--token", "wrong-token"]):
                refused = await trio.run_process(command + extra, capture_stdout=True,
                                                 capture_stderr=True, check=False)
                text = (refused.stdout + refused.stderr).decode()
                assert refused.returncode == 2, text  # refused: no retrying forever
                assert "4007" in text and "needs its join token" in text, text
                assert "wrong-token" not in text
            log = open(tmp_path / "node.log", "w")
            node = subprocess.Popen(command + ["--token", JOIN], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                while master.projects["p"].samples_trained == 0:
                    await trio.sleep(0.1)
            finally:
                node.kill()
                node.wait()
                log.close()
            assert JOIN not in (tmp_path / "node.log").read_text()
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_rotated_operator_token_applies_at_once_everywhere(tmp_path: Path) -> None:
    """set_operator_token: the old token is refused by the next hello and by the embedded data
    server's writes, the new one works for both; drop_operators closes the other operator
    connections (bye ``removed``) but not the one that asked; a short token is refused."""
    new = "rotated-operator-token-2"
    master = Master(operator_token=OPERATOR)
    store = open_store(tmp_path / "data")
    train, _, names = digits()
    archive = write_archive(tmp_path / "train.zip", [(names[int(y)], image[..., 0]) for image, y
                                                     in zip(train.images[:40],
                                                            train.labels[:40])])
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            address = await nursery.start(lambda task_status: serve_cluster(
                master, store, "127.0.0.1", 0, 0, task_status=task_status))
            master.create_project("p", DIGITS_SPEC)
            url = address.master_url
            async with operator(url, OPERATOR) as (other, _), \
                    operator(url, OPERATOR) as (ws, welcome):
                assert welcome.authorized
                short = await answer(ws, SetOperatorToken(request_id="s", operator_token="short"))
                assert isinstance(short, Error) and short.code == "invalid_value", short
                assert master.operator_token == OPERATOR
                reply = await answer(ws, SetOperatorToken(request_id="n", operator_token=new,
                                                          drop_operators=True))
                assert isinstance(reply, Ack), reply
                bye = decode_text(await other.get_message())
                assert isinstance(bye, Bye) and bye.reason == "removed", bye
                # The one that asked stays, still authorized.
                listing = await answer(ws, SetAccess(request_id="a", project="p",
                                                     keep=("join", "contributor")))
                assert isinstance(listing, Ack), listing
            async with operator(url, OPERATOR) as (_, refused):
                assert isinstance(refused, Error) and refused.code == "bad_token"
            async with operator(url, new) as (_, welcome):
                assert isinstance(welcome, Welcome) and welcome.authorized

            def upload(token: str) -> int:
                try:
                    return int(DataClient(address.data_url, token=token).upload(
                        "p", archive)["count"])
                except DataServerError as exc:
                    return -exc.status

            assert await trio.to_thread.run_sync(upload, OPERATOR) == -401
            assert await trio.to_thread.run_sync(upload, new) == 40
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_non_ascii_operator_token_is_refused_like_any_wrong_one() -> None:
    """compare_digest refuses non-ASCII str: the token is compared as UTF-8 bytes, so a
    hello with "café" gets bad_token and the master goes on serving."""
    master = Master(operator_token=OPERATOR)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(master.serve, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{port}"
            async with operator(url, "café-token") as (_, refused):
                assert isinstance(refused, Error) and refused.code == "bad_token", refused
            async with operator(url, OPERATOR) as (_, welcome):
                assert isinstance(welcome, Welcome) and welcome.authorized
            nursery.cancel_scope.cancel()
