"""Deterministic mode and ``mlitb closure replay``: a run recorded with a real node process,
replayed in-process from its closure, gives bit-identical parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from helpers.replay import (
    PROJECT,
    SAMPLES,
    STEPS,
    cluster,
    node,
    record_run,
    write_digits,
)
from typer.testing import CliRunner

from mlitb.cli import app
from mlitb.closure import (
    closure_from_dict,
    closure_to_dict,
    record_of,
    replay,
    training_data,
)
from mlitb.datasets import DIGITS_SPEC
from mlitb.errors import ClosureError
from mlitb.protocol import Training


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A deterministic run of at least 20 steps with one real node process: its closure file,
    the training zip and the test zip."""
    tmp_path = tmp_path_factory.mktemp("recorded")
    train_zip, test_zip = write_digits(tmp_path)
    closure = record_run(tmp_path, train_zip, test_zip, optimizer="adam",
                         hyperparameters={"learning_rate": 0.01}, seed=7)
    path = tmp_path / "run.closure.json"
    path.write_text(json.dumps(closure))
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


@pytest.mark.slow
def test_a_run_with_two_trainers_replays_bit_identically(tmp_path: Path) -> None:
    """Two worker processes: the second joins while the first trains, the pie-cutter moves
    data, and steps sum two parts; the record follows all of it."""
    train_zip, test_zip = write_digits(tmp_path)
    box: dict[str, Any] = {}

    async def main() -> None:
        with trio.fail_after(90):
            async with cluster(tmp_path, train_zip, test_zip, iteration_time=1.0,
                               optimizer="adagrad", samples_per_iteration=2 * SAMPLES) \
                    as (master, address), node(address, tmp_path, workers=2):
                project = master.projects[PROJECT]

                def steps_with_two_parts() -> int:
                    record = project.replay_record()
                    return 0 if record is None else sum(len(s.parts) == 2
                                                        for s in record.steps)

                while steps_with_two_parts() < 4:
                    await trio.sleep(0.2)
                box["closure"] = closure_from_dict(master.closure_of(PROJECT))

    trio.run(main)
    closure = box["closure"]
    record = record_of(closure)
    two = [s for s in record.steps if len(s.parts) == 2]
    assert len(two) >= 4 and all(sum(n for _, n in s.parts) == 2 * SAMPLES for s in two)
    report = replay(closure, training_data(closure, [train_zip]))
    assert report.identical and report.complete, report.first_mismatch


SCHEDULED: dict[str, dict[str, Any]] = {
    # Local steps: a fresh inner Adam per round at the scheduled rate, DiLoCo's outer Nesterov.
    "local": dict(optimizer="adam", hyperparameters={"learning_rate": 0.01}, training=Training(
        algorithm="local", batch_size=8, outer_optimizer="nesterov", outer_learning_rate=0.7,
        schedule="cosine", horizon=SAMPLES * STEPS, warmup=0.2, shift=1, flip=True)),
    # The paper's algorithm with a schedule on the master's optimizer and augmentation.
    "gradient": dict(optimizer="sgd", hyperparameters={"learning_rate": 0.05, "momentum": 0.9},
                     training=Training(schedule="linear", horizon=SAMPLES * STEPS, warmup=0.2,
                                       final_lr=0.1, shift=1, flip=True)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SCHEDULED))
