"""The ``mlitb`` command line, driven with typer's CliRunner and, once, as a real process."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from mlitb import __version__
from mlitb.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"mlitb {__version__}"


def test_help_lists_every_command_to_come():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for name in ("master", "data-server", "node", "console", "project", "data", "closure",
                 "demo", "bench", "zoo", "model"):
        assert f" {name} " in result.output, name


def test_unknown_option_is_a_usage_error():
    result = runner.invoke(app, ["demo", "--minutes", "-3"])
    assert result.exit_code == 2


def test_console_script_runs_as_a_process():
    proc = subprocess.run([sys.executable, "-m", "mlitb", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"mlitb {__version__}"


@pytest.mark.parametrize(("algorithm", "target", "wire"),
                         [("local", 0.95, None), ("gradient", 0.9, None), ("local", 0.95, "int8")])
def test_demo_trains_digits_with_two_node_processes(tmp_path, algorithm, target, wire):
    """The README's main job, as a newcomer runs it: master, data server and real node
    processes on loopback; two trainers take digits to the target test accuracy (local steps,
    the default, to 95%; the paper's algorithm to 90%; local steps with int8 results), and the
    model and its research closure are saved."""
    from mlitb.closure import load_closure
    from mlitb.datasets import digits, to_input
    from mlitb.nn import load_model

    out = tmp_path / "model.json"
    proc = subprocess.run([sys.executable, "-m", "mlitb", "demo", "--minutes", "3",
                           "--algorithm", algorithm, "--target", str(target), "-o", str(out),
                           *(["--wire", wire] if wire else [])],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "started 2 trainer process(es) and a stats worker" in proc.stdout
    assert f"reached the target {target:.0%}" in proc.stdout, proc.stdout
    net = load_model(out)
    _, test, labels = digits(seed=0)
    assert net.labels == labels
    accuracy = (net.predict(to_input(test.images)).argmax(axis=1) == test.labels).mean()
    assert accuracy >= target - 0.05  # the stats worker saw the target a moment before
    closure = load_closure(tmp_path / "model.closure.json")
    assert closure.loop.training.algorithm == algorithm
    assert closure.loop.training.wire == (wire or "float32")
    assert str(tmp_path / "model.closure.json") in proc.stdout.replace("\n", "")
    assert np.array_equal(closure.parameters, net.params)


def test_demo_reports_an_unwritable_output_before_training(tmp_path):
    out = tmp_path / "missing-dir" / "model.json"
    result = runner.invoke(app, ["demo", "--minutes", "1", "-o", str(out)])
    assert result.exit_code == 1
    assert "cannot save the model" in result.output
    assert "Traceback" not in result.output


def test_demo_checks_its_options(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text("[]")
    result = runner.invoke(app, ["demo", "--model", str(spec)])
    assert result.exit_code == 1 and "--test and --model go with --data" in result.output
    result = runner.invoke(app, ["demo", "--wire", "float8"])
    assert result.exit_code == 2 and "float32, float16 or int8" in result.output


def test_digits_split_is_stratified_and_fixed():
    from mlitb.datasets import digits

    train, test, labels = digits(seed=0)
    assert len(train.labels) + len(test.labels) == 1797
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (8, 8, 1)
    assert set(np.unique(test.labels)) == set(range(10))
    again = digits(seed=0)[1]
    assert np.array_equal(again.labels, test.labels)
