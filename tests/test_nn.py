"""The engine's structure: specs, shapes, the flat vectors, prediction and add_class."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlitb.datasets import CIFAR10_SPEC
from mlitb.errors import ModelFormatError
from mlitb.nn import NEW_CLASS_BIAS, Net, desugar, normalize

CIFAR = CIFAR10_SPEC
SMALL = [
    {"type": "input", "out_sx": 6, "out_sy": 6, "out_depth": 2},
    {"type": "conv", "sx": 3, "filters": 4, "pad": 1, "activation": "relu"},
    {"type": "pool", "sx": 2, "stride": 2},
    {"type": "fc", "num_neurons": 8, "activation": "tanh", "drop_prob": 0.2},
    {"type": "softmax", "num_classes": 3},
]


def test_cifar_demo_net_has_convnetjs_shapes_and_size():
    net = Net(CIFAR, seed=0)
    assert net.num_params == 22466
    assert [layer.out_shape for layer in net.layers if layer.type in ("conv", "pool")] == [
        (16, 32, 32), (16, 16, 16), (20, 16, 16), (20, 8, 8), (20, 8, 8), (20, 4, 4)]
    assert [layer.type for layer in net.layers] == [
        "input", "conv", "relu", "pool", "conv", "relu", "pool", "conv", "relu", "pool", "fc",
        "softmax"]


def test_desugar_matches_convnetjs_make_layers():
    out = desugar([
        {"type": "input", "out_sx": 1, "out_sy": 1, "out_depth": 2},
        {"type": "fc", "num_neurons": 4, "activation": "relu", "drop_prob": 0.3},
        {"type": "conv", "sx": 1, "filters": 4, "activation": "maxout", "group_size": 4},
        {"type": "fc", "num_neurons": 3, "activation": "sigmoid"},
        {"type": "svm", "num_classes": 3},
    ])
    assert out == [
        {"type": "input", "out_sx": 1, "out_sy": 1, "out_depth": 2},
        {"type": "fc", "num_neurons": 4, "bias_pref": 0.1},
        {"type": "relu"},
        {"type": "dropout", "drop_prob": 0.3},
        {"type": "conv", "sx": 1, "filters": 4, "bias_pref": 0.0},
        {"type": "maxout", "group_size": 4},
        {"type": "fc", "num_neurons": 3, "bias_pref": 0.0},
        {"type": "sigmoid"},
        {"type": "fc", "num_neurons": 3},
        {"type": "svm", "num_classes": 3},
    ]


def test_normalize_fills_every_default():
    full = normalize(SMALL)
    conv = full[1]
    assert conv == {"type": "conv", "sx": 3, "sy": 3, "filters": 4, "stride": 1, "pad": 1,
                    "l1_decay_mul": 0.0, "l2_decay_mul": 1.0, "bias_pref": 0.1}
    assert full[2] == {"type": "relu"}
    assert full[3] == {"type": "pool", "sx": 2, "sy": 2, "stride": 2, "pad": 0}
    assert Net(full).spec() == full  # explicit definitions rebuild the same net
    assert normalize(full) == full


@pytest.mark.parametrize("spec, fragment", [
    ("not a list", "must be a list"),
    ([{"type": "conv", "sx": 3, "filters": 2}], "layer 0 (conv): the first layer must be"),
    ([{"type": "input"}, {"type": "relu"}], "the last layer must be a loss layer"),
    ([{"type": "input"}, {"type": "blah"}], "layer 1 (blah): field 'type' must be one of"),
    ([{"type": "input"}, {"type": "conv", "filters": 2}, {"type": "softmax", "num_classes": 2}],
     "layer 1 (conv): field 'sx' is required"),
    ([{"type": "input"}, {"type": "conv", "sx": 0, "filters": 2},
      {"type": "softmax", "num_classes": 2}], "layer 1 (conv): field 'sx' must be >= 1"),
    ([{"type": "input"}, {"type": "conv", "sx": 1.5, "filters": 2},
      {"type": "softmax", "num_classes": 2}], "field 'sx' must be an integer"),
    ([{"type": "input"}, {"type": "fc", "num_neurons": 2, "colour": 1},
      {"type": "softmax", "num_classes": 2}], "layer 1 (fc): unknown field(s) 'colour'"),
    ([{"type": "input"}, {"type": "lrn", "k": 1, "n": 4, "alpha": 1, "beta": 1},
      {"type": "softmax", "num_classes": 2}], "layer 1 (lrn): field 'n' must be odd"),
    ([{"type": "input"}, {"type": "dropout", "drop_prob": 1.0},
      {"type": "softmax", "num_classes": 2}], "layer 1 (dropout): field 'drop_prob' must be < 1"),
    ([{"type": "input"}, {"type": "fc", "num_neurons": 2, "l2_decay_mul": float("nan")},
      {"type": "softmax", "num_classes": 2}], "field 'l2_decay_mul' must be a finite number"),
    ([{"type": "input"}, {"type": "fc", "num_neurons": 2, "activation": "swish"},
      {"type": "softmax", "num_classes": 2}], "field 'activation' must be one of"),
    ([{"type": "input", "out_sx": 4, "out_sy": 4}, {"type": "conv", "sx": 5, "filters": 2},
      {"type": "softmax", "num_classes": 2}], "layer 1 (conv): a 5x5 filter does not fit"),
    ([{"type": "input"}, {"type": "softmax", "num_classes": 2}, {"type": "relu"},
      {"type": "softmax", "num_classes": 2}], "(softmax): may only appear last"),
    ([{"type": "input", "out_depth": 3}, {"type": "maxout", "group_size": 4},
      {"type": "regression", "num_neurons": 1}], "produces no output channels"),
])
def test_bad_specs_name_layer_and_field(spec, fragment):
    with pytest.raises(ModelFormatError) as info:
        Net(spec)
    assert fragment in str(info.value)


def test_parameters_live_in_one_vector_viewed_by_layers():
    net = Net(SMALL, seed=3)
    conv = net.layers[1]
    w, b = conv.params
    assert np.shares_memory(w, net.params) and np.shares_memory(b, net.params)
    assert np.shares_memory(conv.grads[0], net.grads)
    assert net.params.dtype == np.float32 and net.params.flags.c_contiguous
    net.params[:w.size] = 7.0
    assert (w == 7.0).all()
    assert (b == 0.1).all()  # bias_pref before a relu


def test_setting_params_adopts_a_float32_vector_without_copying():
    net = Net(SMALL, seed=3)
    fresh = np.arange(net.num_params, dtype=np.float32)
    net.params = fresh
    assert net.params is fresh
    assert np.shares_memory(net.layers[1].params[0], fresh)
    doubles = np.ones(net.num_params, dtype=np.float64)
    net.params = doubles  # not adoptable: copied in
    assert net.params is fresh and (fresh == 1.0).all()
    with pytest.raises(ModelFormatError, match="expected"):
        net.params = np.zeros(3, dtype=np.float32)


def test_initialisation_follows_convnetjs():
    net = Net(CIFAR, seed=0)
    w1 = net.layers[1].params[0]
    assert abs(w1.std() - np.sqrt(1 / 75)) < 0.1 * np.sqrt(1 / 75)
    fc = net.layers[-2]
    assert abs(fc.params[0].std() - np.sqrt(1 / 320)) < 0.1 * np.sqrt(1 / 320)
    assert (fc.params[1] == 0.0).all()
    assert np.array_equal(Net(CIFAR, seed=0).params, net.params)
    assert not np.array_equal(Net(CIFAR, seed=1).params, net.params)


def test_decay_multipliers_cover_weights_not_biases():
    net = Net([{"type": "input", "out_depth": 2},
               {"type": "fc", "num_neurons": 3, "l1_decay_mul": 0.5, "l2_decay_mul": 2.0},
               {"type": "softmax", "num_classes": 2}])
    l1, l2 = net.decay_multipliers()
    assert l1.tolist() == [0.5] * 6 + [0.0] * 3 + [0.0] * 6 + [0.0] * 2
    assert l2.tolist() == [2.0] * 6 + [0.0] * 3 + [1.0] * 6 + [0.0] * 2


def test_predict_gives_probabilities_and_matches_forward():
    net = Net(SMALL, seed=1)
    x = np.random.default_rng(0).standard_normal((20, 2, 6, 6)).astype(np.float32)
    p = net.predict(x, chunk=7)
    assert p.shape == (20, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(p, net.forward(x), rtol=1e-5, atol=1e-7)


def test_dropout_is_random_in_training_and_scaled_in_test():
    net = Net([{"type": "input", "out_depth": 1000},
               {"type": "dropout", "drop_prob": 0.25},
               {"type": "regression", "num_neurons": 1000}][:2]
              + [{"type": "regression", "num_neurons": 1000}], seed=0)
    layer = net.layers[1]
    x = np.ones((1000, 1, 2, 1), dtype=np.float32)
    out = layer.forward(x, training=True)
    assert 0.2 < (out == 0).mean() < 0.3
    assert (layer.forward(x, training=False) == 0.75).all()


def test_accuracy_and_loss_counts():
    net = Net([{"type": "input", "out_depth": 2}, {"type": "softmax", "num_classes": 2}])
    fc = net.layers[1]
    fc.params[0][...] = [[1, 0], [0, 1]]
    fc.params[1][...] = 0
    x = np.array([[3, 0], [0, 3], [3, 0]], dtype=np.float32).reshape(3, 2, 1, 1)
    stats = net.evaluate(x, np.array([0, 1, 1]))
    assert stats.correct == 2 and stats.count == 3
    p = 1 / (1 + np.exp(-3.0))
    assert stats.loss == pytest.approx(-2 * np.log(p) - np.log(1 - p), rel=1e-5)


@pytest.mark.parametrize("bad_y, fragment", [
    (np.array([0, 1]), "targets must be 3"),
    (np.array([0, 1, 3]), "class indices must lie in"),
    (np.array([0.0, 1.0, 1.0]), "integer class indices"),
])
def test_bad_targets_are_refused(bad_y, fragment):
    net = Net([{"type": "input", "out_depth": 2}, {"type": "softmax", "num_classes": 3}])
    with pytest.raises(ValueError, match=fragment):
        net.accumulate_gradient(np.zeros((3, 2, 1, 1), np.float32), bad_y)
    with pytest.raises(ValueError, match="input must have shape"):
        net.predict(np.zeros((3, 3, 1, 1), np.float32))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), extra=st.integers(1, 3))
def test_add_class_keeps_old_predictions(seed, extra):
    net = Net(SMALL, seed=seed, labels=["cat", "dog", "owl"])
    x = np.random.default_rng(seed).standard_normal((16, 2, 6, 6)).astype(np.float32)
    before = net.predict(x)
    old = net.params.copy()
    for i in range(extra):
        index_map = net.add_class(f"new{i}")
        assert np.array_equal(net.params[index_map], old)
        old = net.params.copy()
    after = net.predict(x)
    assert after.shape == (16, 3 + extra)
    assert net.labels == ["cat", "dog", "owl"] + [f"new{i}" for i in range(extra)]
    assert np.array_equal(after.argmax(axis=1), before.argmax(axis=1))
    # The old classes keep their relative probabilities exactly.
    np.testing.assert_allclose(after[:, :3] / after[:, :3].sum(axis=1, keepdims=True), before,
                               rtol=1e-5, atol=1e-7)
    fc = net.layers[-2]
    assert (fc.params[0][-1] == 0).all() and fc.params[1][-1] == NEW_CLASS_BIAS


def test_add_class_then_train_the_new_class():
    net = Net(SMALL, seed=0)
    net.add_class("new")
    x = np.random.default_rng(0).standard_normal((4, 2, 6, 6)).astype(np.float32)
    net.zero_grads()
    stats = net.accumulate_gradient(x, np.array([3, 3, 0, 1]))
    assert stats.count == 4 and np.isfinite(net.grads).all()
    assert net.grads[-1] < 0  # the new class's bias is pulled up by its examples
    with pytest.raises(ModelFormatError, match="exists already"):
        net.add_class("new")


def test_labels_are_checked():
    with pytest.raises(ModelFormatError, match="need 3 strings"):
        Net(SMALL, labels=["a", "b"])
    with pytest.raises(ModelFormatError, match="distinct"):
        Net(SMALL, labels=["a", "a", "b"])


def test_activation_shorthand_works_on_any_layer_as_in_convnetjs():
    full = normalize([{"type": "input", "out_sx": 4, "out_sy": 4},
                      {"type": "pool", "sx": 2, "activation": "tanh"},
                      {"type": "softmax", "num_classes": 2}])
    assert [d["type"] for d in full] == ["input", "pool", "tanh", "fc", "softmax"]


def test_pool_padding_must_be_smaller_than_the_window():
    with pytest.raises(ModelFormatError, match=r"layer 1 \(pool\): field 'pad' must be smaller"):
        normalize([{"type": "input", "out_sx": 4, "out_sy": 4},
                   {"type": "pool", "sx": 2, "pad": 2}, {"type": "softmax", "num_classes": 2}])