def test_a_scheduled_run_replays_bit_identically(case: str, tmp_path: Path) -> None:
    import dataclasses

    from mlitb.closure import ReplayRecord
    from mlitb.training import lr_factor, progress

    create = SCHEDULED[case]
    training = create["training"]
    train_zip, test_zip = write_digits(tmp_path)
    d = record_run(tmp_path, train_zip, test_zip, seed=5, **create)
    closure = closure_from_dict(d)
    record = record_of(closure)
    assert closure.loop.training == training
    assert len(record.steps) >= STEPS and record.origin.iteration == 0
    assert ("outer" in d["replay"]["origin"]) == (case == "local")
    # Each step's factor is the schedule's at the samples trained before it (warmup, decay).
    for k, step in enumerate(record.steps):
        assert step.lr_scale == lr_factor(training, progress(training, k * SAMPLES, 0.0))
    assert len({s.lr_scale for s in record.steps}) >= STEPS - 1
    data = training_data(closure, [train_zip])
    report = replay(closure, data)
    assert report.identical and report.complete, report.first_mismatch
    assert report.checks[-1].actual == closure.parameters_sha256
    losses = {p.iteration: p.loss for p in closure.history}
    for check in report.checks:
        assert check.loss == pytest.approx(losses[check.iteration], rel=1e-9)
    # Without the recorded factors (as an old reader would take them) the first step differs.
    flat = closure.replace(replay=ReplayRecord(
        origin=record.origin, shares=record.shares, seed=record.seed,
        max_batch=record.max_batch,
        steps=tuple(dataclasses.replace(s, lr_scale=1.0) for s in record.steps)))
    changed = replay(flat, data, iterations=3)
    assert not changed.identical and changed.first_mismatch is not None
    assert changed.first_mismatch.iteration == record.steps[0].iteration


@pytest.mark.slow
def test_a_closure_without_schedule_factors_reads_and_replays(
        recorded: tuple[Path, Path, Path]) -> None:
    """A closure written before schedules (no lr_scale, no outer origin) reads with factor 1
    and still replays."""
    path, train_zip, _ = recorded
    d = json.loads(path.read_text())
    assert all("lr_scale" not in step for step in d["replay"]["steps"])  # constant: not written
    assert "outer" not in d["replay"]["origin"]
    closure = closure_from_dict(d)
    record = record_of(closure)
    assert all(s.lr_scale == 1.0 for s in record.steps) and record.origin.outer_velocity is None
    report = replay(closure, training_data(closure, [train_zip]), iterations=3)
    assert report.identical and len(report.checks) == 3


def test_no_replay_without_deterministic_mode() -> None:
    from mlitb.closure import closure_from_project
    from mlitb.nn import Net
    from mlitb.optim import make_optimizer
    from mlitb.training import Project

    net = Net(DIGITS_SPEC, seed=0)
    project = Project("p", net, make_optimizer("sgd", net.num_params), "sgd", 1.0)
    with pytest.raises(ClosureError, match="not recorded in deterministic mode"):
        record_of(closure_from_project(project))


# -- deterministic mode in the project, without I/O ----------------------------------------------
SMALL = [{"type": "input", "out_sx": 1, "out_sy": 1, "out_depth": 4},
         {"type": "fc", "num_neurons": 3, "activation": "relu"},
         {"type": "softmax", "num_classes": 3}]


def deterministic_project(worker_ids: list[int], samples: int = 9) -> Any:
    from mlitb.nn import Net
    from mlitb.optim import make_optimizer
    from mlitb.training import Member, Project

    net = Net(SMALL, seed=3, labels=["a", "b", "c"])
    project = Project("p", net, make_optimizer("adam", net.num_params), "adam", 1.0,
                      samples_per_iteration=samples)
    project.add_data("train", range(100, 112))  # store ids: positions 0..11
    for w in worker_ids:  # the same join order, other ids
        project.add_member(Member(w, "trainer", "python", "h"))
        project.admit_pending()
    return project


def share_vector(first: int, n: int) -> np.ndarray:
    """A gradient sum that depends only on the share, scaled so the summation order shows."""
    rng = np.random.default_rng(first)
    return (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 8, n)).astype(np.float32)


def run_iterations(project: Any, iterations: int) -> None:
    from mlitb.protocol import ResultFrame, ResultKind

    for _ in range(iterations):
        it = project.plan_iteration(0.0)
        for w in sorted(it.orders, reverse=True):  # arrival order must not matter either
            first = int(it.shares[w][0])
            frame = ResultFrame(parameter_version=it.parameter_version,
                                kind=ResultKind.GRADIENT_SUM, samples=it.orders[w].samples,
                                correct=1, loss_sum=2.0, compute_seconds=0.1,
                                vector=share_vector(first + project.iteration,
                                                    project.net.num_params))
            assert project.accept_result(w, frame, 0.5) is None
        project.finish_iteration(1.0)


