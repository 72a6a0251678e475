"""``mlitb project`` and ``mlitb model`` against a real master on loopback."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mlitb.cli import app
from mlitb.nn import load_model

runner = CliRunner()
SPEC = [{"type": "input", "out_sx": 2, "out_sy": 2, "out_depth": 1},
        {"type": "fc", "num_neurons": 3, "activation": "tanh"},
        {"type": "softmax", "num_classes": 2}]


def invoke(args, m):
    return runner.invoke(app, [*args, "--master", m.url, "--token", m.token],
                         env={"COLUMNS": "150"})


def test_create_list_steer_download_delete(master_in_thread, tmp_path):
    m = master_in_thread
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    result = invoke(["project", "create", "demo", "--model", str(spec), "--iteration-time", "3",
                     "--optimizer", "adam", "--set", "beta1=0.8"], m)
    assert result.exit_code == 0, result.output
    project = m.master.projects["demo"]
    assert project.iteration_time == 3 and project.optimizer_name == "adam"
    assert project.optimizer.hyperparameters()["beta1"] == 0.8

    result = invoke(["project", "list", "--json"], m)
    assert result.exit_code == 0, result.output
    (listed,) = json.loads(result.output)
    assert listed["name"] == "demo" and listed["input_shape"] == [1, 2, 2]
    result = invoke(["project", "list"], m)
    assert "demo" in result.output and "adam" in result.output

    assert invoke(["project", "pause", "demo"], m).exit_code == 0
    assert project.paused
    assert invoke(["project", "resume", "demo"], m).exit_code == 0
    assert not project.paused
    result = invoke(["project", "set", "demo", "--set", "learning_rate=0.1"], m)
    assert result.exit_code == 0 and project.optimizer.learning_rate == 0.1
    result = invoke(["project", "set", "demo", "--set", "beta1=2"], m)
    assert result.exit_code == 1 and "beta1" in result.output

    out = tmp_path / "model.json"
    result = invoke(["model", "download", "demo", "-o", str(out)], m)
    assert result.exit_code == 0, result.output
    assert (load_model(out).params == project.net.params).all()
    out2 = tmp_path / "convnetjs.json"
    assert invoke(["model", "download", "demo", "-o", str(out2), "--convnetjs"], m).exit_code == 0
    assert json.loads(out2.read_text())["layers"][0]["layer_type"] == "input"

    out3 = tmp_path / "run.closure.json"
    result = invoke(["model", "download", "demo", "-o", str(out3), "--closure"], m)
    assert result.exit_code == 0, result.output
    from mlitb.closure import load_closure
    closure = load_closure(out3)
    assert closure.optimizer().hyperparameters()["beta1"] == 0.8
    assert (closure.net().params == project.net.params).all()

    assert invoke(["project", "delete", "demo"], m).exit_code == 0
    result = invoke(["project", "create", "det", "--model", str(spec),
                     "--samples-per-iteration", "64"], m)
    assert result.exit_code == 0, result.output
    assert m.master.projects["det"].samples_per_iteration == 64
    assert "demo" not in m.master.projects


def test_errors_are_one_clear_line(master_in_thread, tmp_path):
    m = master_in_thread
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps([{"type": "input"}, {"type": "conv", "filters": 2},
                                {"type": "softmax", "num_classes": 2}]))
    result = invoke(["project", "create", "bad", "--model", str(spec)], m)
    assert result.exit_code == 1
    assert "layer 1 (conv): field 'sx' is required" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["project", "create", "x", "--model", str(spec), "--master",
                                 m.url, "--token", "wrong"])
    assert result.exit_code == 1 and "refused the operator token" in result.output
    result = runner.invoke(app, ["project", "pause", "x", "--master", m.url])
    assert result.exit_code == 1 and "needs the operator token" in result.output
    result = invoke(["project", "pause", "nope"], m)
    assert result.exit_code == 1 and "no project named 'nope'" in result.output
    result = runner.invoke(app, ["project", "list", "--master", "ws://127.0.0.1:9"])
    assert result.exit_code == 1 and "cannot reach the master" in result.output
    result = runner.invoke(app, ["project", "list", "--master", "http://x"])
    assert result.exit_code == 1 and "ws://" in result.output


def test_training_settings_at_creation_and_live(master_in_thread, tmp_path):
    m = master_in_thread
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    result = invoke(["project", "create", "loc", "--model", str(spec), "--optimizer", "nesterov",
                     "--training", "algorithm=local", "--training", "batch_size=16",
                     "--training", "schedule=cosine", "--training", "horizon=1000",
                     "--training", "flip=true"], m)
    assert result.exit_code == 0, result.output
    project = m.master.projects["loc"]
    training = project.training
    assert (training.algorithm, training.batch_size, training.schedule, training.flip) == \
        ("local", 16, "cosine", True)
    assert project.outer is not None
    # live: the schedule changes, the rest stays
    result = invoke(["project", "set", "loc", "--training", "horizon=50",
                     "--training", "warmup=0.2"], m)
    assert result.exit_code == 0, result.output
    assert (project.training.horizon, project.training.warmup) == (50, 0.2)
    assert project.training.batch_size == 16 and project.training.flip
    # refused, one clear line, nothing changed
    result = invoke(["project", "set", "loc", "--training", "algorithm=gradient"], m)
    assert result.exit_code == 1 and "training.algorithm" in result.output
    assert project.training.algorithm == "local"
    result = invoke(["project", "create", "bad", "--model", str(spec),
                     "--training", "schedule=cosine"], m)
    assert result.exit_code == 1 and "training.horizon" in result.output, result.output
    assert "bad" not in m.master.projects


def test_the_wire_is_chosen_at_creation(master_in_thread, tmp_path):
    m = master_in_thread
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    result = invoke(["project", "create", "w8", "--model", str(spec), "--wire", "int8"], m)
    assert result.exit_code == 0, result.output
    project = m.master.projects["w8"]
    assert project.training.wire == "int8"
    # live changes keep it; changing it is refused in one clear line
    assert invoke(["project", "set", "w8", "--training", "flip=true"], m).exit_code == 0
    assert project.training.wire == "int8" and project.training.flip
    result = invoke(["project", "set", "w8", "--training", "wire=float32"], m)
    assert result.exit_code == 1 and "the wire is chosen at creation" in result.output
    result = invoke(["project", "create", "w4", "--model", str(spec), "--wire", "int4"], m)
    assert result.exit_code == 1 and "training.wire" in result.output, result.output
    result = invoke(["project", "create", "wd", "--model", str(spec), "--wire", "float16",
                     "--samples-per-iteration", "64"], m)
    assert result.exit_code == 1 and "float32 results only" in result.output, result.output
    assert "w4" not in m.master.projects and "wd" not in m.master.projects


def test_list_is_readable_at_80_columns(master_in_thread, tmp_path):
    """No cell cut (``proje…``, ``itera…``) and no data cell wrapped over lines; a terminal too
    narrow for the table gets a block per project instead."""
    m = master_in_thread
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    for name in ("demo", "cifar10"):
        assert invoke(["project", "create", name, "--model", str(spec)], m).exit_code == 0
    args = ["project", "list", "--master", m.url, "--token", m.token]
    result = runner.invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "…" not in result.output and all(len(line) <= 80 for line in lines)
    header = lines[0].split()
    assert header[:5] == ["project", "state", "iter", "T", "s"] and "test" in header
    rows = [line for line in lines if line.startswith(("demo", "cifar10"))]
    assert len(rows) == 2 and len(lines) == 4  # header, rule, one line per project
    assert rows[0].split()[:4] == ["demo", "waiting", "0", "2"]
    result = runner.invoke(app, args, env={"COLUMNS": "50"})
    assert result.exit_code == 0 and "…" not in result.output
    assert "demo  waiting · iteration 0 · T 2 s · adagrad" in result.output
    assert "0 workers · 0 train + 0 test ids" in result.output


def test_a_misspelt_optimizer_names_the_choices_and_the_nearest(master_in_thread, tmp_path):
    m = master_in_thread
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    result = invoke(["project", "create", "demo", "--model", str(spec), "--optimizer", "adamm"],
                    m)
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())
    assert "unknown optimizer 'adamm'; did you mean 'adam'?" in text
    assert "sgd, nesterov, adagrad, adadelta, adam" in text and "name:" not in text
    assert "demo" not in m.master.projects


def test_create_json_prints_the_new_project(master_in_thread, tmp_path):
    m = master_in_thread
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    result = invoke(["project", "create", "demo", "--model", str(spec), "--optimizer", "adam",
                     "--json"], m)
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["name"] == "demo" and created["optimizer"] == "adam"
    assert created["input_shape"] == [1, 2, 2] and created["state"] == "waiting"


def test_project_access_rotates_one_token_and_keeps_the_other(master_in_thread, tmp_path):
    import re

    m = master_in_thread
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    assert invoke(["project", "create", "p", "--model", str(spec)], m).exit_code == 0

    def access():
        return m.master.access.get("p")

    def printed(kind, output):
        found = re.search(rf"{kind} token: (\S+)", output)
        assert found, output
        return found.group(1)

    result = invoke(["project", "access", "p", "--join-token", "--contributor-token"], m)
    assert result.exit_code == 0, result.output
    join, contribute = printed("join", result.output), printed("contributor", result.output)
    assert access().may_join(join) and access().may_contribute(contribute)
    # A new contributor token; the join token stays.
    result = invoke(["project", "access", "p", "--contributor-token", "--keep-join-token"], m)
    assert result.exit_code == 0, result.output
    assert "join token unchanged" in result.output and "join token:" not in result.output
    fresh = printed("contributor", result.output)
    assert access().may_join(join)
    assert access().may_contribute(fresh) and not access().may_contribute(contribute)
    # Open the project; the contributor token stays.
    result = invoke(["project", "access", "p", "--keep-contributor-token"], m)
    assert result.exit_code == 0, result.output
    assert access().open and access().may_contribute(fresh)
    # Keeping a token and giving a new one is refused before anything is sent.
    result = invoke(["project", "access", "p", "--join-token", "--keep-join-token"], m)
    assert result.exit_code != 0 and "--keep-join-token keeps the join token" in result.output
    assert access().open


def test_operator_token_rotates_the_running_masters_token(master_in_thread):
    import re

    m = master_in_thread
    result = runner.invoke(app, ["operator-token", "--value", "short", "--master", m.url,
                                 "--token", m.token], env={"COLUMNS": "150"})
    assert result.exit_code != 0 and "8-256 printable characters" in result.output
    assert m.master.operator_token == m.token
    result = invoke(["operator-token"], m)
    assert result.exit_code == 0, result.output
    found = re.search(r"operator token: (\S+) \(shown once\)", result.output)
    assert found and m.master.operator_token == found.group(1) != m.token
    assert "--operator-token" in result.output  # the reminder for the next start
    # The old token no longer works.
    result = invoke(["project", "list"], m)
    assert result.exit_code != 0 and "refused the operator token" in result.output
