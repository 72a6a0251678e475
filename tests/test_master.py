"""The master over real WebSockets on loopback, with clients written here from docs/protocol.md."""

from __future__ import annotations

import numpy as np
import pytest
import trio
from helpers.master import (
    N_PARAMS,
    SPEC,
    TOKEN,
    client,
    make_project,
    running_master,
)
from trio_websocket import ConnectionClosed, open_websocket_url

from mlitb.master import Master
from mlitb.protocol import (
    Ack,
    Allocation,
    CacheReport,
    CloseCode,
    CreateProject,
    Error,
    GetModel,
    Hello,
    ListProjects,
    Model,
    ParametersFrame,
    Pause,
    ProjectList,
    RemoveWorker,
    Resume,
    SetHyperparameters,
    Status,
    Subscribe,
    Welcome,
    Work,
    decode_text,
    encode_result,
    encode_text,
)


@pytest.mark.trio
async def test_trainer_gets_data_parameters_and_work_and_its_result_steps_the_model():
    with trio.fail_after(20):
        async with running_master() as (master, port):
            await make_project(port)
            async with client(port, role="trainer", project="p") as tr:
                welcome = await tr.expect(Welcome)
                assert welcome.project.parameter_count == N_PARAMS
                assert welcome.project.labels == ("a", "b", "c")
                alloc = await tr.expect(Allocation)
                assert sorted(alloc.added) == list(range(10)) and alloc.total == 10
                await tr.send(CacheReport(cached=alloc.added))
                params = await tr.expect(ParametersFrame)
                work = await tr.expect(Work)
                assert work.parameter_version == params.parameter_version == 0
                assert 0 < work.seconds <= 1.0
                grad = np.full(N_PARAMS, 2.0, np.float32)
                await tr.send(encode_result(grad, parameter_version=0, samples=4, loss_sum=4.0,
                                            correct=2, compute_seconds=0.1))
                next_params = await tr.expect(ParametersFrame, skip=(Work, Error))
                assert next_params.parameter_version == 1
                # AdaGrad's first step moves every parameter by lr * sign(mean gradient).
                np.testing.assert_allclose(next_params.vector, params.vector - 0.01, atol=1e-6)
                project = master.projects["p"]
                assert project.history[-1].loss == pytest.approx(1.0)
                assert project.history[-1].accuracy == pytest.approx(0.5)
                assert project.status().data.cached == 10


@pytest.mark.trio
async def test_operator_requests_and_status():
    with trio.fail_after(20):
        async with running_master() as (master, port):
            await make_project(port)
            async with client(port, role="operator", token=TOKEN) as op:
                await op.expect(Welcome)
                listing = await op.request(ListProjects(request_id="l"))
                assert isinstance(listing, ProjectList)
                (summary,) = listing.projects
                assert summary.name == "p" and summary.input_shape == (4, 1, 1)
                assert summary.data.total == 10
                assert isinstance(await op.request(Pause(request_id="1", project="p")), Ack)
                assert master.projects["p"].paused
                assert isinstance(await op.request(Resume(request_id="2", project="p")), Ack)
                reply = await op.request(SetHyperparameters(
                    request_id="3", project="p", hyperparameters={"learning_rate": 0.5},
                    iteration_time=3.0))
                assert isinstance(reply, Ack)
                assert master.projects["p"].optimizer.learning_rate == 0.5
                assert master.projects["p"].iteration_time == 3.0
                bad = await op.request(SetHyperparameters(
                    request_id="4", project="p", hyperparameters={"momentum": 0.5}))
                assert isinstance(bad, Error) and bad.code == "invalid_value"
                assert "momentum" in bad.message
                model = await op.request(GetModel(request_id="5", project="p", format="model"))
                assert isinstance(model, Model) and model.model["format"] == "mlitb-model"
                cnj = await op.request(GetModel(request_id="6", project="p", format="convnetjs"))
                assert cnj.model["layers"][0]["layer_type"] == "input"
                await op.send(Subscribe(request_id="7", project="p", interval=0.1))
                status = await op.expect(Status, skip=(Ack,))
                assert status.projects[0].name == "p"
                assert any(e.kind == "created" for e in status.events)
                missing = await op.request(Pause(request_id="8", project="nope"))
                assert isinstance(missing, Error) and missing.code == "unknown_project"


