"""Numeric gradient checks of every layer and of whole nets.

The engine computes in float32, so the checks use central differences along random directions
(directional derivatives), with inputs kept away from the kinks of relu, max and maxout, and compare
against the analytic gradient relative to the scale of the terms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlitb.nn import Net
from mlitb.nn._net import LAYER_CLASSES
from mlitb.nn._spec import normalize

EPS = 1e-2
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def make_layer(definition: dict[str, Any], in_shape: tuple[int, int, int], rng: np.random.Generator):
    full = normalize([{"type": "input", "out_depth": in_shape[0], "out_sy": in_shape[1],
                       "out_sx": in_shape[2]}, definition, {"type": "regression", "num_neurons": 1}])
    d = full[1]
    layer = LAYER_CLASSES[d["type"]](d, in_shape)
    params = [rng.standard_normal(s).astype(np.float32) * 0.5 for s in layer.param_shapes()]
    grads = [np.zeros(s, dtype=np.float32) for s in layer.param_shapes()]
    layer.bind(params, grads)
    return layer, params, grads


def spaced_values(rng: np.random.Generator, shape: tuple[int, ...], gap: float = 0.1) -> np.ndarray:
    """Distinct values at least ``gap`` apart and away from zero: no kink within EPS of them."""
    n = int(np.prod(shape))
    v = (np.arange(n) - n // 2) * gap + gap / 2  # odd multiples of gap/2: never 0
    return rng.permutation(v).reshape(shape).astype(np.float32)


def check_directional(f, x: np.ndarray, analytic: np.ndarray, rng: np.random.Generator,
                      trials: int = 3, rtol: float = 2e-2) -> None:
    """Compare d/dt f(x + t v) at 0 with <analytic, v> for random unit directions v."""
    for _ in range(trials):
        v = rng.standard_normal(x.shape).astype(np.float32)
        v /= max(np.linalg.norm(v), 1e-12)
        step = EPS * 0.2
        plus, minus = f(x + step * v), f(x - step * v)
        numeric = (plus - minus) / (2 * step)
        exact = float(np.dot(analytic.ravel().astype(np.float64), v.ravel().astype(np.float64)))
        scale = max(1.0, abs(exact), float(np.abs(analytic).sum()) * 1e-2)
        assert abs(numeric - exact) <= rtol * scale, (numeric, exact)


def layer_case(definition: dict[str, Any], in_shape: tuple[int, int, int], n: int, seed: int,
               training: bool = False) -> None:
    rng = np.random.default_rng(seed)
    layer, params, grads = make_layer(definition, in_shape, rng)
    x = spaced_values(rng, (in_shape[0], n, in_shape[1], in_shape[2]))
    if definition["type"] in ("sigmoid", "tanh", "lrn", "fc", "conv", "dropout"):
        x = rng.standard_normal(x.shape).astype(np.float32)
    r = None

    def f_x(xx: np.ndarray) -> float:
        if training:
            layer.rng = np.random.default_rng(seed)
        out = layer.forward(xx.astype(np.float32), training)
        return float(np.sum(out.astype(np.float64) * r))

    if training:
        layer.rng = np.random.default_rng(seed)
    out = layer.forward(x, training)
    r = rng.standard_normal(out.shape).astype(np.float32)
    dx = layer.backward(r.copy())
    assert dx.shape == x.shape and dx.dtype == np.float32
    check_directional(f_x, x, dx, rng)
    for p, g in zip(params, grads):
        saved = p.copy()

        def f_p(pp: np.ndarray, p: np.ndarray = p) -> float:
            p[...] = pp
            return f_x(x)

        check_directional(f_p, saved, g.copy(), rng)
        p[...] = saved


shapes = st.tuples(st.integers(1, 4), st.integers(1, 7), st.integers(1, 7))


@SETTINGS
@given(shape=shapes, n=st.integers(1, 3), filters=st.integers(1, 4), sx=st.integers(1, 4),
       sy=st.integers(1, 4), stride=st.integers(1, 3), pad=st.integers(0, 2),
       seed=st.integers(0, 2**31))
def test_conv_gradients(shape, n, filters, sx, sy, stride, pad, seed):
    c, h, w = shape
    if h + 2 * pad < sy or w + 2 * pad < sx:
        return
    layer_case({"type": "conv", "sx": sx, "sy": sy, "filters": filters, "stride": stride,
                "pad": pad}, shape, n, seed)


@SETTINGS
@given(shape=shapes, n=st.integers(1, 3), sx=st.integers(1, 3), stride=st.integers(1, 3),
       pad=st.integers(0, 1), seed=st.integers(0, 2**31))
def test_pool_gradients(shape, n, sx, stride, pad, seed):
    c, h, w = shape
    if h + 2 * pad < sx or w + 2 * pad < sx or pad >= sx:
        return
    layer_case({"type": "pool", "sx": sx, "stride": stride, "pad": pad}, shape, n, seed)


@SETTINGS
@given(c=st.integers(1, 3), hw=st.integers(1, 4), n=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_pool_2x2_fast_path_gradients(c, hw, n, seed):
    layer_case({"type": "pool", "sx": 2, "stride": 2}, (c, 2 * hw, 2 * hw), n, seed)


@SETTINGS
@given(shape=shapes, n=st.integers(1, 4), neurons=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_fc_gradients(shape, n, neurons, seed):
    layer_case({"type": "fc", "num_neurons": neurons}, shape, n, seed)


@SETTINGS
@given(kind=st.sampled_from(["relu", "sigmoid", "tanh"]), shape=shapes, n=st.integers(1, 3),
       seed=st.integers(0, 2**31))
def test_activation_gradients(kind, shape, n, seed):
    layer_case({"type": kind}, shape, n, seed)


@SETTINGS
@given(group=st.integers(1, 3), c=st.integers(1, 7), hw=st.integers(1, 3), n=st.integers(1, 3),
       seed=st.integers(0, 2**31))
def test_maxout_gradients(group, c, hw, n, seed):
    if c < group:
        return
    layer_case({"type": "maxout", "group_size": group}, (c, hw, hw), n, seed)


@SETTINGS
@given(p=st.floats(0.0, 0.9), training=st.booleans(), shape=shapes, n=st.integers(1, 3),
       seed=st.integers(0, 2**31))
def test_dropout_gradients(p, training, shape, n, seed):
    layer_case({"type": "dropout", "drop_prob": p}, shape, n, seed, training=training)


@SETTINGS
@given(k=st.floats(0.5, 3.0), size=st.sampled_from([1, 3, 5]), alpha=st.floats(0.0, 1.0),
       beta=st.floats(0.1, 1.0), c=st.integers(1, 6), n=st.integers(1, 2),
       seed=st.integers(0, 2**31))
def test_lrn_gradients(k, size, alpha, beta, c, n, seed):
    layer_case({"type": "lrn", "k": k, "n": size, "alpha": alpha, "beta": beta}, (c, 2, 3), n, seed)


@SETTINGS
@given(kind=st.sampled_from(["softmax", "svm", "regression"]), k=st.integers(2, 6),
       n=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_loss_gradients(kind, k, n, seed):
    rng = np.random.default_rng(seed)
    key = "num_neurons" if kind == "regression" else "num_classes"
    d = normalize([{"type": "input", "out_depth": k}, {"type": kind, key: k}])[-1]
    layer = LAYER_CLASSES[kind](d, (k, 1, 1))
    # svm's hinge has kinks where margins are 0: spaced scores keep them away from EPS.
    x = spaced_values(rng, (k, n, 1, 1), gap=0.37) if kind == "svm" else \
        rng.standard_normal((k, n, 1, 1)).astype(np.float32)
    y = rng.integers(0, k, n) if kind != "regression" else \
        rng.standard_normal((n, k)).astype(np.float32)

    def f(xx: np.ndarray) -> float:
        layer.forward(xx.astype(np.float32), True)
        return layer.loss(y)[0]

    layer.forward(x, True)
    _, dx = layer.loss(y)
    check_directional(f, x, dx.reshape(x.shape), rng)


NETS = {
    "conv-pool-softmax": [
        {"type": "input", "out_sx": 8, "out_sy": 8, "out_depth": 3},
        {"type": "conv", "sx": 3, "filters": 4, "stride": 1, "pad": 1, "activation": "tanh"},
        {"type": "pool", "sx": 2, "stride": 2},
        {"type": "conv", "sx": 3, "sy": 2, "filters": 5, "stride": 2, "pad": 1},
        {"type": "lrn", "k": 1, "n": 3, "alpha": 0.1, "beta": 0.75},
        {"type": "softmax", "num_classes": 4},
    ],
    "fc-maxout-svm": [
        {"type": "input", "out_sx": 2, "out_sy": 3, "out_depth": 2},
        {"type": "fc", "num_neurons": 6, "activation": "maxout", "group_size": 3},
        {"type": "fc", "num_neurons": 5, "activation": "sigmoid"},
        {"type": "svm", "num_classes": 3},
    ],
    "regression": [
        {"type": "input", "out_sx": 1, "out_sy": 1, "out_depth": 4},
        {"type": "fc", "num_neurons": 7, "activation": "tanh"},
        {"type": "regression", "num_neurons": 2},
    ],
}


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("n", [1, 3, 11])
def test_whole_net_gradient(name, n):
    rng = np.random.default_rng(n)
    net = Net(NETS[name], seed=n)
    x = rng.standard_normal((n, *net.input_shape)).astype(np.float32)
    if net.is_classifier:
        y = rng.integers(0, net.num_outputs, n)
    else:
        y = rng.standard_normal((n, net.num_outputs)).astype(np.float32)
    net.zero_grads()
    stats = net.accumulate_gradient(x, y, chunk=4)
    assert stats.count == n
    grads = net.grads.copy()
    base = net.params.copy()

    def f(p: np.ndarray) -> float:
        net.params[...] = p
        return net.evaluate(x, y).loss

    assert f(base) == pytest.approx(stats.loss, rel=1e-5)
    check_directional(f, base, grads, rng, trials=4)


def test_gradients_sum_over_chunks_and_calls():
    net = Net(NETS["conv-pool-softmax"], seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, *net.input_shape)).astype(np.float32)
    y = rng.integers(0, 4, 10)
    net.zero_grads()
    whole = net.accumulate_gradient(x, y, chunk=10)
    g_whole = net.grads.copy()
    net.zero_grads()
    a = net.accumulate_gradient(x[:3], y[:3], chunk=2)
    b = net.accumulate_gradient(x[3:], y[3:], chunk=4)
    np.testing.assert_allclose(net.grads, g_whole, rtol=1e-4, atol=1e-5)
    assert a.loss + b.loss == pytest.approx(whole.loss, rel=1e-5)
    assert a.correct + b.correct == whole.correct
