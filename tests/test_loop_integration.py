"""The event loop with real node processes on loopback: a worker killed mid-iteration, a worker
that stops answering, and a worker joining late."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from mlitb.cluster import ClusterAddress, open_store, serve_cluster
from mlitb.dataserver import DataClient, write_archive
from mlitb.datasets import DIGITS_SPEC, digits
from mlitb.master import Master
from mlitb.protocol import Training

PROJECT = "digits"
T = 1.0


@asynccontextmanager
async def cluster(tmp_path: Path, training: Training | None = None
                  ) -> AsyncIterator[tuple[Master, ClusterAddress, int]]:
    master = Master(operator_token="secret")
    store = open_store(tmp_path)
    train, _, names = digits()
    archive = write_archive(tmp_path / "train.zip", [(names[int(y)], image[..., 0]) for image, y
                                                     in zip(train.images, train.labels)])
    async with trio.open_nursery() as nursery:
        address = await nursery.start(lambda task_status: serve_cluster(
            master, store, "127.0.0.1", 0, 0, task_status=task_status))
        if training is not None and training.algorithm == "local":
            master.create_project(PROJECT, DIGITS_SPEC, iteration_time=T, optimizer="nesterov",
                                  hyperparameters={"learning_rate": 0.02}, training=training)
        else:
            master.create_project(PROJECT, DIGITS_SPEC, iteration_time=T, optimizer="adam",
                                  hyperparameters={"learning_rate": 0.01}, training=training)
        client = DataClient(address.data_url, token="secret")
        await trio.to_thread.run_sync(lambda: client.upload(PROJECT, archive))
        yield master, address, len(train.labels)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def node(address: ClusterAddress, tmp_path: Path, name: str) -> AsyncIterator[Any]:
    log = open(tmp_path / f"{name}.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlitb", "node", "join", address.master_url, "--project", PROJECT,
         "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)  # its own process group: signals reach the worker too
    try:
        yield process
    finally:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
        process.wait()
        log.close()


def signal_node(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the node and its worker processes, as a machine dying or freezing would."""
    os.killpg(process.pid, sig)


async def wait_for(condition: Any, what: str, timeout: float) -> None:
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.1)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def trainers(master: Master) -> list[Any]:
    return [w for w in master.projects[PROJECT].status().workers if w.role == "trainer"]


def all_training(master: Master, n: int) -> bool:
    workers = trainers(master)
    return len(workers) == n and all(w.state == "training" and w.cached == w.allocated > 0
                                     for w in workers)


LOCAL = Training(algorithm="local", batch_size=16, outer_optimizer="nesterov",
                 outer_learning_rate=0.7, outer_momentum=0.9)


@pytest.mark.trio
@pytest.mark.slow
@pytest.mark.parametrize("training", [None, LOCAL], ids=["gradient", "local"])
async def test_a_killed_worker_does_not_stop_the_loop_and_its_data_moves(
        tmp_path: Path, training: Training | None):
    with trio.fail_after(120):
        async with cluster(tmp_path, training) as (master, address, n_train), \
                node(address, tmp_path, "a") as a, node(address, tmp_path, "b"):
            await wait_for(lambda: all_training(master, 2), "two workers training", 60)
            project = master.projects[PROJECT]
            # Kill one mid-iteration: right after the work orders went out.
            iteration = project.iteration
            await wait_for(lambda: project.iteration > iteration, "the next iteration", 10)
            await trio.sleep(T / 3)
            signal_node(a, signal.SIGKILL)
            killed_at, killed_iteration = trio.current_time(), project.iteration
            await wait_for(lambda: len(trainers(master)) == 1, "the dead worker to go", 10)
            (survivor,) = trainers(master)
            assert survivor.allocated == n_train  # its data came back and was re-allocated
            assert project.allocator.unallocated == 0 and project.allocator.total == n_train
            # The loop goes on within two iterations, on the survivor's results.
            await wait_for(lambda: any(h.iteration > killed_iteration and h.samples > 0
                                       for h in project.history), "a reduced iteration", 4 * T)
            assert trio.current_time() - killed_at <= 2 * T + 1.0
            assert any(e.kind == "lost" for e in master.events)


@pytest.mark.trio
@pytest.mark.slow
async def test_a_stopped_worker_is_found_by_ping_and_dropped(tmp_path: Path):
    with trio.fail_after(120):
        async with cluster(tmp_path) as (master, address, n_train), \
                node(address, tmp_path, "a") as a, node(address, tmp_path, "b"):
            await wait_for(lambda: all_training(master, 2), "two workers training", 60)
            project = master.projects[PROJECT]
            signal_node(a, signal.SIGSTOP)
            await wait_for(lambda: any(w.state == "late" for w in trainers(master)),
                           "the stopped worker to miss a deadline", 4 * T)
            await wait_for(lambda: len(trainers(master)) == 1, "the stopped worker to go", 15)
            assert trainers(master)[0].allocated == n_train
            before = project.iteration
            await wait_for(lambda: project.iteration >= before + 2, "two more iterations", 4 * T)


@pytest.mark.trio
@pytest.mark.slow
async def test_a_late_joiner_gets_a_pie_cut_share_and_contributes(tmp_path: Path):
    with trio.fail_after(120):
        async with cluster(tmp_path) as (master, address, n_train), \
                node(address, tmp_path, "first"):
            await wait_for(lambda: all_training(master, 1), "the first worker training", 60)
            project = master.projects[PROJECT]
            (first,) = trainers(master)
            before = set(project.allocator.allocation_of(first.worker_id))
            assert len(before) == n_train
            async with node(address, tmp_path, "late"):
                await wait_for(lambda: len(project.allocator.workers()) == 2,
                               "the late joiner to be admitted", 30)
                late = next(w for w in trainers(master) if w.worker_id != first.worker_id)
                mine = set(project.allocator.allocation_of(late.worker_id))
                kept = set(project.allocator.allocation_of(first.worker_id))
                assert len(mine) in (n_train // 2, n_train - n_train // 2)
                assert mine | kept == before and not mine & kept  # cut from the holder only
                await wait_for(lambda: all_training(master, 2), "both training", 30)
                iteration = project.iteration
                await wait_for(lambda: project.iteration >= iteration + 2, "two iterations", 5)
                late_status = next(w for w in trainers(master) if w.worker_id == late.worker_id)
                assert late_status.samples_per_s and late_status.samples_per_s > 0


@pytest.mark.trio
@pytest.mark.slow
async def test_local_steps_from_two_nodes_train_the_project(tmp_path: Path):
    """Two node processes take inner steps and send parameter deltas; the master's outer
    Nesterov step on their average trains the net well beyond chance within a few rounds."""
    with trio.fail_after(120):
        async with cluster(tmp_path, LOCAL) as (master, address, _), \
                node(address, tmp_path, "a"), node(address, tmp_path, "b"):
            await wait_for(lambda: all_training(master, 2), "two workers training", 60)
            project = master.projects[PROJECT]
            start = project.iteration
            await wait_for(lambda: project.iteration >= start + 4, "four rounds", 20)
            recent = [h for h in project.history if h.iteration >= start]
            assert recent and recent[-1].accuracy is not None and recent[-1].accuracy > 0.8
            assert project.samples_trained > 0
            assert project.outer is not None and np.abs(project.outer.state()["velocity"]).sum() > 0
            assert all(w.samples_per_s for w in trainers(master))