def test_only_trainers_with_their_whole_share_cached_get_work() -> None:
    project = deterministic_project([1, 2, 3])
    assert project.ready_trainers() == []
    shares = {w: project.allocator.allocation_of(w) for w in (1, 2, 3)}
    project.allocator.mark_cached(1, shares[1])
    project.allocator.mark_cached(2, list(shares[2])[:-1])
    assert project.ready_trainers() == [1]
    project.allocator.mark_cached(2, shares[2])
    project.allocator.mark_cached(3, shares[3])
    it = project.plan_iteration(0.0)
    assert sorted(it.orders) == [1, 2, 3]
    assert all(o.samples == 3 and o.seconds is None for o in it.orders.values())
    # Shares are positions in the training data (store ids 100.. are positions 0..).
    assert sorted(int(p) for s in it.shares.values() for p in s) == list(range(12))


def test_the_reduction_order_does_not_depend_on_worker_ids() -> None:
    runs = []
    for ids in ([1, 2, 3], [30, 20, 10]):
        project = deterministic_project(ids)
        for w in ids:
            project.allocator.mark_cached(w, project.allocator.allocation_of(w))
        run_iterations(project, 4)
        runs.append(project)
    a, b = runs
    assert np.array_equal(a.net.params, b.net.params)  # bit-identical
    ra, rb = a.replay_record(), b.replay_record()
    assert ra.shares == rb.shares and [s.parts for s in ra.steps] == [s.parts for s in rb.steps]
    assert [s.sha256 for s in ra.steps] == [s.sha256 for s in rb.steps]
    # Parts are summed in the order of their shares' first positions.
    for step in ra.steps:
        firsts = [int(ra.share(k)[0]) for k, _ in step.parts]
        assert firsts == sorted(firsts) and len(firsts) == 3


def test_the_record_survives_a_closure_and_restarts_on_changes() -> None:
    from mlitb.closure import (
        DataManifest,
        SplitManifest,
        closure_from_project,
        project_from_closure,
    )
    from mlitb.training import parameters_sha256

    project = deterministic_project([1])
    project.allocator.mark_cached(1, project.allocator.allocation_of(1))
    origin = project.net.params.copy()
    run_iterations(project, 3)
    record = project.replay_record()
    assert record.origin.iteration == 0 and np.array_equal(record.origin.parameters, origin)
    assert record.shares == ("0-11",) and len(record.steps) == 3
    assert record.steps[-1].sha256 == parameters_sha256(project.net.params)

    manifest = DataManifest(("a", "b", "c"), SplitManifest(
        tuple(f"{i:064x}" for i in range(12)), tuple("abc"[i % 3] for i in range(12))))
    closure = closure_from_dict(closure_to_dict(closure_from_project(project, manifest)))
    assert closure.replay is not None and len(closure.replay.steps) == 3
    # Without a manifest the record is not written (its shares index the training data).
    assert "replay" not in closure_to_dict(closure_from_project(project))
    restored = project_from_closure(closure, keep_record=True)
    assert restored.replay_record().steps == record.steps
    assert project_from_closure(closure).replay_record() is None  # resumed: a new record

    # A tampered record is refused with the field named.
    d = closure_to_dict(closure)
    d["replay"]["steps"][1]["parts"][0][0] = 5
    d.pop("content_sha256")
    with pytest.raises(ClosureError, match=r"replay.steps\[1\].parts\[0\]: share 5"):
        closure_from_dict(d)
    d = closure_to_dict(closure)
    d["replay"]["steps"].pop()
    d.pop("content_sha256")
    with pytest.raises(ClosureError, match="replay.steps: 2 steps, but the parameter version"):
        closure_from_dict(d)

    # New hyperparameters: the record restarts from the state at the next iteration.
    project.set_hyperparameters(learning_rate=0.5)
    assert project.replay_record() is None
    run_iterations(project, 2)
    again = project.replay_record()
    assert again.origin.iteration == 3 and len(again.steps) == 2
    assert again.origin.hyperparameters["learning_rate"] == 0.5
    # A grown output layer: likewise.
    project.register_labels(["a", "b", "c", "d"])
    assert project.replay_record() is None


