"""Hostile clients against a real master on loopback (issue 11): each crash that took the master
down or corrupted a project, as a regression test. The master runs in the test's own trio run, so
an exception escaping it fails the test."""

from __future__ import annotations

import base64
import os
import resource
from contextlib import AsyncExitStack
from typing import Any

import numpy as np
import pytest
import trio
from helpers.master import N_PARAMS, SPEC, TOKEN, Client, client, make_project, running_master
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlitb.closure import closure_from_dict, closure_from_project, closure_to_dict, load_closure
from mlitb.master import Master, ProjectFiles
from mlitb.optim import make_optimizer
from mlitb.protocol import (
    MAX_U32,
    Ack,
    Allocation,
    CacheReport,
    CloseCode,
    Error,
    GetModel,
    ListProjects,
    Model,
    ParametersFrame,
    Pause,
    ProjectList,
    RegisterData,
    ResultKind,
    Resume,
    Status,
    Subscribe,
    Training,
    Welcome,
    Work,
    encode_result,
    encode_text,
)


async def operator(stack: AsyncExitStack, port: int) -> Client:
    op = await stack.enter_async_context(client(port, role="operator", token=TOKEN))
    await op.expect(Welcome)
    return op


async def trainers_with_work(stack: AsyncExitStack, port: int, op: Client, n: int,
                             project: str = "p") -> list[tuple[Client, Work]]:
    """``n`` trainers admitted to one iteration: the project is paused while they join and
    cache their share, then resumed, so every one gets a work order of the same round."""
    assert isinstance(await op.request(Pause(request_id="pause", project=project)), Ack)
    joined = []
    for _ in range(n):
        tr = await stack.enter_async_context(client(port, role="trainer", project=project))
        await tr.expect(Welcome)
        joined.append(tr)
    for tr in joined:
        alloc = await tr.expect(Allocation, skip=(Status, ParametersFrame))
        await tr.send(CacheReport(cached=alloc.added))
    assert isinstance(await op.request(Resume(request_id="resume", project=project)), Ack)
    out = []
    for tr in joined:
        params = await tr.expect(ParametersFrame, skip=(Status, Allocation))
        work = await tr.expect(Work)
        assert work.parameter_version == params.parameter_version
        out.append((tr, work))
    return out


async def next_work(tr: Client) -> tuple[ParametersFrame, Work]:
    params = await tr.expect(ParametersFrame, skip=(Status, Work, Error, Allocation))
    work = await tr.expect(Work, skip=(Status, Error))
    return params, work


def result(work: Work, value: float, samples: int = 1, n: int = N_PARAMS,
           kind: ResultKind = ResultKind.GRADIENT_SUM) -> bytes:
    return encode_result(np.full(n, value, np.float32), parameter_version=work.parameter_version,
                         samples=samples, loss_sum=float(samples), correct=0,
                         compute_seconds=0.01, kind=kind, steps=1 if kind is
                         ResultKind.PARAMETER_DELTA else 0)


async def honest_round_steps(master: Master, tr: Client, name: str = "p") -> None:
    """The project still trains: an honest result on the next round takes a step."""
    before = master.projects[name].parameter_version
    _, work = await next_work(tr)
    await tr.send(result(work, 0.5, samples=2))
    while master.projects[name].parameter_version == before:
        await trio.sleep(0.05)
    assert np.isfinite(master.projects[name].net.params).all()


def closure_loads(master: Master, name: str = "p") -> None:
    closure_from_dict(closure_to_dict(closure_from_project(master.projects[name])))


def errors(master: Master) -> list[str]:
    return [e.message for e in master.events if e.kind == "error"]


# -- 1. samples = 2^32-1 ----------------------------------------------------------------------------
@pytest.mark.trio
async def test_results_claiming_max_u32_samples_are_refused_and_status_and_closure_hold(tmp_path):
    files = ProjectFiles(tmp_path / "projects")
    with trio.fail_after(30):
        async with running_master(files=files) as (master, port), AsyncExitStack() as stack:
            await make_project(port)
            op = await operator(stack, port)
            await op.send(Subscribe(request_id="s", interval=0.1))
            (a, wa), (b, wb) = await trainers_with_work(stack, port, op, 2)
            for tr, work in ((a, wa), (b, wb)):
                await tr.send(result(work, 1.0, samples=MAX_U32))
                refused = await tr.expect(Error, skip=(Status,))
                assert refused.code == "invalid_value"
                assert "more than the work order allows" in refused.message
            for _ in range(3):  # statuses keep encoding: the master is up
                await op.expect(Status)
            assert all(p.samples <= MAX_U32 for p in master.projects["p"].history)
            await honest_round_steps(master, a)
            await master.save_project("p")
            assert load_closure(files.path("p")).parameter_version >= 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, MAX_U32), min_size=1, max_size=6),
       st.floats(0.0, 1e308, allow_nan=False))