@pytest.mark.trio
async def test_operator_actions_need_the_token():
    with trio.fail_after(20):
        async with running_master() as (master, port):
            async with client(port, role="operator") as op:
                welcome = await op.expect(Welcome)
                assert not welcome.authorized
                reply = await op.request(CreateProject(request_id="c", name="x",
                                                       spec=tuple(SPEC)))
                assert isinstance(reply, Error) and reply.code == "forbidden"
                assert "x" not in master.projects
                assert isinstance(await op.request(ListProjects(request_id="l")), ProjectList)
            async with client(port, role="operator", token="wrong") as op:
                error = await op.expect(Error)
                assert error.code == "bad_token"
                with pytest.raises(ConnectionClosed) as info:
                    await op.receive()
                assert info.value.reason.code == CloseCode.POLICY_VIOLATION


@pytest.mark.trio
async def test_bad_frames_get_errors_and_the_master_keeps_serving():
    with trio.fail_after(30):
        async with running_master() as (master, port):
            await make_project(port)
            async with client(port, role="trainer", project="p") as bad, \
                    client(port, role="trainer", project="p") as good:
                await bad.expect(Welcome)
                await good.expect(Welcome)
                for junk in (b"\x00\x01garbage", "{not json", '{"type": "launch_missiles"}',
                             encode_result(np.zeros(3, np.float32), parameter_version=0,
                                           samples=1, loss_sum=0.0)):
                    await bad.send(junk)
                    error = await bad.expect(Error, skip=(Allocation, Work, ParametersFrame))
                    assert error.code in ("bad_frame", "bad_message")
                nan = np.zeros(N_PARAMS, np.float32)
                nan[7] = np.nan
                await bad.send(encode_result(nan, parameter_version=0, samples=1, loss_sum=0.0))
                error = await bad.expect(Error, skip=(Allocation, Work, ParametersFrame))
                assert "value 7" in error.message
                # A trainer may not act as an operator.
                reply = await bad.request(Pause(request_id="x", project="p"))
                assert isinstance(reply, Error) and reply.code == "forbidden"
                assert not master.projects["p"].paused
                # The other trainer still gets work.
                work = await good.expect(Work, skip=(Allocation, ParametersFrame))
                assert work.parameter_version == 0


@pytest.mark.trio
async def test_oversize_frames_close_with_1009():
    with trio.fail_after(20):
        async with running_master() as (master, port):
            await make_project(port)
            async with client(port, role="trainer", project="p") as tr:
                await tr.expect(Welcome)
                await tr.send("x" * (2 << 20))
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await tr.receive()
                assert info.value.reason.code == CloseCode.MESSAGE_TOO_BIG
            assert all(c.role != "trainer" for c in master.connections.values())


@pytest.mark.trio
async def test_unknown_project_and_missing_hello_are_refused():
    with trio.fail_after(20):
        async with running_master() as (master, port):
            async with client(port, role="trainer", project="nope") as tr:
                error = await tr.expect(Error)
                assert error.code == "unknown_project"
                with pytest.raises(ConnectionClosed) as info:
                    await tr.receive()
                assert info.value.reason.code == CloseCode.NO_PROJECT
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send_message(encode_text(ListProjects(request_id="l")))
                assert decode_text(await ws.get_message()).code == "hello_required"
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason.code == CloseCode.HELLO_REQUIRED


@pytest.mark.trio
async def test_removed_worker_gets_bye_and_its_data_is_reallocated():
    with trio.fail_after(20):
        async with running_master() as (master, port):
            await make_project(port)
            async with client(port, role="trainer", project="p") as a, \
                    client(port, role="trainer", project="p") as b:
                wa, wb = await a.expect(Welcome), await b.expect(Welcome)
                await a.expect(Allocation)
                await b.expect(Allocation)
                async with client(port, role="operator", token=TOKEN) as op:
                    await op.expect(Welcome)
                    reply = await op.request(RemoveWorker(request_id="r", worker_id=wa.worker_id))
                    assert isinstance(reply, Ack)
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await a.receive()
                assert info.value.reason.code == CloseCode.REMOVED
                alloc = await b.expect(Allocation, skip=(Work, ParametersFrame))
                assert alloc.total == 10
                assert master.projects["p"].allocator.allocation_of(wb.worker_id) == set(range(10))


