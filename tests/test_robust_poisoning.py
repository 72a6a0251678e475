"""Poisoning (issue 11): 2 of 8 trainers send hostile results every round on the bundled digits,
through the real ``Project`` (plan / accept / finish) with honest trainers computing real gradient
sums with the node's ``compute_gradient`` (tests/helpers/robust_sim.py). The plain mean is ruined; each
robust reducer ends within 2 points of a clean run. The figures are in docs/security.md."""

from __future__ import annotations

import pytest
from helpers.robust_sim import run

from mlitb.protocol import Training

ROUNDS = 150
ATTACK = ("flip", "huge")  # -1e6 x the true gradient; every value 1e30; both claim 10^6 samples
ROBUST = ("median", "trimmed_mean", "centered_clip")
NO_CHECKS = {"norm_clip": None, "norm_refuse": None, "max_strikes": 0}


@pytest.fixture(scope="module")
def clean() -> float:
    result = run(ROUNDS, Training())
    assert result.stepped == ROUNDS and result.accuracy > 0.9
    return result.accuracy


def test_the_plain_mean_is_ruined(clean: float) -> None:
    attacked = run(ROUNDS, Training(), ATTACK)
    assert attacked.hostile_results == 2 * ROUNDS
    assert attacked.accuracy < clean - 0.5  # near chance: no useful step was ever taken
    flip_only = run(ROUNDS, Training(), ATTACK[:1])
    assert flip_only.stepped == ROUNDS and flip_only.accuracy < clean - 0.5


@pytest.mark.parametrize("aggregation", ROBUST)
def test_a_robust_reducer_stays_within_two_points_of_a_clean_run(clean: float,
                                                                  aggregation: str) -> None:
    attacked = run(ROUNDS, Training(aggregation=aggregation), ATTACK)  # type: ignore[arg-type]
    # Hostile in every round: each dropped attacker came back under a new id.
    assert attacked.hostile_results == 2 * ROUNDS
    assert attacked.refused == 2 * ROUNDS and attacked.stepped == ROUNDS
    assert len(attacked.dropped) >= 2 * (ROUNDS // 3) - 2
    assert attacked.accuracy >= clean - 0.02, (attacked.accuracy, clean)


@pytest.mark.parametrize("aggregation", ROBUST)
def test_the_reducer_alone_without_the_checks_still_trains(clean: float,
                                                           aggregation: str) -> None:
    """With no norm check and no strikes every hostile result reaches the reducer: the robust
    reducer alone keeps training (within 10 points here; the mean is at chance)."""
    attacked = run(ROUNDS, Training(aggregation=aggregation, **NO_CHECKS),  # type: ignore
                   ATTACK)
    assert attacked.refused == 0 and not attacked.dropped and attacked.stepped == ROUNDS
    assert attacked.accuracy >= clean - 0.10, (attacked.accuracy, clean)
