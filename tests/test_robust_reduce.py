"""Robust aggregation's functional core (issue 11): ``aggregate`` and its per-result checks,
the reducers' properties, the setting in ``Training`` and in closures, strikes in ``Project``."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlitb.closure import (
    closure_from_dict,
    closure_from_project,
    closure_to_dict,
    project_from_closure,
)
from mlitb.nn import Net
from mlitb.optim import SGD, make_optimizer
from mlitb.protocol import ProjectInfo, ResultFrame, ResultKind, Training
from mlitb.training import (
    Member,
    Project,
    TrainingError,
    aggregate,
    reduce_gradient_sums,
    reduce_parameter_deltas,
    training_from_json,
    training_to_json,
)

ROBUST = ("median", "trimmed_mean", "centered_clip")
NO_CHECKS = {"norm_clip": None, "norm_refuse": None, "max_strikes": 0}
SPEC = [{"type": "input", "out_sx": 2, "out_sy": 2, "out_depth": 1},
        {"type": "softmax", "num_classes": 2}]


def frame(vector: np.ndarray, samples: int, kind: ResultKind = ResultKind.GRADIENT_SUM
          ) -> ResultFrame:
    return ResultFrame(parameter_version=0, kind=kind, samples=samples, correct=0,
                       loss_sum=float(samples), compute_seconds=0.1,
                       vector=np.asarray(vector, np.float32), steps=1 if kind is
                       ResultKind.PARAMETER_DELTA else 0)


def direction(results: list[ResultFrame], training: Training, budgets=None) -> np.ndarray:
    """The reduced per-sample gradient: plain SGD with learning rate 1 steps by minus it."""
    n = results[0].vector.size
    params = np.zeros(n, np.float32)
    summary = aggregate(results, params, SGD(n, learning_rate=1.0, momentum=0.0), training,
                        budgets)
    assert summary.stepped
    return -params.astype(np.float64)


values = st.floats(-100.0, 100.0, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(st.lists(values, min_size=1, max_size=6),
       st.lists(st.integers(1, 500), min_size=1, max_size=9),
       st.sampled_from(ROBUST))
def test_when_all_results_agree_every_reducer_is_the_mean(u, counts, aggregation) -> None:
    unit = np.asarray(u, np.float32)
    results = [frame(unit * np.float32(n), n) for n in counts]
    mean = direction(results, Training())
    robust = direction(results, Training(aggregation=aggregation))
    np.testing.assert_allclose(robust, unit, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(robust, mean, rtol=1e-5, atol=1e-5)


@settings(max_examples=80, deadline=None)
@given(st.data(), st.integers(3, 9), st.sampled_from(ROBUST))
def test_f_below_half_arbitrary_results_cannot_leave_the_honest_range(data, n, aggregation
                                                                       ) -> None:
    """f < n/2 results are arbitrary (finite, up to 1e30, any sample count): the median and the
    trimmed mean (trimming at least f per side) stay in the honest results' coordinate-wise
    range; CenteredClip within (1 + 3 clip_radius) x the honest box's diagonal of the honest
    mean."""
    f = data.draw(st.integers(0, (n - 1) // 2))
    dim = data.draw(st.integers(1, 5))
    honest = np.asarray(data.draw(st.lists(st.lists(values, min_size=dim, max_size=dim),
                                           min_size=n - f, max_size=n - f)), np.float64)
    big = float(np.float32(1e30))
    hostile = data.draw(st.lists(st.lists(st.floats(-big, big, width=32), min_size=dim,
                                          max_size=dim), min_size=f, max_size=f))
    counts = data.draw(st.lists(st.integers(1, 50), min_size=n - f, max_size=n - f))
    honest_frames = [frame(h * c, c) for h, c in zip(honest.astype(np.float32), counts)]
    honest_units = np.stack([r.vector.astype(np.float64) / r.samples for r in honest_frames])
    results = honest_frames + [frame(np.asarray(h, np.float32),
                                     data.draw(st.integers(1, 10**6))) for h in hostile]
    results = data.draw(st.permutations(results))
    training = Training(aggregation=aggregation, trim_fraction=0.45, **NO_CHECKS)
    out = direction(results, training)
    lo, hi = honest_units.min(axis=0), honest_units.max(axis=0)
    slack = 1e-4 * (1 + np.abs(lo) + np.abs(hi))
    if aggregation == "centered_clip":
        diagonal = float(np.linalg.norm(hi - lo))
        bound = (1 + 3 * training.clip_radius) * diagonal + float(slack.max())
        assert np.linalg.norm(out - honest_units.mean(axis=0)) <= bound + diagonal
    else:
        assert (out >= lo - slack).all() and (out <= hi + slack).all(), (out, lo, hi)


def test_mean_is_the_papers_reduce_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    results = [frame(rng.normal(size=50), int(n)) for n in rng.integers(1, 100, 5)]
    for algorithm, reduce, kind in (("gradient", reduce_gradient_sums, ResultKind.GRADIENT_SUM),
                                    ("local", reduce_parameter_deltas,
                                     ResultKind.PARAMETER_DELTA)):
        parts = [frame(r.vector, r.samples, kind) for r in results]
        a, b = np.ones(50, np.float32), np.ones(50, np.float32)
        reduce(parts, a, make_optimizer("adam", 50))
        aggregate(parts, b, make_optimizer("adam", 50), Training(algorithm=algorithm))
        assert a.tobytes() == b.tobytes()


def test_norm_checks_refuse_and_clip_against_the_lower_median() -> None:
    g = np.ones(4, np.float32)
    results = [frame(g * 10, 10), frame(g * 20, 10), frame(g * 30, 10), frame(g * 1e6, 10),
               frame(g * 65, 10)]
    n = 4
    params = np.zeros(n, np.float32)
    summary = aggregate(results, params, SGD(n, learning_rate=1.0, momentum=0.0),
                        Training(aggregation="median"))
    # Norms per sample 2, 4, 6, 2e5, 13: the lower median is 4 (the 3rd of 5 is 6? no: the
    # lower median of five is the third smallest, 6): 2e5 > 100 x 6 is refused, 13 is kept.
    assert [i for i, _ in summary.refused] == [3]
    assert "100 x the round's median" in summary.refused[0][1]
    assert summary.clipped == () and summary.samples == 40
    summary = aggregate(results, params, SGD(n, learning_rate=1.0, momentum=0.0),
                        Training(aggregation="median", norm_clip=2.0))
    assert summary.clipped == (4,)  # 13 > 2 x 6: scaled down to 12


def test_two_results_the_larger_is_bounded_by_the_smaller() -> None:
    g = np.ones(3, np.float32)
    honest, liar = frame(g * 8, 8), frame(-g * 1e6 * 8, 8)
    for aggregation in ROBUST:
        out = direction([honest, liar], Training(aggregation=aggregation, norm_refuse=None))
        # The liar is clipped to 4 x the honest norm: the midpoint is -1.5 per coordinate.
        assert np.all(np.abs(out) <= 4 + 1e-5), (aggregation, out)
        with pytest.raises(AssertionError):  # refused: only the honest one is left
            np.testing.assert_allclose(out, 1.0)
        assert direction([honest, liar], Training(aggregation=aggregation)) == \
            pytest.approx(np.ones(3))
    assert direction([honest], Training(aggregation="centered_clip")) == pytest.approx(g)


def test_sample_claims_are_capped_by_the_rounds_median_rate() -> None:
    g = np.ones(2, np.float32)
    # Three honest workers at ~100 samples/s, one claiming 10^6 samples in a 0.5 s budget.
    results = [frame(g * 50, 50), frame(g * 100, 100), frame(g * 200, 200),
               frame(-g * 1e6, 10**6)]
    params = np.zeros(2, np.float32)
    summary = aggregate(results, params, SGD(2, learning_rate=1.0, momentum=0.0),
                        Training(aggregation="trimmed_mean", trim_fraction=0.0, **NO_CHECKS),
                        [0.5, 1.0, 2.0, 0.5])
    assert summary.capped == (3,)
    # The median rate is 100/s: the liar weighs 50 samples, not 10^6.
    assert summary.samples == 50 + 100 + 200 + 50
    assert -params == pytest.approx((50 + 100 + 200 - 50) / 400 * np.ones(2), rel=1e-5)


def test_local_deltas_are_reduced_as_they_are() -> None:
    deltas = [frame(np.full(3, d, np.float32), n, ResultKind.PARAMETER_DELTA)
              for d, n in ((0.1, 5), (0.2, 50), (0.3, 10), (50.0, 1000))]
    params = np.zeros(3, np.float32)
    outer = SGD(3, learning_rate=1.0, momentum=0.0)
    aggregate(deltas, params, outer, Training(algorithm="local", aggregation="median",
                                              **NO_CHECKS))
    assert params == pytest.approx(np.full(3, 0.25))  # the median delta, added


def test_nothing_useful_does_not_step() -> None:
    params = np.ones(2, np.float32)
    summary = aggregate([frame(np.zeros(2), 0)], params, SGD(2), Training(aggregation="median"))
    assert not summary.stepped and (params == 1).all()


# -- the setting --------------------------------------------------------------------------------
def test_the_setting_in_json_the_wire_and_its_checks() -> None:
    assert training_from_json({}).aggregation == "mean"
    t = training_from_json({"aggregation": "trimmed_mean", "trim_fraction": 0.2,
                            "norm_clip": None})
    assert t.aggregation == "trimmed_mean" and t.norm_clip is None
    assert training_from_json(training_to_json(t)) == t
    for bad in ({"aggregation": "krum"}, {"trim_fraction": 0.5}, {"norm_clip": 0.5},
                {"norm_clip": 10, "norm_refuse": 5}, {"max_strikes": -1},
                {"sample_factor": 0.5}, {"clip_radius": 0}):
        with pytest.raises(TrainingError, match="training\\."):
            training_from_json(bad)
    from mlitb.protocol import Welcome, decode_text, encode_text

    info = ProjectInfo(name="p", state="running", spec=tuple(SPEC), labels=("a", "b"),
                       iteration_time=1.0, iteration=0, parameter_version=0,
                       parameter_count=10, training=t)
    again = decode_text(encode_text(Welcome(worker_id=1, role="trainer", project=info,
                                                data_url="http://127.0.0.1:1",
                                                server_version="test")))
    assert again.project.training == t


def project(training: Training) -> Project:
    net = Net(SPEC, seed=1)
    return Project("p", net, make_optimizer("sgd", net.num_params), "sgd", 1.0,
                   training=training)


def test_closures_record_the_setting_and_old_closures_load_as_mean() -> None:
    p = project(Training(aggregation="centered_clip", clip_radius=2.0, max_strikes=5))
    d = closure_to_dict(closure_from_project(p))
    assert d["loop"]["training"]["aggregation"] == "centered_clip"
    again = closure_from_dict(d)
    assert again.loop.training == p.training
    assert project_from_closure(again).training.aggregation == "centered_clip"
    old = closure_to_dict(closure_from_project(project(Training())))
    for key in ("aggregation", "trim_fraction", "clip_radius", "norm_clip", "norm_refuse",
                "sample_factor", "max_strikes"):
        del old["loop"]["training"][key]
    old.pop("content_sha256", None)  # a closure written before these fields existed
    assert closure_from_dict(old).loop.training.aggregation == "mean"


def test_the_setting_is_live() -> None:
    p = project(Training())
    p.set_training(Training(aggregation="median"))
    assert p.training.aggregation == "median" and p.info().training.aggregation == "median"


# -- strikes ------------------------------------------------------------------------------------
def test_a_trainer_refused_three_rounds_in_a_row_is_dropped_and_one_that_recovers_is_not(
) -> None:
    p = project(Training(aggregation="median"))
    p.add_data("train", list(range(30)))
    for w in range(4):
        p.add_member(Member(w, "trainer", "node", "h"))
    p.admit_pending()
    g = np.ones(p.net.num_params, np.float32)
    for round_ in range(3):
        it = p.plan_iteration(float(round_))
        for w in it.orders:
            hostile = w == 3 or (w == 2 and round_ != 1)  # worker 2 is honest in round 1
            result = dataclasses.replace(frame(g * (1e6 if hostile else 1.0), 1),
                                         parameter_version=it.parameter_version)
            assert p.accept_result(w, result, round_ + 0.5) is None
        p.finish_iteration(round_ + 0.9)
        assert p.parameter_version == round_ + 1
        if round_ < 2:
            assert not p.dropped
    assert [w for w, _ in p.dropped] == [3]
    assert "refused 3 rounds in a row" in p.dropped[0][1]
    assert 3 not in p.members and 3 not in p.trainers() and p.strikes == {2: 1}
    assert math.isfinite(float(p.net.params.sum()))
