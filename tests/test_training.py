"""The training core: schedules, augmentation, the outer optimizers and the delta reduce, and the
workers' local steps, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlitb.datasets import DIGITS_SPEC
from mlitb.nn import Net
from mlitb.optim import make_optimizer
from mlitb.protocol import ResultFrame, ResultKind, Training
from mlitb.training import (
    DataCache,
    Project,
    TrainingError,
    augment,
    check_training,
    compute_gradient,
    compute_local,
    lr_factor,
    make_outer,
    progress,
    reduce_gradient_sums,
    reduce_parameter_deltas,
    training_from_json,
    training_to_json,
)

F32 = np.float32


def delta(vector: list[float], samples: int) -> ResultFrame:
    return ResultFrame(parameter_version=0, kind=ResultKind.PARAMETER_DELTA, samples=samples,
                       correct=0, loss_sum=1.0, compute_seconds=0.1,
                       vector=np.asarray(vector, F32), steps=3)


# -- schedules ------------------------------------------------------------------------------------
COSINE = Training(schedule="cosine", horizon=1000, warmup=0.1, final_lr=0.0)


@pytest.mark.parametrize(("at", "expected"), [
    (0.0, 1e-3),  # never exactly 0: the first round must move
    (0.05, 0.5), (0.1, 1.0), (0.55, 0.5), (1.0, 0.0),
    (0.325, 0.5 * (1 + math.cos(math.pi * 0.25))),
])
def test_warmup_then_cosine_at_chosen_points(at: float, expected: float) -> None:
    assert lr_factor(COSINE, at) == pytest.approx(expected, abs=1e-12)


def test_linear_decay_ends_at_final_lr_and_constant_stays() -> None:
    linear = Training(schedule="linear", horizon=10, warmup=0.0, final_lr=0.2)
    assert [lr_factor(linear, a) for a in (0.0, 0.5, 1.0)] == pytest.approx([1.0, 0.6, 0.2])
    assert lr_factor(Training(), 0.7) == 1.0
    assert lr_factor(linear, 3.0) == pytest.approx(0.2)  # past the horizon: the floor


def test_progress_counts_samples_or_seconds() -> None:
    assert progress(Training(schedule="cosine", horizon=200), 50, 999.0) == 0.25
    seconds = Training(schedule="cosine", horizon=60, horizon_unit="seconds")
    assert progress(seconds, 10**9, 30.0) == 0.5
    assert progress(seconds, 0, 120.0) == 1.0
    assert progress(Training(), 10, 10.0) == 0.0


def test_a_project_scales_its_optimizer_by_the_schedule() -> None:
    net = Net(DIGITS_SPEC, seed=0)
    project = Project("p", net, make_optimizer("sgd", net.num_params, learning_rate=0.1), "sgd",
                      1.0, training=Training(schedule="linear", horizon=100, final_lr=0.0))
    project.samples_trained = 25
    assert project.lr_factor == pytest.approx(0.75)


def test_training_settings_are_checked_with_the_field_named() -> None:
    with pytest.raises(TrainingError, match="training.horizon"):
        check_training(Training(schedule="cosine"))
    with pytest.raises(TrainingError, match="training.batch_size"):
        training_from_json({"batch_size": 0})
    with pytest.raises(TrainingError, match="training.algorithm"):
        training_from_json({"algorithm": "diloco"})
    with pytest.raises(TrainingError, match="training.extra"):
        training_from_json({"extra": 1})
    local = Training(algorithm="local", outer_optimizer="nesterov", shift=4, flip=True)
    assert training_from_json(training_to_json(local)) == local
    assert training_from_json({}) == Training()


# -- augmentation ---------------------------------------------------------------------------------
def test_shift_moves_the_image_and_fills_with_zero() -> None:
    x = np.arange(1 * 1 * 4 * 4, dtype=F32).reshape(1, 1, 4, 4) + 1

    class Draws:  # a generator whose draws we choose: dy = 1, dx = -1
        def integers(self, lo: int, hi: int, size: int) -> np.ndarray:
            self.calls = getattr(self, "calls", 0) + 1
            return np.array([1 if self.calls == 1 else -1] * size)

    out = augment(x, Draws(), shift=1)  # type: ignore[arg-type]
    expected = np.zeros((4, 4), F32)
    expected[1:, :3] = x[0, 0, :3, 1:]
    np.testing.assert_array_equal(out[0, 0], expected)


def test_flip_mirrors_left_right() -> None:
    x = np.random.default_rng(0).standard_normal((64, 3, 5, 5)).astype(F32)
    out = augment(x, np.random.default_rng(1), flip=True)
    mirrored = [bool(np.array_equal(out[i], x[i, :, :, ::-1])) for i in range(64)]
    kept = [bool(np.array_equal(out[i], x[i])) for i in range(64)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 10 < sum(mirrored) < 54


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), shift=st.integers(0, 16), flip=st.booleans(), seed=st.integers(0, 99))
def test_augment_keeps_shapes_is_seeded_and_leaves_its_input(n: int, shift: int, flip: bool,
                                                             seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal((n, 2, 6, 7)).astype(F32)
    before = x.copy()
    a = augment(x, np.random.default_rng(seed), shift=shift, flip=flip)
    b = augment(x, np.random.default_rng(seed), shift=shift, flip=flip)
    assert a.shape == x.shape and a.dtype == F32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x, before)
    # every value is either from the image or the zero fill
    assert np.isin(a, np.concatenate([x.ravel(), [0.0]])).all()


# -- the outer step -------------------------------------------------------------------------------
def test_deltas_are_weighted_by_samples_and_average_with_lr_1() -> None:
    params = np.array([1.0, 2.0], F32)
    outer = make_outer(Training(algorithm="local", outer_optimizer="average"), 2)
    summary = reduce_parameter_deltas([delta([0.3, -0.6], 1), delta([0.0, 0.6], 2)], params,
                                      outer)
    # (1 * [0.3, -0.6] + 2 * [0, 0.6]) / 3 = [0.1, 0.2]
    np.testing.assert_allclose(params, [1.1, 2.2], rtol=1e-6)
    assert summary.samples == 3 and summary.stepped and summary.workers == 2


def test_outer_nesterov_against_hand_computed_steps() -> None:
    lr, mu = 0.7, 0.9
    outer = make_outer(Training(algorithm="local", outer_optimizer="nesterov",
                                outer_learning_rate=lr, outer_momentum=mu), 1)
    p = np.array([0.0], F32)
    reduce_parameter_deltas([delta([1.0], 5)], p, outer)
    # PyTorch's form: b = mu*b + g, p -= lr*(g + mu*b), with g = -delta
    b1 = -1.0
    p1 = 0.0 - lr * (-1.0 + mu * b1)
    assert p[0] == pytest.approx(p1, rel=1e-6)  # 1.33
    reduce_parameter_deltas([delta([0.5], 5)], p, outer)
    b2 = mu * b1 - 0.5
    assert p[0] == pytest.approx(p1 - lr * (-0.5 + mu * b2), rel=1e-6)


def test_results_of_the_other_kind_and_empty_ones_are_ignored() -> None:
    params = np.array([1.0], F32)
    gradient = ResultFrame(parameter_version=0, kind=ResultKind.GRADIENT_SUM, samples=4,
                           correct=0, loss_sum=1.0, compute_seconds=0.1,
                           vector=np.array([8.0], F32))
    outer = make_outer(Training(algorithm="local"), 1)
    assert not reduce_parameter_deltas([gradient, delta([1.0], 0)], params, outer).stepped
    assert params[0] == 1.0
    sgd = make_optimizer("sgd", 1, momentum=0.0, learning_rate=1.0)
    assert not reduce_gradient_sums([delta([1.0], 3)], params, sgd).stepped


# -- local steps on a worker ----------------------------------------------------------------------
def digits_view(n: int = 40):
    rng = np.random.default_rng(0)
    cache = DataCache((1, 8, 8))
    ids = np.arange(n)
    cache.allocate(ids.tolist(), [])
    cache.add(ids, rng.integers(0, 10, n), rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8))
    return cache.snapshot()


def test_one_local_step_of_plain_sgd_is_minus_lr_times_the_mean_gradient() -> None:
    view = digits_view(8)
    net = Net(DIGITS_SPEC, seed=1)
    start = net.params.copy()
    g = compute_gradient(net, view, samples=8, max_batch=8)
    net.params = start.copy()  # adopted, not copied: keep ``start`` apart
    inner = make_optimizer("sgd", net.num_params, momentum=0.0)
    r = compute_local(net, view, inner, learning_rate=0.5, batch_size=8, samples=8)
    assert (r.steps, r.samples) == (1, 8)
    np.testing.assert_allclose(r.vector, -0.5 * g.vector / 8, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(net.params, start + r.vector, rtol=1e-6, atol=1e-7)
    assert r.loss_sum == pytest.approx(g.loss_sum)


def test_local_steps_count_batches_and_the_inner_state_carries_over() -> None:
    view = digits_view(40)
    net = Net(DIGITS_SPEC, seed=1)
    inner = make_optimizer("nesterov", net.num_params, momentum=0.9)
    first = compute_local(net, view, inner, learning_rate=0.05, batch_size=16, samples=40)
    assert (first.steps, first.samples) == (3, 40)  # 16 + 16 + 8
    velocity = inner.state()["velocity"].copy()
    assert np.abs(velocity).sum() > 0 and inner.step_count == 3
    compute_local(net, view, inner, learning_rate=0.05, batch_size=16, samples=16)
    assert inner.step_count == 4
    assert not np.array_equal(inner.state()["velocity"], velocity)


def test_local_steps_in_deterministic_mode_are_reproducible() -> None:
    view = digits_view(40)
    results = []
    for _ in range(2):
        net = Net(DIGITS_SPEC, seed=2)
        inner = make_optimizer("adam", net.num_params, learning_rate=0.01)
        results.append(compute_local(net, view, inner, learning_rate=0.01, batch_size=8,
                                     samples=24, seed=3, iteration=7, shift=1, flip=True))
    np.testing.assert_array_equal(results[0].vector, results[1].vector)


def test_a_time_budget_keeps_stepping_until_it_is_spent() -> None:
    view = digits_view(40)
    net = Net(DIGITS_SPEC, seed=1)
    inner = make_optimizer("sgd", net.num_params)
    ticks = iter(np.arange(0, 100, 0.01))
    r = compute_local(net, view, inner, learning_rate=0.01, batch_size=4, seconds=0.5,
                      clock=lambda: float(next(ticks)), rng=np.random.default_rng(0))
    assert r.steps > 1 and r.samples >= r.steps and r.vector.shape == (net.num_params,)
