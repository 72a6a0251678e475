"""Projects that persist: autosaved closures, restore after a restart, create_project from a
closure (``mlitb closure resume``), and a master killed with SIGKILL during training."""

from __future__ import annotations

import json
import os
import re
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
from typer.testing import CliRunner

from mlitb.cli import app
from mlitb.client import open_operator
from mlitb.closure import closure_from_dict, closure_from_project, load_closure, save_closure
from mlitb.dataserver import DataClient, write_archive
from mlitb.datasets import DIGITS_SPEC, digits
from mlitb.master import Master, ProjectFiles, RequestError
from mlitb.protocol import CreateProject, HistoryPoint, StatsPoint, Training

SPEC = [{"type": "input", "out_sx": 2, "out_sy": 2, "out_depth": 1},
        {"type": "fc", "num_neurons": 4, "activation": "relu"},
        {"type": "softmax", "num_classes": 3}]


def train_by_hand(master: Master, name: str, steps: int = 3) -> None:
    """What the event loop does to a project, without workers: steps, history, test error."""
    project = master.projects[name]
    rng = np.random.default_rng(1)
    for i in range(steps):
        project.optimizer.step(project.net.params,
                               rng.standard_normal(project.net.num_params).astype(np.float32))
        project.history.append(HistoryPoint(iteration=project.iteration, samples=5,
                                            loss=1.0 / (i + 1), accuracy=0.5))
        project.iteration += 1
        project.parameter_version += 1
    project.iteration += 1  # an iteration without a step
    project.test_error.append(StatsPoint(iteration=project.iteration, parameter_version=steps,
                                         samples=9, error=0.25))


def same_state(a: Any, b: Any) -> None:
    assert np.array_equal(a.net.params, b.net.params)
    assert a.net.spec() == b.net.spec() and a.net.labels == b.net.labels
    assert a.optimizer_name == b.optimizer_name
    assert a.optimizer.hyperparameters() == b.optimizer.hyperparameters()
    sa, sb = a.optimizer.state(), b.optimizer.state()
    assert sa.keys() == sb.keys() and sa["step"] == sb["step"]
    for k in sa:
        if k != "step":
            assert np.array_equal(sa[k], sb[k])
    assert (a.iteration, a.parameter_version) == (b.iteration, b.parameter_version)
    assert list(a.history) == list(b.history) and list(a.test_error) == list(b.test_error)
    assert a.iteration_time == b.iteration_time
    assert a.samples_per_iteration == b.samples_per_iteration
    assert a.seeds == b.seeds


@pytest.mark.trio
async def test_a_saved_project_is_restored_as_it_was(tmp_path: Path) -> None:
    with trio.fail_after(20):
        files = ProjectFiles(tmp_path / "projects")
        master = Master(files=files)
        master.create_project("p", SPEC, iteration_time=3.0, optimizer="adagrad",
                              hyperparameters={"learning_rate": 0.05}, seed=4,
                              labels=["a", "b", "c"])
        master.create_project("q", SPEC, samples_per_iteration=16)
        train_by_hand(master, "p")
        master.projects["q"].paused = True  # as an operator's pause leaves it
        await master.save_project("p")
        await master.save_project("q")
        first = load_closure(files.path("p"))
        assert first.iteration == 4 and first.parameter_version == 3
        train_by_hand(master, "p", 1)
        await master.save_project("p")
        again = load_closure(files.path("p"))
        assert again.created == first.created and again.updated >= first.updated
        assert again.iteration == 6

        restarted = Master(files=files)
        names, problems = restarted.restore()
        assert sorted(names) == ["p", "q"] and problems == []
        same_state(master.projects["p"], restarted.projects["p"])
        same_state(master.projects["q"], restarted.projects["q"])
        assert restarted.projects["p"].created == first.created
        assert restarted.projects["q"].deterministic
        assert restarted.projects["q"].paused and not restarted.projects["p"].paused


