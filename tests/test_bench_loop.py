"""bench/loop.py's master figures with a few simulated workers in child processes: every round
reaches all of them, and the figures are the ones the table prints (no timing asserted)."""

from __future__ import annotations

import pytest
import trio

from mlitb.bench import loop as bench_loop


def test_the_master_figures_come_from_rounds_that_reached_every_worker(monkeypatch) -> None:
    monkeypatch.setattr(bench_loop, "PER_PROCESS", 8)  # 20 workers in three processes
    figures = trio.run(bench_loop._measure_master, 20, 2)
    assert figures.workers == 20 and figures.rounds == 2
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
