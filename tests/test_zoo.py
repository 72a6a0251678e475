"""The model zoo: ``mlitb zoo list/add/remove`` and ``mlitb.closure.Zoo``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlitb.cli import app
from mlitb.closure import Zoo, closure_from_project, load_closure, save_closure
from mlitb.errors import ClosureError
from mlitb.nn import Net
from mlitb.optim import make_optimizer
from mlitb.protocol import HistoryPoint, StatsPoint
from mlitb.training import Project

SPEC = [{"type": "input", "out_sx": 2, "out_sy": 2, "out_depth": 1},
        {"type": "fc", "num_neurons": 4, "activation": "relu"},
        {"type": "softmax", "num_classes": 3}]


def closure_file(path: Path, name: str = "demo", seed: int = 0, error: float = 0.25) -> Path:
    net = Net(SPEC, seed=seed, labels=["a", "b", "c"])
    project = Project(name, net, make_optimizer("adagrad", net.num_params), "adagrad", 2.0)
    project.optimizer.step(net.params, np.ones(net.num_params, dtype=np.float32))
    project.iteration, project.parameter_version = 12, 1
    project.history.append(HistoryPoint(iteration=11, samples=3, loss=0.5, accuracy=1.0))
    project.test_error.append(StatsPoint(iteration=12, parameter_version=1, samples=4,
                                         error=error))
    return save_closure(closure_from_project(project), path)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"MLITB_ZOO": str(tmp_path / "zoo"), "COLUMNS": "200"}


def test_add_list_remove(tmp_path: Path, env: dict[str, str]) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["zoo", "list"], env=env)
    assert result.exit_code == 0 and "is empty" in result.output
    source = closure_file(tmp_path / "a.closure.json")
    result = runner.invoke(app, ["zoo", "add", str(source)], env=env)
    assert result.exit_code == 0, result.output
    assert "added demo" in result.output and "verified" in result.output
    zoo = Zoo(tmp_path / "zoo")
    assert zoo.names() == ["demo"]
    assert zoo.path("demo").read_bytes() == source.read_bytes()  # kept byte for byte

    other = closure_file(tmp_path / "b.closure.json", seed=1, error=0.1)
    result = runner.invoke(app, ["zoo", "add", str(other), "--name", "demo-2"], env=env)
    assert result.exit_code == 0, result.output
    assert load_closure(zoo.path("demo-2")).name == "demo-2"

    result = runner.invoke(app, ["zoo", "list"], env=env)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    row = next(line for line in lines if line.strip().startswith("demo "))
    assert "softmax, 1×2×2 → 3 labels, 35 params" in row and "12" in row and "25.0%" in row
    assert any("demo-2" in line and "10.0%" in line for line in lines)

    result = runner.invoke(app, ["zoo", "list", "--json"], env=env)
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == ["demo", "demo-2"]
    assert rows[0]["iteration"] == 12 and rows[0]["test_error"] == 0.25
    assert rows[1]["project"] == "demo-2" and rows[0]["replay_steps"] is None

    result = runner.invoke(app, ["zoo", "remove", "demo"], env=env)
    assert result.exit_code == 0 and zoo.names() == ["demo-2"]
    result = runner.invoke(app, ["zoo", "remove", "demo"], env=env)
    assert result.exit_code == 1 and "no entry 'demo'" in result.output


def test_add_refuses_duplicates_and_bad_closures(tmp_path: Path, env: dict[str, str]) -> None:
    runner = CliRunner()
    source = closure_file(tmp_path / "a.closure.json")
    assert runner.invoke(app, ["zoo", "add", str(source)], env=env).exit_code == 0
    result = runner.invoke(app, ["zoo", "add", str(source)], env=env)
    assert result.exit_code == 1 and "entry named 'demo' already" in result.output
    result = runner.invoke(app, ["zoo", "add", str(source), "--name", "again"], env=env)
    assert result.exit_code == 1 and "in the zoo already, as 'demo'" in result.output
    text = source.read_text()
    torn = tmp_path / "torn.closure.json"
    torn.write_text(text[:len(text) // 2])
    result = runner.invoke(app, ["zoo", "add", str(torn), "--name", "torn"], env=env)
    assert result.exit_code == 1 and "truncated" in result.output
    result = runner.invoke(app, ["zoo", "add", str(source), "--name", "bad name"], env=env)
    assert result.exit_code == 1 and "must be 1-64 characters" in result.output
    assert Zoo(tmp_path / "zoo").names() == ["demo"]


def test_an_unreadable_entry_is_listed_with_its_error(tmp_path: Path,
                                                      env: dict[str, str]) -> None:
    zoo = Zoo(tmp_path / "zoo")
    zoo.add(closure_file(tmp_path / "a.closure.json"))
    d = json.loads(zoo.path("demo").read_text())
    d["version"] = 2
    zoo.path("broken").write_text(json.dumps(d))
    result = CliRunner().invoke(app, ["zoo", "list"], env=env)
    assert result.exit_code == 0
    assert "unreadable" in result.output and "format version 2" in result.output
    with pytest.raises(ClosureError, match="version 2"):
        zoo.get("broken")
    assert zoo.get("demo").iteration == 12


def test_the_default_zoo_is_in_the_data_dir(tmp_path: Path) -> None:
    from mlitb.cli._zoo import zoo_dir

    source = closure_file(tmp_path / "a.closure.json")
    result = CliRunner().invoke(app, ["zoo", "add", str(source)],
                                env={"MLITB_DATA_DIR": str(tmp_path / "data"), "MLITB_ZOO": ""})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "zoo" / "demo.closure.json").is_file()
    assert zoo_dir(tmp_path / "z") == tmp_path / "z"