@pytest.mark.trio
async def test_serve_saves_on_shutdown_and_delete_removes_the_file(tmp_path: Path) -> None:
    with trio.fail_after(20):
        files = ProjectFiles(tmp_path)
        master = Master(files=files)
        async with trio.open_nursery() as nursery:
            await nursery.start(master.serve, "127.0.0.1", 0)
            master.create_project("p", SPEC)
            master.create_project("gone", SPEC)
            train_by_hand(master, "p", 2)  # after the creation save: only shutdown saves it
            with trio.move_on_after(5):
                while files.names() != ["gone", "p"]:
                    await trio.sleep(0.01)
            master.delete_project("gone")
            nursery.cancel_scope.cancel()
        assert files.names() == ["p"]
        assert load_closure(files.path("p")).parameter_version == 2

        restarted = Master(files=files)
        assert restarted.restore()[0] == ["p"]
        async with trio.open_nursery() as nursery:
            await nursery.start(restarted.serve, "127.0.0.1", 0)
            restarted.delete_project("p")
            assert files.names() == []
            nursery.cancel_scope.cancel()
        assert files.names() == []


def test_an_unreadable_closure_is_moved_aside_and_reported(tmp_path: Path) -> None:
    files = ProjectFiles(tmp_path)
    master = Master(files=files)
    master.create_project("ok", SPEC)
    save_closure(closure_from_project(master.projects["ok"]), files.path("ok"))
    text = files.path("ok").read_text()
    files.path("torn").write_text(text[:len(text) // 2])
    restarted = Master(files=files)
    names, problems = restarted.restore()
    assert names == ["ok"]
    (problem,) = problems
    assert problem.path == files.path("torn") and "truncated" in problem.reason
    assert problem.moved_to is not None and problem.moved_to.exists()
    assert files.names() == ["ok"]
    assert any(e.kind == "error" and "torn" in e.message for e in restarted.events)


def test_create_project_from_a_closure() -> None:
    master = Master()
    master.create_project("p", SPEC, optimizer="adam", samples_per_iteration=8)
    train_by_hand(master, "p")
    d = master.closure_of("p")
    copy = master.create_project_from_closure(d, "copy")
    same_state(master.projects["p"], copy)
    assert copy.name == "copy" and copy.replay_record() is None  # a new record starts
    assert copy.labels_registered is False  # the closure had no data: labels still adopt
    # Overrides: T, samples, hyperparameters; another optimizer starts afresh.
    other = master.create_project_from_closure(
        closure_from_dict(d), "other", iteration_time=5.0, samples_per_iteration=4,
        optimizer="sgd", hyperparameters={"learning_rate": 0.5})
    assert other.iteration_time == 5.0 and other.samples_per_iteration == 4
    assert other.optimizer_name == "sgd" and other.optimizer.step_count == 0
    assert other.optimizer.learning_rate == 0.5
    assert np.array_equal(other.net.params, master.projects["p"].net.params)
    with pytest.raises(RequestError, match="exists already"):
        master.create_project_from_closure(d)
    tampered = json.loads(json.dumps(d))
    tampered["iteration"] += 1
    with pytest.raises(RequestError, match="content_sha256") as info:
        master.create_project_from_closure(tampered, "t")
    assert info.value.code == "invalid_value"
    with pytest.raises(RequestError, match="label map"):
        master.create_project_from_closure(d, "l", labels=["x", "y", "z"])


# -- mlitb closure resume against a running cluster ------------------------------------------
@pytest.fixture(scope="module")
def digit_zips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("digits")
    train, test, names = digits()
    out = []
    for split, data in (("train", train), ("test", test)):
        out.append(write_archive(tmp / f"{split}.zip", [
            (names[int(y)], image[..., 0]) for image, y in zip(data.images, data.labels)]))
    return out[0], out[1]


def test_closure_resume_creates_the_project_and_checks_the_data(
        cluster_in_thread: Any, digit_zips: tuple[Path, Path], tmp_path: Path) -> None:
    c = cluster_in_thread
    train_zip, test_zip = digit_zips
    runner = CliRunner()
    env = {"MLITB_MASTER": c.url, "MLITB_OPERATOR_TOKEN": c.token, "COLUMNS": "200"}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(DIGITS_SPEC))
    assert runner.invoke(app, ["project", "create", "digits", "--model", str(spec)],
                         env=env).exit_code == 0
    client = DataClient(c.data_url, token=c.token)
    client.upload("digits", train_zip)
    client.upload("digits", test_zip, split="test")
    result = runner.invoke(app, ["model", "download", "digits", "--closure", "-o",
                                 str(tmp_path / "digits.closure.json")], env=env)
    assert result.exit_code == 0, result.output
    closure_file = tmp_path / "digits.closure.json"

    # No data for that name on the master: the CLI says what to upload.
    result = runner.invoke(app, ["closure", "resume", str(closure_file), "--name", "fresh"],
                           env=env)
    assert result.exit_code == 0, result.output
    assert "created project fresh" in result.output
    assert "mlitb data upload TRAIN.zip -p fresh" in result.output
    assert f"mlitb node join {c.url} --project fresh" in result.output

    # The data server still holds the data of a deleted project of that name: it is used, and
    # it matches the closure's manifest.
    assert runner.invoke(app, ["project", "delete", "digits"], env=env).exit_code == 0
    result = runner.invoke(app, ["closure", "resume", str(closure_file)], env=env)
    assert result.exit_code == 0, result.output
    assert "holds the closure's data for digits" in result.output
    projects = runner.invoke(app, ["project", "list", "--json"], env=env)
    (digits_project,) = [p for p in json.loads(projects.output) if p["name"] == "digits"]
    assert digits_project["data"]["total"] == 1438 and digits_project["data"]["test"] == 359

    # Other data under that name: a warning.
    assert runner.invoke(app, ["project", "create", "other", "--model", str(spec)],
                         env=env).exit_code == 0
    client.upload("other", test_zip)
    assert runner.invoke(app, ["project", "delete", "other"], env=env).exit_code == 0
    result = runner.invoke(app, ["closure", "resume", str(closure_file), "--name", "other"],
                           env=env)
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "other data" in result.output

    # Refusals are one line.
    result = runner.invoke(app, ["closure", "resume", str(closure_file), "--name", "other"],
                           env=env)
    assert result.exit_code == 1 and "exists already" in result.output


# -- kill -9 of a real master during training, and a restart on the same data dir -----------
TOKEN = "persist-token"
EVERY = 3


def start_master(data_dir: Path, log: Path, port: int = 0, data_port: int = 0
                 ) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "mlitb", "master", "--port", str(port), "--data-port",
             str(data_port), "--data-dir", str(data_dir), "--operator-token", TOKEN,
             "--autosave-every", str(EVERY)],
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "COLUMNS": "200"})