def test_shares_round_trip_and_bad_ones_are_named() -> None:
    from mlitb.closure import format_share, parse_share

    for positions in ([], [0], [0, 1, 2, 5, 7, 8], list(range(1000)) + [5000]):
        text = format_share(positions)
        assert parse_share(text).tolist() == positions
    assert format_share([3, 1, 2, 2]) == "1-3"
    for bad, message in [("1,1", "must increase"), ("5-3", "must increase"),
                         ("a", "not a position"), ("3,1", "must increase")]:
        with pytest.raises(ClosureError, match=message):
            parse_share(bad, "replay.shares[0]")


def test_a_local_record_keeps_the_schedule_and_the_outer_momentum() -> None:
    """A local project records each step's factor and, at a record's origin, the outer
    optimizer's momentum (a restarted record starts mid-run with a non-zero one); both survive
    the closure, and a step without ``lr_scale`` reads as 1."""
    from mlitb.closure import DataManifest, SplitManifest, closure_from_project
    from mlitb.nn import Net
    from mlitb.optim import make_optimizer
    from mlitb.protocol import ResultFrame, ResultKind
    from mlitb.training import Member, Project, lr_factor, progress

    training = Training(algorithm="local", outer_optimizer="nesterov", schedule="cosine",
                        horizon=60, warmup=0.2)
    net = Net(SMALL, seed=3, labels=["a", "b", "c"])
    project = Project("p", net, make_optimizer("adam", net.num_params), "adam", 1.0,
                      samples_per_iteration=6, training=training)
    project.add_data("train", range(100, 112))
    project.add_member(Member(1, "trainer", "python", "h"))
    project.admit_pending()
    project.allocator.mark_cached(1, project.allocator.allocation_of(1))

    def run(iterations: int) -> None:
        for _ in range(iterations):
            it = project.plan_iteration(0.0)
            delta = share_vector(project.iteration, net.num_params) * np.float32(1e-6)
            assert project.accept_result(1, ResultFrame(
                parameter_version=it.parameter_version, kind=ResultKind.PARAMETER_DELTA,
                samples=6, correct=1, loss_sum=2.0, compute_seconds=0.1, vector=delta,
                steps=1), 0.5) is None
            project.finish_iteration(1.0)

    run(3)
    first = project.replay_record()
    assert first is not None and project.outer is not None
    assert [s.lr_scale for s in first.steps] == [
        lr_factor(training, progress(training, 6 * k, 0.0)) for k in range(3)]
    assert first.origin.outer_velocity is not None and not first.origin.outer_velocity.any()
    project.set_hyperparameters(learning_rate=0.02)  # a new record, from the state now
    velocity = project.outer.state()["velocity"]
    assert isinstance(velocity, np.ndarray) and velocity.any()
    run(2)
    record = project.replay_record()
    assert record is not None and record.origin.outer_step == 3
    assert record.origin.outer_velocity is not None
    assert np.array_equal(record.origin.outer_velocity, velocity)

    manifest = DataManifest(("a", "b", "c"), SplitManifest(
        tuple(f"{i:064x}" for i in range(12)), tuple("abc"[i % 3] for i in range(12))))
    d = closure_to_dict(closure_from_project(project, manifest))
    back = closure_from_dict(d).replay
    assert back is not None and back.steps == record.steps
    assert back.origin.outer_step == 3 and back.origin.outer_velocity is not None
    assert np.array_equal(back.origin.outer_velocity, velocity)
    for step in d["replay"]["steps"]:
        step.pop("lr_scale", None)
    d.pop("content_sha256")
    old = closure_from_dict(d).replay
    assert old is not None and all(s.lr_scale == 1.0 for s in old.steps)
