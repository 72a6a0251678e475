"""Deterministic mode and ``mlitb closure replay``: a run recorded with a real node process,
replayed in-process from its closure, gives bit-identical parameters."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from typer.testing import CliRunner

from mlitb.cli import app
from mlitb.closure import (
    closure_from_dict,
    closure_to_dict,
    record_of,
    replay,
    save_closure,
    training_data,
)
from mlitb.cluster import ClusterAddress, open_store, serve_cluster
from mlitb.datasets import DIGITS_SPEC, digits
from mlitb.dataserver import DataClient, write_archive
from mlitb.errors import ClosureError
from mlitb.master import Master

PROJECT = "digits"
SAMPLES = 64
STEPS = 20


def write_digits(tmp_path: Path) -> tuple[Path, Path]:
    train, test, names = digits()
    zips = []
    for split, data in (("train", train), ("test", test)):
        zips.append(write_archive(tmp_path / f"{split}.zip", [
            (names[int(y)], image[..., 0]) for image, y in zip(data.images, data.labels)]))
    return zips[0], zips[1]


@asynccontextmanager
async def cluster(tmp_path: Path, train_zip: Path, test_zip: Path, **create: Any
                  ) -> AsyncIterator[tuple[Master, ClusterAddress]]:
    master = Master(operator_token="secret")
    store = open_store(tmp_path / "data")
    async with trio.open_nursery() as nursery:
        address = await nursery.start(lambda task_status: serve_cluster(
            master, store, "127.0.0.1", 0, 0, task_status=task_status))
        master.create_project(PROJECT, DIGITS_SPEC, **create)
        client = DataClient(address.data_url)
        await trio.to_thread.run_sync(lambda: client.upload(PROJECT, train_zip))
        await trio.to_thread.run_sync(lambda: client.upload(PROJECT, test_zip, split="test"))
        yield master, address
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def node(address: ClusterAddress, tmp_path: Path) -> AsyncIterator[None]:
    with open(tmp_path / "node.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlitb", "node", "join", address.master_url, "--project",
             PROJECT, "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            yield
        finally:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A deterministic run of at least 20 steps with one real node process: its closure file,
    the training zip and the test zip."""
    tmp_path = tmp_path_factory.mktemp("recorded")
    train_zip, test_zip = write_digits(tmp_path)
    box: dict[str, Any] = {}

    async def main() -> None:
        with trio.fail_after(90):
            async with cluster(tmp_path, train_zip, test_zip, iteration_time=1.0, optimizer="adam",
                               hyperparameters={"learning_rate": 0.01},
                               samples_per_iteration=SAMPLES, seed=7) as (master, address), \
                    node(address, tmp_path):
                project = master.projects[PROJECT]
                while project.parameter_version < STEPS:
                    await trio.sleep(0.2)
                box["closure"] = master.closure_of(PROJECT)

    trio.run(main)
    path = tmp_path / "run.closure.json"
    path.write_text(json.dumps(box["closure"]))
    return path, train_zip, test_zip


@pytest.mark.slow
def test_a_recorded_run_replays_bit_identically(recorded: tuple[Path, Path, Path]) -> None:
    from mlitb.closure import load_closure

    path, train_zip, _ = recorded
    closure = load_closure(path)
    record = record_of(closure)
    assert closure.loop.deterministic and closure.loop.samples_per_iteration == SAMPLES
    assert closure.loop.seeds == {"init": 7}
    assert len(record.steps) == closure.parameter_version - record.origin.parameter_version
    assert len(record.steps) >= STEPS
    # The whole run: one trainer held all the training data, every step used SAMPLES samples.
    assert record.shares == (f"0-{closure.data.train.count - 1}",)
    assert all(step.parts == ((0, SAMPLES),) for step in record.steps)
    data = training_data(closure, [train_zip])
    report = replay(closure, data, iterations=STEPS)
    assert [c.iteration for c in report.checks] == [s.iteration for s in record.steps[:STEPS]]
    assert report.identical, report.first_mismatch
    full = replay(closure, data)
    assert full.identical and full.complete
    assert full.checks[-1].actual == closure.parameters_sha256
    # The losses the master recorded are the replay's too.
    losses = {p.iteration: p.loss for p in closure.history}
    for check in full.checks:
        assert check.loss == pytest.approx(losses[check.iteration], rel=1e-9)


@pytest.mark.slow
def test_replay_cli(recorded: tuple[Path, Path, Path], tmp_path: Path) -> None:
    path, train_zip, test_zip = recorded
    runner = CliRunner()
    result = runner.invoke(app, ["closure", "replay", str(path), "--data", str(train_zip),
                                 "--iterations", str(STEPS)])
    assert result.exit_code == 0, result.output
    assert f"{STEPS} steps" in result.output and "bit-identical" in result.output
    # The test data is not the training data.
    result = runner.invoke(app, ["closure", "replay", str(path), "--data", str(test_zip)])
    assert result.exit_code == 1 and "test data" in result.output
    result = runner.invoke(app, ["closure", "replay", str(path), "--data", str(train_zip),
                                 "--data", str(test_zip), "-n", "2"])  # train + test is fine
    assert result.exit_code == 0, result.output
    # A record whose hash was changed (content hash recomputed) is caught at that step.
    d = json.loads(path.read_text())
    d["replay"]["steps"][3]["sha256"] = "0" * 64
    d.pop("content_sha256")
    bad = tmp_path / "bad.closure.json"
    bad.write_text(json.dumps(d))
    result = runner.invoke(app, ["closure", "replay", str(bad), "--data", str(train_zip),
                                 "--iterations", "5"])
    assert result.exit_code == 1
    assert f"iteration {d['replay']['steps'][3]['iteration']}" in result.output
    assert "differ" in result.output


@pytest.mark.slow
def test_a_changed_step_is_found(recorded: tuple[Path, Path, Path]) -> None:
    """Replaying with another sample count (as if a worker had done other work) differs at
    once: the hashes check the computation, not only the file."""
    from mlitb.closure import ReplayStep, load_closure

    path, train_zip, _ = recorded
    closure = load_closure(path)
    record = record_of(closure)
    steps = list(record.steps)
    steps[0] = ReplayStep(steps[0].iteration, ((0, SAMPLES - 1),), steps[0].sha256)
    changed = closure.replace(replay=record.__class__(
        origin=record.origin, shares=record.shares, steps=tuple(steps), seed=record.seed,
        max_batch=record.max_batch))
    report = replay(changed, training_data(closure, [train_zip]), iterations=3)
    assert not report.identical and report.first_mismatch is not None
    assert report.first_mismatch.iteration == steps[0].iteration
    assert len(report.checks) == 1  # stops at the first difference


def test_no_replay_without_deterministic_mode() -> None:
    from mlitb.closure import closure_from_project
    from mlitb.master import Project
    from mlitb.nn import Net
    from mlitb.optim import make_optimizer

    net = Net(DIGITS_SPEC, seed=0)
    project = Project("p", net, make_optimizer("sgd", net.num_params), "sgd", 1.0)
    with pytest.raises(ClosureError, match="not recorded in deterministic mode"):
        record_of(closure_from_project(project))