async def wait_for_line(log: Path, pattern: str, timeout: float = 20) -> re.Match[str]:
    with trio.move_on_after(timeout):
        while True:
            match = re.search(pattern, log.read_text() if log.exists() else "")
            if match:
                return match
            await trio.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in {log}:\n{log.read_text()}")


async def status(url: str) -> Any:
    async with open_operator(url, TOKEN) as op:
        (summary,) = [p for p in await op.list_projects() if p.name == "digits"]
        return summary


async def wait_until(url: str, condition: Any, what: str, timeout: float) -> Any:
    with trio.move_on_after(timeout):
        while True:
            with suppress(Exception):
                summary = await status(url)
                if condition(summary):
                    return summary
            await trio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@asynccontextmanager
async def processes() -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for p in started:
            with suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


LOCAL = Training(algorithm="local", batch_size=16, outer_optimizer="nesterov",
                 outer_learning_rate=0.7, schedule="cosine", horizon=100_000, warmup=0.1)


@pytest.mark.trio
@pytest.mark.slow
@pytest.mark.parametrize("training", [None, LOCAL], ids=["gradient", "local"])
async def test_a_killed_master_resumes_from_its_last_autosave(
        tmp_path: Path, digit_zips: tuple[Path, Path], training: Training | None) -> None:
    train_zip, _ = digit_zips
    data_dir = tmp_path / "data"
    with trio.fail_after(120):
        async with processes() as started:
            log1 = tmp_path / "master1.log"
            started.append(start_master(data_dir, log1))
            url = (await wait_for_line(log1, r"master\s+(ws://\S+)"))[1]
            data_url = (await wait_for_line(log1, r"data server\s+(http://\S+)"))[1]
            async with open_operator(url, TOKEN) as op:
                await op.request(CreateProject(request_id="-", name="digits",
                                               spec=tuple(DIGITS_SPEC), iteration_time=1.0,
                                               optimizer="adam",
                                               hyperparameters={"learning_rate": 0.01},
                                               training=training))
            await trio.to_thread.run_sync(lambda: DataClient(data_url, token=TOKEN).upload("digits",
                                                                              train_zip))
            node_log = open(tmp_path / "node.log", "wb")
            started.append(subprocess.Popen(
                [sys.executable, "-m", "mlitb", "node", "join", url, "--project", "digits",
                 "--workers", "1"], stdout=node_log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True))
            await wait_until(url, lambda s: s.iteration >= 2 * EVERY + 1,
                             f"iteration {2 * EVERY + 1}", 60)
            async with open_operator(url, TOKEN) as op:
                before = closure_from_dict(await op.get_model("digits", "closure"))
            os.killpg(started[0].pid, signal.SIGKILL)  # mid-training, no chance to save
            started[0].wait()

            saved = load_closure(data_dir / "projects" / "digits.closure.json")
            assert saved.iteration % EVERY == 0  # an autosave, not a shutdown save
            assert before.iteration - EVERY <= saved.iteration  # at most N iterations lost
            assert 0 < saved.parameter_version <= saved.iteration
            assert list(saved.history) == [p for p in before.history
                                           if p.iteration < saved.iteration]
            assert saved.loop.training == (training or Training())
            if training is not None:  # the outer optimizer's momentum and the schedule's clock
                assert saved.outer_velocity is not None and saved.outer_step > 0
                assert np.abs(saved.outer_velocity).sum() > 0
                assert 0 < saved.loop.samples_trained <= before.loop.samples_trained

            port, data_port = url.rsplit(":", 1)[1], data_url.rsplit(":", 1)[1]
            log2 = tmp_path / "master2.log"
            started.append(start_master(data_dir, log2, int(port), int(data_port)))
            match = await wait_for_line(
                log2, r"restored project digits at iteration (\d+) \(parameter version (\d+)\)")
            assert (int(match[1]), int(match[2])) == (saved.iteration,
                                                      saved.parameter_version)
            await wait_for_line(log2, r"master\s+ws://")
            # The node reconnects by itself, gets its data back, and training goes on.
            after = await wait_until(url, lambda s: s.workers == 1 and s.data.total == 1438
                                     and s.iteration >= saved.iteration + 2,
                                     "training to continue", 60)
            async with open_operator(url, TOKEN) as op:
                now = closure_from_dict(await op.get_model("digits", "closure"))
            assert now.parameter_version > saved.parameter_version
            if training is not None:  # resumed where the autosave left off, not from zero
                assert now.outer_step > saved.outer_step
                assert now.loop.samples_trained > saved.loop.samples_trained
            assert list(now.history)[:len(saved.history)] == list(saved.history)
            assert now.created == saved.created
            # SIGTERM: the master stops cleanly and saves the project as it is.
            os.killpg(started[2].pid, signal.SIGTERM)
            assert started[2].wait(timeout=20) == 0
            final = load_closure(data_dir / "projects" / "digits.closure.json")
            assert final.iteration >= after.iteration
            assert "master stopped" in log2.read_text()
            node_log.close()


@pytest.mark.trio
async def test_ctrl_c_saves_every_project_and_exits_cleanly(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with processes() as started:
            log = tmp_path / "master.log"
            started.append(start_master(tmp_path / "data", log))
            url = (await wait_for_line(log, r"master\s+(ws://\S+)"))[1]
            async with open_operator(url, TOKEN) as op:
                await op.request(CreateProject(request_id="-", name="digits",
                                               spec=tuple(DIGITS_SPEC), iteration_time=2.0))
            path = tmp_path / "data" / "projects" / "digits.closure.json"
            with trio.move_on_after(10):
                while not path.exists():  # the creation save
                    await trio.sleep(0.05)
            created = load_closure(path)
            started[0].send_signal(signal.SIGINT)
            assert await trio.to_thread.run_sync(lambda: started[0].wait(20)) == 0
            text = log.read_text()
            assert "master stopped (projects saved)" in text and "Traceback" not in text
            final = load_closure(path)
            assert final.updated > created.updated and final.created == created.created
