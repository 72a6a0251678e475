"""mlitb/bench/closure.py (``mlitb bench closure``): the libraries and the hand-written code they
replaced, each measured on the same closures, which both accept and hash alike."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mlitb.cli import app


def test_mlitb_bench_closure_measures_both_on_each_closure() -> None:
    result = CliRunner().invoke(app, ["bench", "closure", "--seconds", "0.001", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["closures"]
    assert [r["closure"].split(",")[0] for r in rows] == ["digits net", "CIFAR-10 fast net"]
    for r in rows:
        assert r["bytes"] > 100_000
        for key in ("validate", "canonical"):
            assert r[f"{key}_ms"] > 0 and r[f"{key}_old_ms"] > 0
            assert abs(r[f"{key}_ratio"] - r[f"{key}_ms"] / r[f"{key}_old_ms"]) < 1e-9
        assert r["load_ms"] >= r["validate_ms"] / 10