@pytest.mark.trio
async def test_projects_start_from_the_masters_model_zoo(tmp_path):
    from mlitb.closure import Zoo, closure_from_project, save_closure
    from mlitb.nn import Net
    from mlitb.optim import make_optimizer
    from mlitb.protocol import ListZoo, ZooList
    from mlitb.training import Project

    net = Net(SPEC, seed=3, labels=["a", "b", "c"])
    trained = Project("trained", net, make_optimizer("adam", net.num_params), "adam", 2.0)
    trained.iteration = trained.parameter_version = 7
    save_closure(closure_from_project(trained), tmp_path / "trained.closure.json")
    zoo = Zoo(tmp_path / "zoo")
    zoo.add(tmp_path / "trained.closure.json")
    with trio.fail_after(20):
        async with running_master(zoo=zoo) as (master, port):
            async with client(port, role="operator", token=TOKEN) as op:
                await op.expect(Welcome)
                listing = await op.request(ListZoo(request_id="z"))
                assert isinstance(listing, ZooList)
                (entry,) = listing.entries
                assert (entry.name, entry.iteration, entry.optimizer) == ("trained", 7, "adam")
                assert entry.input_shape == (4, 1, 1) and entry.labels == ("a", "b", "c")
                reply = await op.request(CreateProject(request_id="c", name="again",
                                                       zoo="trained"))
                assert isinstance(reply, Ack), reply
                project = master.projects["again"]
                assert project.iteration == 7 and project.optimizer_name == "adam"
                assert (project.net.params == net.params).all()
                missing = await op.request(CreateProject(request_id="m", name="x", zoo="nope"))
                assert isinstance(missing, Error) and "no entry 'nope'" in missing.message


@pytest.mark.trio
async def test_counts_and_flags_arrive_as_json_numbers_and_are_taken():
    with trio.fail_after(20):
        async with running_master() as (master, port):
            async with client(port, role="operator", token=TOKEN) as op:
                await op.expect(Welcome)
                reply = await op.request(CreateProject(
                    request_id="c", name="s", spec=tuple(SPEC), optimizer="sgd",
                    hyperparameters={"nesterov": 1.0, "lr_decay_every": 3.0}))
                assert isinstance(reply, Ack), reply
                hp = master.projects["s"].optimizer.hyperparameters()
                assert hp["nesterov"] is True and hp["lr_decay_every"] == 3
                reply = await op.request(SetHyperparameters(
                    request_id="1", project="s", hyperparameters={"lr_decay_every": 5.0}))
                assert isinstance(reply, Ack), reply
                assert master.projects["s"].optimizer.hyperparameters()["lr_decay_every"] == 5
                bad = await op.request(SetHyperparameters(
                    request_id="2", project="s", hyperparameters={"lr_decay_every": 2.5}))
                assert isinstance(bad, Error) and "lr_decay_every: must be a whole number" in \
                    bad.message


def test_a_net_over_the_parameter_limit_is_refused_before_it_is_allocated() -> None:
    """A spec asking for 10^10 parameters is refused by counting (allocating them would take
    40 GB); the limit is what one parameters frame carries."""
    from mlitb.master import RequestError
    from mlitb.protocol import MAX_PARAMETERS

    huge = [{"type": "input", "out_sx": 100, "out_sy": 100, "out_depth": 1},
            {"type": "fc", "num_neurons": 1_000_000},
            {"type": "softmax", "num_classes": 2}]
    with pytest.raises(RequestError) as refused:
        Master().create_project("huge", huge)
    assert refused.value.code == "invalid_value"
    assert f"at most {MAX_PARAMETERS:,}" in str(refused.value)
    assert "huge" not in Master().projects


@pytest.mark.trio
async def test_a_client_that_stops_answering_pings_is_dropped_and_a_busy_one_is_not():
    """One keep_alive task pings every connection quiet for 2 s; a silent client (a raw
    WebSocket that never reads again, so never answers) is closed with 4006 within a few
    seconds, while a tracker that keeps answering stays."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

    async with running_master() as (master, port):
        await make_project(port)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host="127.0.0.1", target="/")))
        events: list[object] = []
        while not any(isinstance(e, AcceptConnection) for e in events):
            ws.receive_data(await stream.receive_some(1 << 16))
            events.extend(ws.events())
        await stream.send_all(ws.send(TextMessage(data=encode_text(Hello(
            role="tracker", client="python", host="silent", project="p")))))
        async with client(port, role="tracker", project="p") as answering:
            await answering.expect(Welcome)
            with trio.fail_after(15):
                while not any("no answer to ping" in e.message
                              for e in master.events.since(0, 10_000)):
                    await trio.sleep(0.2)
            with trio.move_on_after(5):
                while not any(isinstance(e, CloseConnection) for e in events):
                    data = await stream.receive_some(1 << 20)
                    if not data:
                        break
                    ws.receive_data(data)
                    events.extend(ws.events())
            assert any(isinstance(e, AcceptConnection) for e in events)
            closes = [e for e in events if isinstance(e, CloseConnection)]
            assert closes and closes[0].code == CloseCode.TIMED_OUT
            members = master.projects["p"].members
            assert [m.host for m in members.values()] == ["test"]  # the answering one
        await stream.aclose()
