"""Tests of mlitb.optim: hand-computed steps, the schedule, properties, state, growth, errors.

Expected values are worked out by hand in the comments (not with the module's formulas), so a
changed update rule fails here.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlitb.errors import OptimizerError
from mlitb.optim import OPTIMIZERS, SGD, Adadelta, AdaGrad, Adam, Optimizer, make_optimizer

F32 = np.float32


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=F32)


def run(opt: Optimizer, p: np.ndarray, grads: list[np.ndarray]) -> list[np.ndarray]:
    """Step through ``grads``; return a copy of ``p`` after every step."""
    seen = []
    for g in grads:
        opt.step(p, g)
        seen.append(p.copy())
    return seen


def close(actual: np.ndarray, *expected: float) -> None:
    np.testing.assert_allclose(actual, f32(*expected), rtol=1e-6, atol=1e-7)


# -- each optimizer's first steps, by hand ------------------------------------------------------

def test_sgd_plain() -> None:
    # p -= 0.1 * g with g = [0.5, 1]
    steps = run(make_optimizer("sgd", 2, learning_rate=0.1, momentum=0.0), f32(1, -2),
                [f32(0.5, 1)] * 2)
    close(steps[0], 0.95, -2.1)
    close(steps[1], 0.9, -2.2)


def test_sgd_momentum() -> None:
    # dx = 0.9 v - 0.1 g.  g = 1: dx = -0.1, -0.19, -0.271.  g = -2: dx = 0.2, 0.38, 0.542
    steps = run(SGD(2, learning_rate=0.1), f32(1, 2), [f32(1, -2)] * 3)
    close(steps[0], 0.9, 2.2)
    close(steps[1], 0.71, 2.58)
    close(steps[2], 0.439, 3.122)


def test_sgd_nesterov() -> None:
    # step 1: v = 0.1, dx = 0 - 1.9*0.1 = -0.19;  step 2: v = 0.19, dx = 0.09 - 0.361 = -0.271
    # step 3: v = 0.271, dx = 0.171 - 0.5149 = -0.3439
    for opt in (make_optimizer("nesterov", 1, learning_rate=0.1),
                make_optimizer("sgd", 1, learning_rate=0.1, nesterov=True)):
        steps = run(opt, f32(1), [f32(1)] * 3)
        close(np.concatenate(steps), 0.81, 0.539, 0.1951)


def test_weight_decay_terms() -> None:
    # lr 0.1, l2 0.5, l1 0.2, zero loss gradient; the third parameter is a bias (multipliers 0).
    # step 1: g = 0.5*2 + 0.2 = 1.2 -> 1.88;     g = -0.5 - 0.2 = -0.7 -> -0.93
    # step 2: g = 0.94 + 0.2 = 1.14 -> 1.766;    g = -0.465 - 0.2 = -0.665 -> -0.8635
    # A parameter at exactly 0 gets no L1 push (sign(0) = 0; ConvNetJS would push it to +0.02).
    opt = make_optimizer("sgd", 4, learning_rate=0.1, momentum=0.0, l2_decay=0.5, l1_decay=0.2,
                         l1_mul=f32(1, 1, 0, 1), l2_mul=f32(1, 1, 0, 1))
    steps = run(opt, f32(2, -1, 3, 0), [f32(0, 0, 0, 0)] * 2)
    close(steps[0], 1.88, -0.93, 3, 0)
    close(steps[1], 1.766, -0.8635, 3, 0)


def test_decay_scaled_by_multiplier_and_caller_grad_untouched() -> None:
    # l2 0.1 with multiplier 2 on p = 5: g = 1 + 0.1*2*5 = 2 -> p = 5 - 0.5*2 = 4
    grad = f32(1.0)
    opt = make_optimizer("sgd", 1, learning_rate=0.5, momentum=0.0, l2_decay=0.1, l2_mul=f32(2))
    p = f32(5)
    opt.step(p, grad)
    close(p, 4.0)
    close(grad, 1.0)


def test_adagrad() -> None:
    # lr 0.1; G = [9, 16] -> p -= 0.1*[3/3, 4/4];  G = [25, 16] -> p -= 0.1*[4/5, 0]
    # G = [25, 25] -> p -= 0.1*[0, 3/5]
    steps = run(AdaGrad(2, learning_rate=0.1), f32(1, 1), [f32(3, 4), f32(4, 0), f32(0, 3)])
    close(steps[0], 0.9, 0.9)
    close(steps[1], 0.82, 0.9)
    close(steps[2], 0.82, 0.84)


def test_adadelta() -> None:
    # ro 0.25, eps 1, g = 2: E_g = 0.75*4 = 3, dx = -sqrt(1/4)*2 = -1, E_x = 0.75
    # g = 2: E_g = 0.75 + 3 = 3.75, dx = -sqrt(1.75/4.75)*2 = -2*0.6069770 = -1.2139540
    steps = run(Adadelta(1, ro=0.25, eps=1.0), f32(0), [f32(2), f32(2)])
    close(np.concatenate(steps), -1.0, -2.213954)
    # learning_rate multiplies the step only: the same run at 0.5 moves half as far
    steps = run(Adadelta(1, ro=0.25, eps=1.0, learning_rate=0.5), f32(0), [f32(2), f32(2)])
    close(np.concatenate(steps), -0.5, -1.106977)


def test_adam() -> None:
    # lr 0.1.  Step 1: m_hat = g, v_hat = g^2, so p -= 0.1*sign(g) -> [0.9, 1.1].
    # Step 2 (g = [0, 1]): p1: m = 0.18, m_hat = 0.18/0.19 = 0.947368, v = 0.003996,
    #   v_hat = 0.003996/0.001999 = 1.998999, sqrt 1.413860 -> step 0.0670058 -> 0.8329942
    # p2: m = -0.045 + 0.1 = 0.055, m_hat = 0.289474, v = 0.00024975 + 0.001 = 0.00124975,
    #   v_hat = 0.625187, sqrt 0.790688 -> step 0.0366103 -> 1.0633897
    steps = run(Adam(2, learning_rate=0.1), f32(1, 1), [f32(2, -0.5), f32(0, 1)])
    close(steps[0], 0.9, 1.1)
    close(steps[1], 0.8329942, 1.0633897)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 50.0])
def test_adam_first_step_is_learning_rate(scale: float) -> None:
    # With bias correction that divides, step 1 is lr*g/|g| for every parameter. ConvNetJS 0.3
    # multiplies by (1 - beta^t) instead and would move 10x as far.
    g = f32(1, -2, 0.5, 3) * scale
    p = np.zeros(4, F32)
    Adam(4, learning_rate=0.01).step(p, g)
    np.testing.assert_allclose(np.abs(p), 0.01, rtol=1e-4)


# -- the learning-rate schedule ------------------------------------------------------------------

def test_lr_schedule_factor_every_k_with_floor() -> None:
    # lr 1, halved after every 2nd step, floor 0.2: the steps use 1, 1, .5, .5, .25, .25, .2, .2
    opt = make_optimizer("sgd", 1, learning_rate=1.0, momentum=0.0, lr_decay=0.5,
                         lr_decay_every=2, lr_min=0.2)
    p, positions, rates = f32(0), [], []
    for _ in range(8):
        opt.step(p, f32(1))
        positions.append(float(p[0]))
        rates.append(opt.learning_rate)
    close(f32(*positions), -1, -2, -2.5, -3, -3.25, -3.5, -3.7, -3.9)
    assert rates == [1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2]
    assert opt.hyperparameters()["learning_rate"] == 0.2


def test_lr_floor_never_raises_an_operator_rate() -> None:
    opt = make_optimizer("adagrad", 1, learning_rate=1.0, lr_decay=0.5, lr_min=0.2)
    opt.set_hyperparameters(learning_rate=0.1)
    opt.step(f32(0), f32(1))
    assert opt.learning_rate == 0.1


def test_no_decay_by_default() -> None:
    opt = make_optimizer("adam", 1)
    for _ in range(5):
        opt.step(f32(0), f32(1))
    assert opt.learning_rate == 0.01
    assert opt.step_count == 5


# -- properties ----------------------------------------------------------------------------------

NAMES = st.sampled_from(OPTIMIZERS)
FINITE = st.floats(-1e3, 1e3, width=32)


@st.composite
def runs(draw: st.DrawFn) -> tuple[str, np.ndarray, list[np.ndarray], dict[str, float]]:
    n = draw(st.integers(1, 6))
    vec = hnp.arrays(F32, n, elements=FINITE)
    hp = {"l1_decay": draw(st.sampled_from([0.0, 1e-3])),
          "l2_decay": draw(st.sampled_from([0.0, 1e-2]))}
    return draw(NAMES), draw(vec), draw(st.lists(vec, min_size=1, max_size=6)), hp


@settings(max_examples=60, deadline=None)
@given(runs())
def test_steps_keep_dtype_shape_and_stay_finite(
        case: tuple[str, np.ndarray, list[np.ndarray], dict[str, float]]) -> None:
    name, p, grads, hp = case
    opt = make_optimizer(name, p.size, **hp)
    for g in grads:
        opt.step(p, g)
        assert p.dtype == F32 and p.shape == g.shape
        assert np.isfinite(p).all()
    assert all(v.dtype == F32 and np.isfinite(v).all()
               for v in opt.state().values() if isinstance(v, np.ndarray))


@settings(max_examples=40, deadline=None)
@given(NAMES, hnp.arrays(F32, st.integers(1, 6), elements=FINITE))
def test_zero_gradient_without_decay_is_a_no_op(name: str, p: np.ndarray) -> None:
    before = p.copy()
    make_optimizer(name, p.size).step(p, np.zeros_like(p))
    np.testing.assert_array_equal(p, before)


CONVERGING = {"sgd": {"learning_rate": 0.1}, "nesterov": {"learning_rate": 0.1},
              "adagrad": {"learning_rate": 5.0}, "adadelta": {"eps": 1e-2},
              "adam": {"learning_rate": 0.5, "lr_decay": 0.8, "lr_decay_every": 25}}


@settings(max_examples=15, deadline=None)
@given(st.data())
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_minimises_a_convex_quadratic(name: str, data: st.DataObject) -> None:
    # loss 0.5*||p - target||^2 has gradient p - target
    n = data.draw(st.integers(1, 5))
    vec = hnp.arrays(F32, n, elements=st.floats(-10, 10, width=32))
    p, target = data.draw(vec), data.draw(vec)
    opt = make_optimizer(name, n, **CONVERGING[name])
    for _ in range(300):
        opt.step(p, p - target)
    np.testing.assert_allclose(p, target, atol=1e-2)


# -- state ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_round_trip_resumes_bit_identically(name: str) -> None:
    rng = np.random.default_rng(7)
    grads = [rng.normal(size=5).astype(F32) for _ in range(12)]
    hp = {"learning_rate": 0.05, "lr_decay": 0.9, "lr_decay_every": 2, "l2_decay": 0.01}
    mul = f32(1, 1, 1, 0, 0)
    a = make_optimizer(name, 5, l2_mul=mul, **hp)
    p = rng.normal(size=5).astype(F32)
    run(a, p, grads[:6])
    saved_hp, saved = json.loads(json.dumps(a.hyperparameters())), a.state()
    b = make_optimizer(a.name, 5, l2_mul=mul, **saved_hp)
    b.load_state(saved)
    q = p.copy()
    run(a, p, grads[6:])
    run(b, q, grads[6:])
    assert p.tobytes() == q.tobytes()
    assert a.learning_rate == b.learning_rate and a.step_count == b.step_count == 12
    assert saved["step"] == 6  # state() is a copy, not a view of the live accumulators
    assert all(np.array_equal(x, y) for x, y in zip(a.state().values(), b.state().values()))


def test_state_is_a_copy() -> None:
    opt = make_optimizer("adagrad", 2)
    saved = opt.state()
    opt.step(f32(0, 0), f32(1, 1))
    np.testing.assert_array_equal(saved["grad_sq_sum"], f32(0, 0))


def test_hyperparameters_are_json_ready_and_rebuild() -> None:
    for name in OPTIMIZERS:
        opt = make_optimizer(name, 3)
        hp = opt.hyperparameters()
        assert json.loads(json.dumps(hp)) == hp
        assert make_optimizer(opt.name, 3, **hp).hyperparameters() == hp
    assert make_optimizer("nesterov", 1).hyperparameters()["nesterov"] is True
    assert make_optimizer("adadelta", 1).learning_rate == 1.0
    assert make_optimizer("sgd", 1).hyperparameters()["momentum"] == 0.9


def test_set_hyperparameters_live() -> None:
    opt = make_optimizer("sgd", 1, momentum=0.0, learning_rate=0.1)
    opt.set_hyperparameters(learning_rate=0.5, momentum=0)
    p = f32(0)
    opt.step(p, f32(1))
    close(p, -0.5)
    with pytest.raises(OptimizerError, match="momentum"):
        opt.set_hyperparameters(learning_rate=0.2, momentum=1.0)
    assert opt.learning_rate == 0.5  # nothing of a refused change is applied


# -- growth --------------------------------------------------------------------------------------

def test_grow_moves_state_and_zeroes_new_entries() -> None:
    opt = make_optimizer("adam", 3, l1_mul=f32(0.5, 0.25, 0), l2_mul=f32(2, 3, 0))
    opt.step(f32(0, 0, 0), f32(1, 2, 3))
    before = opt.state()
    index_map = np.array([0, 2, 3])
    opt.grow(index_map, 5)
    after = opt.state()
    for slot in ("moment1", "moment2"):
        old = before[slot]
        assert isinstance(old, np.ndarray)
        np.testing.assert_array_equal(after[slot], [old[0], 0, old[1], old[2], 0])
    assert after["step"] == 1 and opt.num_params == 5
    np.testing.assert_array_equal(opt.l1_mul, f32(0.5, 1, 0.25, 0, 1))
    np.testing.assert_array_equal(opt.l2_mul, f32(2, 1, 3, 0, 1))
    p = np.zeros(5, F32)
    opt.step(p, np.ones(5, F32))  # the grown optimizer steps on the grown vector
    assert np.isfinite(p).all()


@pytest.mark.parametrize("name", ["sgd", "adagrad", "adadelta"])
def test_grow_every_slot(name: str) -> None:
    opt = make_optimizer(name, 2)
    opt.step(f32(1, 1), f32(1, -1))
    before = opt.state()
    opt.grow(np.array([1, 2]), 3, l1_mul=f32(7, 8, 9))
    for slot in opt.SLOTS:
        old = before[slot]
        assert isinstance(old, np.ndarray)
        np.testing.assert_array_equal(opt.state()[slot], [0, old[0], old[1]])
    np.testing.assert_array_equal(opt.l1_mul, f32(7, 8, 9))
    np.testing.assert_array_equal(opt.l2_mul, f32(1, 1, 1))


# -- every bad input names its field -------------------------------------------------------------

def _grown(**kw: object) -> Callable[[], None]:
    return lambda: make_optimizer("sgd", 2).grow(**kw)  # type: ignore[arg-type]


def _loaded(state: dict[str, object]) -> Callable[[], None]:
    return lambda: make_optimizer("adam", 2).load_state(state)


GOOD_ADAM = {"step": 1, "moment1": np.zeros(2, F32), "moment2": np.zeros(2, F32)}
BAD: list[tuple[str, Callable[[], object]]] = [
    ("name", lambda: make_optimizer("rmsprop", 2)),
    ("name", lambda: make_optimizer(3, 2)),  # type: ignore[arg-type]
    ("num_params", lambda: make_optimizer("sgd", -1)),
    ("num_params", lambda: make_optimizer("sgd", 2.0)),  # type: ignore[arg-type]
    ("colour", lambda: make_optimizer("sgd", 2, colour=1.0)),
    ("beta1", lambda: make_optimizer("sgd", 2, beta1=0.5)),  # adam's, not sgd's
    ("learning_rate", lambda: make_optimizer("sgd", 2, learning_rate=-0.1)),
    ("learning_rate", lambda: make_optimizer("adam", 2, learning_rate=float("nan"))),
    ("learning_rate", lambda: make_optimizer("adam", 2, learning_rate=float("inf"))),
    ("learning_rate", lambda: make_optimizer("adam", 2, learning_rate="0.1")),  # type: ignore
    ("learning_rate", lambda: make_optimizer("adam", 2, learning_rate=True)),
    ("momentum", lambda: make_optimizer("sgd", 2, momentum=1.0)),
    ("momentum", lambda: make_optimizer("sgd", 2, momentum=-0.1)),
    ("nesterov", lambda: make_optimizer("sgd", 2, nesterov=1)),
    ("nesterov", lambda: make_optimizer("nesterov", 2, nesterov=False)),
    ("beta1", lambda: make_optimizer("adam", 2, beta1=1.0)),
    ("beta2", lambda: make_optimizer("adam", 2, beta2=-0.5)),
    ("eps", lambda: make_optimizer("adagrad", 2, eps=0.0)),
    ("ro", lambda: make_optimizer("adadelta", 2, ro=1.0)),
    ("l1_decay", lambda: make_optimizer("sgd", 2, l1_decay=-1e-3)),
    ("l2_decay", lambda: make_optimizer("sgd", 2, l2_decay=float("inf"))),
    ("lr_decay", lambda: make_optimizer("sgd", 2, lr_decay=0.0)),
    ("lr_decay", lambda: make_optimizer("sgd", 2, lr_decay=1.5)),
    ("lr_decay_every", lambda: make_optimizer("sgd", 2, lr_decay_every=0)),
    ("lr_decay_every", lambda: make_optimizer("sgd", 2, lr_decay_every=2.5)),
    ("lr_min", lambda: make_optimizer("sgd", 2, lr_min=-1.0)),
    ("l1_mul", lambda: make_optimizer("sgd", 2, l1_mul=f32(1, 1, 1))),
    ("l2_mul", lambda: make_optimizer("sgd", 2, l2_mul=f32(1))),
    ("l1_mul", lambda: make_optimizer("sgd", 2, l1_mul=f32(1, np.nan))),
    ("l2_mul", lambda: make_optimizer("sgd", 2, l2_mul=[1.0, 1.0])),  # type: ignore[arg-type]
    ("l2_mul", lambda: make_optimizer("sgd", 2, l2_mul=f32(1, -1))),
    ("speed", lambda: make_optimizer("sgd", 2).set_hyperparameters(speed=2)),
    ("eps", lambda: make_optimizer("adam", 2).set_hyperparameters(eps=-1.0)),
    ("params", lambda: make_optimizer("sgd", 2).step(np.zeros(2), f32(1, 1))),
    ("params", lambda: make_optimizer("sgd", 2).step(f32(1, 1, 1), f32(1, 1))),
    ("grad", lambda: make_optimizer("sgd", 2).step(f32(1, 1), f32(1))),
    ("grad", lambda: make_optimizer("sgd", 2).step(f32(1, 1), np.ones(2, int))),
    ("grad", lambda: make_optimizer("sgd", 2).step(f32(1, 1), f32(0, np.nan))),
    ("state", _loaded([1, 2])),  # type: ignore[arg-type]
    ("moment2", _loaded({"step": 1, "moment1": np.zeros(2, F32)})),
    ("extra", _loaded({**GOOD_ADAM, "extra": np.zeros(2, F32)})),
    ("step", _loaded({**GOOD_ADAM, "step": -1})),
    ("step", _loaded({**GOOD_ADAM, "step": 1.0})),
    ("moment1", _loaded({**GOOD_ADAM, "moment1": np.zeros(3, F32)})),
    ("moment1", _loaded({**GOOD_ADAM, "moment1": np.zeros(2)})),
    ("moment2", _loaded({**GOOD_ADAM, "moment2": f32(0, np.inf)})),
    ("new_size", _grown(index_map=np.array([0, 1]), new_size=1)),
    ("index_map", _grown(index_map=np.array([0, 1, 2]), new_size=4)),
    ("index_map", _grown(index_map=np.array([0.0, 1.0]), new_size=4)),
    ("index_map", _grown(index_map=np.array([0, 4]), new_size=4)),
    ("index_map", _grown(index_map=np.array([-1, 1]), new_size=4)),
    ("index_map", _grown(index_map=np.array([1, 1]), new_size=4)),
    ("l1_mul", _grown(index_map=np.array([0, 1]), new_size=3, l1_mul=f32(1, 1))),
    ("l2_mul", _grown(index_map=np.array([0, 1]), new_size=3, l2_mul=f32(1, 1, 1, 1))),
]


@pytest.mark.parametrize(("field", "call"), BAD, ids=[f"{i}-{f}" for i, (f, _) in enumerate(BAD)])
def test_bad_input_raises_naming_the_field(field: str, call: Callable[[], object]) -> None:
    with pytest.raises(OptimizerError, match=field):
        call()


def test_refused_load_grow_or_step_changes_nothing() -> None:
    opt = make_optimizer("adam", 2)
    opt.step(f32(0, 0), f32(1, 1))
    before = opt.state()
    with pytest.raises(OptimizerError):
        opt.load_state({**GOOD_ADAM, "moment2": np.zeros(3, F32)})
    with pytest.raises(OptimizerError):
        opt.grow(np.array([0, 1]), 3, l2_mul=f32(1))
    p = f32(5, 5)
    with pytest.raises(OptimizerError):
        opt.step(p, f32(1, np.inf))
    close(p, 5, 5)
    after = opt.state()
    assert opt.num_params == 2 and after["step"] == before["step"] == 1
    assert all(np.array_equal(before[k], after[k]) for k in opt.SLOTS)


def test_classes_and_names() -> None:
    assert set(OPTIMIZERS) == {"sgd", "nesterov", "adagrad", "adadelta", "adam"}
    kinds = {name: type(make_optimizer(name, 1)) for name in OPTIMIZERS}
    assert kinds == {"sgd": SGD, "nesterov": SGD, "adagrad": AdaGrad, "adadelta": Adadelta,
                     "adam": Adam}


def test_from_wire_gives_counts_and_flags_their_kinds() -> None:
    from mlitb.optim import from_wire

    out = from_wire({"lr_decay_every": 4.0, "nesterov": 0.0, "learning_rate": 0.5})
    assert out == {"lr_decay_every": 4, "nesterov": False, "learning_rate": 0.5}
    assert type(out["lr_decay_every"]) is int and type(out["nesterov"]) is bool
    with pytest.raises(OptimizerError, match="lr_decay_every: must be a whole number"):
        from_wire({"lr_decay_every": 1.5})
    with pytest.raises(OptimizerError, match="nesterov: must be 0"):
        from_wire({"nesterov": 0.5})
