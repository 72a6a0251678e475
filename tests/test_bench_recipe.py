"""mlitb/bench/recipe.py on a small made-up dataset: simulated trainers drive a real Project, every
round trains exactly the samples asked for, and the net learns what it is shown."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from mlitb.bench import recipe as bench_recipe


def _two_classes(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2  # dark and bright images: told apart at once
    images = (40 + 170 * labels[:, None, None, None]
              + rng.integers(0, 30, (n, 3, 32, 32))).astype(np.uint8)
    return images, labels.astype(np.int64)


@pytest.mark.parametrize("variant, trainers", [("recipe", 2), ("one", 1), ("paper", 2)])
def test_each_round_trains_the_samples_asked_for_and_the_net_learns(variant: str,
                                                                    trainers: int) -> None:
    train, test = _two_classes(400), _two_classes(60)
    setup = bench_recipe.setup(variant, 4.0, 2)
    assert setup.trainers == trainers
    result = bench_recipe.run_variant(setup, 4.0, 40, train, test, 2, io.StringIO())
    rounds = round(4.0 / setup.iteration_time)
    per_round = int(40 * setup.iteration_time) * 2  # one trainer alone computes both shares
    assert result["rounds"] == rounds and result["samples"] == rounds * per_round
    assert [s for s, _ in result["curve"]] == [rounds * per_round // 2, rounds * per_round]
    assert result["final"] > 0.9


def test_unknown_variants_are_refused_and_without_the_zips_it_skips(monkeypatch, capsys,
                                                                    tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        bench_recipe.main(["--variants", "recipe,bogus"])
    assert exited.value.code == 2 and "unknown bogus" in capsys.readouterr().err
    monkeypatch.setattr(bench_recipe, "DATA", tmp_path)
    assert bench_recipe.main([]) == 0
    assert "skipped: no CIFAR-10 zips" in capsys.readouterr().out