def test_totals_that_are_encoded_saturate(samples: list[int], loss_sum: float) -> None:
    """Whatever the results claim once accepted (here placed past the intake check), the
    history point encodes and the closure reads back."""
    from mlitb.nn import Net
    from mlitb.protocol import ResultFrame, encode_text
    from mlitb.training import Member, Project

    net = Net(SPEC, seed=1, labels=["a", "b", "c"])
    project = Project("p", net, make_optimizer("adagrad", net.num_params), "adagrad", 1.0)
    project.add_data("train", range(10))
    for w in range(1, len(samples) + 1):
        project.add_member(Member(w, "trainer", "python", "h"))
    project.admit_pending()
    it = project.plan_iteration(0.0)
    for w, n in zip(sorted(it.orders), samples, strict=True):
        it.results[w] = (ResultFrame(parameter_version=0, kind=ResultKind.GRADIENT_SUM,
                                     samples=n, correct=0, loss_sum=loss_sum,
                                     compute_seconds=0.1,
                                     vector=np.full(net.num_params, 1.0, np.float32)), 0.5)
    project.finish_iteration(1.0)
    point = project.history[-1]
    assert point.samples == min(sum(samples), MAX_U32)
    encode_text(Status(time=0.0, projects=(project.status(),)))
    closure_from_dict(closure_to_dict(closure_from_project(project)))


# -- 2. float32 overflow of the sum -------------------------------------------------------------
@pytest.mark.trio
async def test_results_whose_sum_overflows_float32_skip_the_step_and_the_master_stays_up():
    with trio.fail_after(30):
        async with running_master() as (master, port), AsyncExitStack() as stack:
            await make_project(port)
            op = await operator(stack, port)
            (a, wa), (b, wb) = await trainers_with_work(stack, port, op, 2)
            before = master.projects["p"].net.params.copy()
            await a.send(result(wa, 3.4e38))
            await b.send(result(wb, 3.4e38))
            while not any("step was refused" in m for m in errors(master)):
                await trio.sleep(0.05)
            project = master.projects["p"]
            assert project.parameter_version == 0
            assert (project.net.params == before).all()
            assert "not finite" in errors(master)[-1]
            await honest_round_steps(master, a)
            assert isinstance(await op.request(ListProjects(request_id="l")), ProjectList)
            closure_loads(master)


@pytest.mark.trio
async def test_parameter_deltas_whose_average_overflows_are_refused_too():
    with trio.fail_after(30):
        async with running_master() as (master, port), AsyncExitStack() as stack:
            await make_project(port, training=Training(algorithm="local"))
            op = await operator(stack, port)
            (a, wa), (b, wb) = await trainers_with_work(stack, port, op, 2)
            before = master.projects["p"].net.params.copy()
            for tr, work in ((a, wa), (b, wb)):  # 4 samples x 3e38 overflows float32
                await tr.send(result(work, 3e38, samples=4, kind=ResultKind.PARAMETER_DELTA))
            while not any("step was refused" in m for m in errors(master)):
                await trio.sleep(0.05)
            project = master.projects["p"]
            assert (project.net.params == before).all() and project.parameter_version == 0
            assert np.isfinite(project.outer.state()["velocity"]).all()
            _, work = await next_work(a)
            await a.send(result(work, 0.01, samples=2, kind=ResultKind.PARAMETER_DELTA))
            while project.parameter_version == 0:
                await trio.sleep(0.05)
            closure_loads(master)


# -- 3. 1e30: AdaGrad's accumulator ---------------------------------------------------------------
@pytest.mark.trio
async def test_a_result_of_1e30_never_reaches_adagrad_state_and_downloads_keep_working(tmp_path):
    files = ProjectFiles(tmp_path / "projects")
    with trio.fail_after(30):
        async with running_master(files=files) as (master, port), AsyncExitStack() as stack:
            await make_project(port)
            op = await operator(stack, port)
            ((a, wa),) = await trainers_with_work(stack, port, op, 1)
            project = master.projects["p"]
            before = project.net.params.copy()
            await a.send(result(wa, 1e30))
            while not any("step was refused" in m for m in errors(master)):
                await trio.sleep(0.05)
            assert "grad_sq_sum" in errors(master)[-1]
            state = project.optimizer.state()
            assert np.isfinite(state["grad_sq_sum"]).all() and state["step"] == 0
            assert (project.net.params == before).all()
            model = await op.request(GetModel(request_id="m", project="p", format="closure"))
            assert isinstance(model, Model), model
            closure_from_dict(model.model)
            await honest_round_steps(master, a)
            await master.save_project("p")
            load_closure(files.path("p"))


@pytest.mark.trio
async def test_a_closure_that_cannot_be_written_is_an_error_not_a_crash_and_no_file(tmp_path):
    """Should a non-finite value reach the model anyway (a bug), a download is answered with
    an error, the autosave keeps the previous file, and the master serves on."""
    files = ProjectFiles(tmp_path / "projects")
    with trio.fail_after(30):
        async with running_master(files=files) as (master, port), AsyncExitStack() as stack:
            await make_project(port)
            await master.save_project("p")
            good = files.path("p").read_bytes()
            op = await operator(stack, port)
            master.projects["p"].net.params[3] = np.inf
            reply = await op.request(GetModel(request_id="m", project="p", format="closure"))
            assert isinstance(reply, Error) and reply.code == "internal"
            assert "NaN or infinite" in reply.message
            await master.save_project("p")
            assert files.path("p").read_bytes() == good
            assert any("autosave" in m for m in errors(master))
            assert isinstance(await op.request(ListProjects(request_id="l")), ProjectList)


