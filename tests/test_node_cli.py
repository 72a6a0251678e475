"""``mlitb node join``: argument validation (typer's CliRunner) and the status display."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mlitb.cli._node import Task, check_url, default_workers, node_app
from mlitb.nodes._reports import LogLine, WorkerEnded, WorkerStatus
from mlitb.nodes._supervisor import NodeConfig, NodeDisplay

runner = CliRunner()


@pytest.mark.parametrize("args, message", [
    (["join", "http://lab-pc:8000"], "must start with ws:// or wss://"),
    (["join", "lab-pc:8000"], "must start with ws:// or wss://"),
    (["join", "ws://"], "has no host"),
    (["join", "ws://lab-pc:99999"], "not a valid URL"),
    (["join", "ws://lab-pc:8000/?x=1"], "query or fragment"),
    (["join", "ws://lab-pc:8000", "--project", "no spaces"], "is not a project name"),
    (["join", "ws://lab-pc:8000", "--workers", "0"], "--workers"),
    (["join", "ws://lab-pc:8000", "--workers", "257"], "--workers"),
    (["join", "ws://lab-pc:8000", "--task", "predict"], "--task"),
    (["join"], "Missing argument"),
])
def test_bad_arguments_are_usage_errors(args: list[str], message: str) -> None:
    result = runner.invoke(node_app, args, env={"MLITB_MASTER": None, "MLITB_PROJECT": None})
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ").replace("│", " ") or \
        message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[NodeConfig] = []

    def fake_run(config: NodeConfig) -> int:
        seen.append(config)
        return 2

    monkeypatch.setattr("mlitb.nodes._supervisor.run_node", fake_run)
    result = runner.invoke(node_app, ["join", "--task", "STATS"],
                           env={"MLITB_MASTER": "wss://lab-pc:8000/", "MLITB_PROJECT": "cifar"})
    assert result.exit_code == 2, result.output
    (config,) = seen
    assert (config.url, config.project, config.task, config.workers) == \
        ("wss://lab-pc:8000/", "cifar", "stats", 1)
    result = runner.invoke(node_app, ["join", "ws://h:1", "-n", "3", "--seed", "4"],
                           env={"MLITB_MASTER": None, "MLITB_PROJECT": None})
    assert result.exit_code == 2
    assert (seen[1].workers, seen[1].seed, seen[1].project, seen[1].task) == (3, 4, None, "train")


def test_defaults() -> None:
    assert check_url(" ws://lab-pc:8000 ") == "ws://lab-pc:8000"
    assert default_workers(Task.train) >= 1
    assert default_workers(Task.stats) == default_workers(Task.track) == 1


def test_display_aggregates_workers() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    display = NodeDisplay(NodeConfig(url="ws://h:1", project="digits", workers=2), console)
    display.handle(WorkerStatus(index=0, phase="training", worker_id=3, project="digits",
                                iteration=41, parameter_version=41, allocated=700, cached=700,
                                samples_per_s=1500.0, loss=0.5, results=4))
    display.handle(WorkerStatus(index=1, phase="caching", worker_id=4, project="digits",
                                iteration=42, parameter_version=42, allocated=737, cached=100,
                                samples_per_s=500.0, loss=0.3))
    line = display.status_line().plain
    assert "2/2 workers (1 caching, 1 training)" in line
    assert "iteration 42" in line and "v42" in line
    assert "2,000 samples/s" in line and "cached 800/1,437" in line and "loss 0.4000" in line
    display.handle(LogLine(0, logging.WARNING, "the master says bye (shutdown)"))
    display.handle(LogLine(0, logging.DEBUG, "hidden unless verbose"))
    display.handle(WorkerEnded(1, 2, "refused"))
    assert "worker 0: the master says bye (shutdown)" in out.getvalue()
    assert "hidden" not in out.getvalue()
    assert display.ended[1].reason == "refused"
    with display:
        display.refresh()
    assert "mlitb node train digits" in out.getvalue()
