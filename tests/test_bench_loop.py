"""mlitb/bench/loop.py's master figures with a few simulated workers in child processes: every round
reaches all of them, and the figures are the ones the table prints (no timing asserted)."""

from __future__ import annotations

import pytest
import trio

from mlitb.bench import loop as bench_loop


def test_the_master_figures_come_from_rounds_that_reached_every_worker(monkeypatch) -> None:
    monkeypatch.setattr(bench_loop, "PER_PROCESS", 8)  # 20 workers in three processes
    figures = trio.run(bench_loop._measure_master, 20, 2)
    assert figures.workers == 20 and figures.rounds == 2 and figures.wire == "float32"
    assert figures.round_ms > 0 and figures.reduce_ms > 0 and figures.cpu_ms_per_round > 0
    assert figures.cpu_share_of_t == pytest.approx(figures.cpu_ms_per_round
                                                   / (1e3 * bench_loop.MASTER_T))
    assert figures.rss_mb > 10


def test_bad_counts_are_refused(capsys) -> None:
    for argv in (["--simulated", "10,x"], ["--simulated", "0"], ["--nodes", "-1"]):
        with pytest.raises(SystemExit) as exited:
            bench_loop.main(argv)
        assert exited.value.code == 2
        assert "--simulated and --nodes" in capsys.readouterr().err


def test_the_simulated_workers_speak_the_projects_wire(monkeypatch) -> None:
    """With int8 the master takes every simulated result (it refuses another encoding)."""
    monkeypatch.setattr(bench_loop, "PER_PROCESS", 8)
    figures = trio.run(bench_loop._measure_master, 10, 2, "int8")
    assert figures.wire == "int8" and figures.rounds == 2 and figures.round_ms > 0


def test_an_unknown_wire_is_refused(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        bench_loop.main(["--wire", "float8", "--nodes", "", "--simulated", "1"])
    assert exited.value.code == 2
    assert "--wire takes" in capsys.readouterr().err