def test_guarded_step_restores_parameters_state_and_learning_rate() -> None:
    from mlitb.training import StepRefused, guarded_step

    params = np.ones(4, np.float32)
    opt = make_optimizer("adagrad", 4, learning_rate=0.1, lr_decay=0.5, lr_decay_every=1)
    guarded_step(opt, params, np.full(4, 0.5, np.float32))
    saved, state, lr = params.copy(), opt.state(), opt.learning_rate
    with pytest.raises(StepRefused):
        guarded_step(opt, params, np.full(4, 1e30, np.float32))
    assert (params == saved).all() and opt.learning_rate == lr
    after = opt.state()
    assert after["step"] == state["step"]
    assert (after["grad_sq_sum"] == state["grad_sq_sum"]).all()


@pytest.mark.trio
async def test_an_error_inside_one_project_loop_pauses_that_project_only():
    with trio.fail_after(30):
        async with running_master() as (master, port), AsyncExitStack() as stack:
            await make_project(port, name="p")
            await make_project(port, name="q")
            op = await operator(stack, port)
            ((a, wa),) = await trainers_with_work(stack, port, op, 1, "p")
            ((b, wb),) = await trainers_with_work(stack, port, op, 1, "q")

            def broken(*args: Any) -> Any:
                raise RuntimeError("a reducer bug")

            master.projects["p"].reducer = broken
            await a.send(result(wa, 0.5))
            while not master.projects["p"].paused:
                await trio.sleep(0.05)
            assert any("project p paused" in m and "a reducer bug" in m for m in errors(master))
            await b.send(result(wb, 0.5))
            await honest_round_steps(master, b, "q")
            assert master.projects["p"].state == "paused"


# -- 4. memory before hello -------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


async def _stranger_with_a_huge_frame(port: int, size: int) -> int | None:
    """A raw WebSocket client (no library, so it holds no copy of the frame): the upgrade, then
    one binary frame header declaring ``size`` bytes and zeros streamed after it until the master
    answers. Returns the close code the master sent."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += await stream.receive_some(4096)
    assert b" 101 " in answer.split(b"\r\n", 1)[0]
    data = answer.split(b"\r\n\r\n", 1)[1]
    header = bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big") + bytes(4)  # mask 0: zeros

    async def send(cancel: trio.CancelScope) -> None:
        with cancel:
            await stream.send_all(header)
            chunk = bytes(64 << 10)
            for _ in range(size // len(chunk)):
                await stream.send_all(chunk)

    sending = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, sending)
        try:
            while len(data) < 4:
                more = await stream.receive_some(4096)
                if not more:
                    break
                data += more
        except trio.BrokenResourceError:
            pass
        sending.cancel()
    await stream.aclose()
    return int.from_bytes(data[2:4], "big") if data[:1] == b"\x88" and len(data) >= 4 else None


@pytest.mark.trio
async def test_big_frames_before_hello_are_closed_with_message_too_big_and_not_buffered():
    with trio.fail_after(60):
        async with running_master() as (master, port):
            rss = _rss_bytes()
            codes: list[int | None] = []

            async def stranger() -> None:
                codes.append(await _stranger_with_a_huge_frame(port, 60 << 20))

            async with trio.open_nursery() as nursery:  # as in issue 11: 16 x 60 MiB
                for _ in range(16):
                    nursery.start_soon(stranger)
            assert codes == [CloseCode.MESSAGE_TOO_BIG] * 16
            assert _rss_bytes() - rss < 32 << 20
            while master.connections:
                await trio.sleep(0.05)


@pytest.mark.trio
async def test_after_the_welcome_trainers_and_operators_get_their_normal_frame_limit():
    wide = [dict(SPEC[0]), {"type": "fc", "num_neurons": 6000, "activation": "relu"},
            {"type": "softmax", "num_classes": 3}]
    from mlitb.protocol import MAX_HELLO_FRAME

    n = 4 * 6000 + 6000 + 6000 * 3 + 3
    assert 4 * n > MAX_HELLO_FRAME
    with trio.fail_after(30):
        async with running_master() as (master, port), AsyncExitStack() as stack:
            op = await operator(stack, port)
            from mlitb.protocol import CreateProject
            reply = await op.request(CreateProject(request_id="c", name="w", spec=tuple(wide),
                                                   iteration_time=1.0))
            assert isinstance(reply, Ack), reply
            ids = tuple(range(20_000))
            register = RegisterData(request_id="d", project="w", ids=ids,
                                    label_names=("a", "b", "c"),
                                    labels=tuple(i % 3 for i in ids))
            assert len(encode_text(register)) > MAX_HELLO_FRAME
            assert (await op.request(register)).train == 20_000
            ((a, wa),) = await trainers_with_work(stack, port, op, 1, "w")
            await a.send(result(wa, 0.5, n=n))
            while master.projects["w"].parameter_version == 0:
                await trio.sleep(0.05)

