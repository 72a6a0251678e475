"""Robust aggregation over real sockets (issue 11): a real master with its data server, a real
``mlitb node join`` process with two workers, and a hostile raw WebSocket trainer that answers
every work order with 1e30-valued (then sign-flipped) results claiming the most samples the
intake allows. The project aggregates by median: the hostile results are refused, the trainer is
dropped after 3 rounds with an event saying why, and the project trains on."""

from __future__ import annotations

import numpy as np
import pytest
import trio
from helpers.master import Client
from helpers.replay import PROJECT, cluster, node, write_digits
from trio_websocket import ConnectionClosed, open_websocket_url

from mlitb.datasets import digits, to_input
from mlitb.protocol import (
    MAX_LARGE_TEXT_FRAME,
    Allocation,
    CacheReport,
    CloseCode,
    Hello,
    ParametersFrame,
    ResultKind,
    Training,
    Welcome,
    Work,
    encode_result,
)
from mlitb.training._project import MAX_SAMPLES_PER_SECOND

T = 1.0


async def hostile_trainer(url: str, sent: list[int], closed: list[int]) -> None:
    async with open_websocket_url(url, max_message_size=MAX_LARGE_TEXT_FRAME) as ws:
        c = Client(ws)
        await c.send(Hello(role="trainer", client="python", host="hostile", project=PROJECT))
        welcome = await c.expect(Welcome)
        n = welcome.project.parameter_count
        try:
            while True:
                msg = await c.receive()
                if isinstance(msg, Allocation):
                    await c.send(CacheReport(cached=msg.added))
                elif isinstance(msg, Work):
                    sign = -1.0 if len(sent) % 2 else 1.0
                    samples = int(MAX_SAMPLES_PER_SECOND * T)
                    await c.send(encode_result(
                        np.full(n, sign * 1e30, np.float32),
                        parameter_version=msg.parameter_version, samples=samples,
                        loss_sum=0.0, correct=samples, compute_seconds=0.01,
                        kind=ResultKind.GRADIENT_SUM))
                    sent.append(msg.parameter_version)
                else:
                    assert not isinstance(msg, ParametersFrame) or msg.vector.size == n
        except ConnectionClosed as exc:
            closed.append(exc.reason.code)


@pytest.mark.trio
async def test_a_hostile_trainer_beside_a_real_node_is_refused_dropped_and_training_goes_on(
        tmp_path) -> None:
    train_zip, test_zip = write_digits(tmp_path)
    _, test, _ = digits()
    test_x = to_input(test.images)
    with trio.fail_after(240):
        async with cluster(tmp_path, train_zip, test_zip, iteration_time=T, optimizer="adam",
                           hyperparameters={"learning_rate": 0.02}, seed=1,
                           training=Training(aggregation="median")) as (master, address), \
                node(address, tmp_path, workers=2):
            project = master.projects[PROJECT]
            while project.parameter_version < 3:  # the node trains first
                await trio.sleep(0.1)
            sent: list[int] = []
            closed: list[int] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hostile_trainer, address.master_url, sent, closed)
                while not closed:
                    await trio.sleep(0.1)
                    assert np.isfinite(project.net.params).all()
            assert closed == [CloseCode.TOO_MANY_ERRORS]
            assert len(sent) >= 3
            events = [e.message for e in master.events if e.kind == "removed"]
            assert any("dropped from project digits" in m and "refused 3 rounds in a row" in m
                       and "round's median" in m for m in events), events
            assert not any(e.kind == "error" for e in master.events), \
                [e.message for e in master.events if e.kind == "error"]
            target = project.parameter_version + 15
            while project.parameter_version < target:
                await trio.sleep(0.2)
            stats = project.net.evaluate(test_x, test.labels)
            assert stats.correct / stats.count > 0.7, stats
            assert len(project.trainers()) == 2
