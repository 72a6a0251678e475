"""mlitb/bench/train.py end to end on a small made-up dataset: the real master, data server and a
node process train, the curve is measured afterwards, and the report says what it measured."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from mlitb.bench import train as bench_train
from mlitb.dataserver import write_archive


@pytest.mark.slow
def test_a_short_run_gives_a_curve_on_the_whole_test_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # Two classes a net tells apart at once: dark and bright images.
    images = [(f"c{i % 2}", np.full((32, 32, 3), 40 + 170 * (i % 2), np.uint8)
               + rng.integers(0, 30, (32, 32, 3), dtype=np.uint8)) for i in range(200)]
    archive = write_archive(tmp_path / "train.zip", images, image_format="PNG")
    test_x = np.stack([img.transpose(2, 0, 1) for _, img in images[:60]])
    test_y = np.array([int(label[1]) for label, _ in images[:60]])
    recipe = bench_train.recipe("local", 6.0)
    curve = bench_train.run_system(1, recipe, 6.0, archive, (test_x, test_y), io.StringIO())
    assert curve.samples > 0 and curve.points
    times = [t for t, _ in curve.points]
    assert times == sorted(times) and times[-1] <= 6.0
    assert curve.best > 0.9 and curve.time_to(0.9) is not None


@pytest.mark.slow
def test_a_short_int8_run_trains_and_counts_its_bytes(tmp_path: Path) -> None:
    import dataclasses

    rng = np.random.default_rng(1)
    images = [(f"c{i % 2}", np.full((32, 32, 3), 40 + 170 * (i % 2), np.uint8)
               + rng.integers(0, 30, (32, 32, 3), dtype=np.uint8)) for i in range(200)]
    archive = write_archive(tmp_path / "train.zip", images, image_format="PNG")
    test_x = np.stack([img.transpose(2, 0, 1) for _, img in images[:60]])
    test_y = np.array([int(label[1]) for label, _ in images[:60]])
    recipe = bench_train.recipe("local", 6.0)
    recipe = dataclasses.replace(recipe, training=dataclasses.replace(recipe.training,
                                                                      wire="int8"))
    curve = bench_train.run_system(1, recipe, 6.0, archive, (test_x, test_y), io.StringIO())
    assert curve.wire == "int8" and curve.label.endswith("int8")
    assert curve.rounds >= 1 and curve.results >= 1 and curve.best > 0.9
    n = curve.num_params
    assert curve.bytes_per_round == {"parameters": 24 + 2 * n, "result": 40 + 4 * -(-n // 256) + n,
                                     "total": 64 + 2 * n + 4 * -(-n // 256) + n}
    assert bench_train.wire_bytes("float32", n)["total"] == 64 + 8 * n
    with pytest.raises(ValueError, match="'int4' is not"):
        bench_train.wire_kinds("float32,int4")


def test_without_the_cifar_zips_it_skips_with_a_reason(monkeypatch, capsys,
                                                       tmp_path: Path) -> None:
    monkeypatch.setattr(bench_train, "DATA", tmp_path)
    assert "skipped" in bench_train.run(with_torch=False)
    assert "not at" in capsys.readouterr().out
