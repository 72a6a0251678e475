"""Test vectors from the numpy engine, for the browser's JavaScript engine (design principle 5).

``python -m mlitb.nn._vectors [PATH]`` writes them (default ``tests/vectors/engine.json``). The
file is committed; ``tests/test_browser_engine.py`` regenerates the vectors and fails when the
committed file no longer matches the numpy engine, and runs every case in headless Chromium
through ``mlitb/browser/engine/test.html``.

One JSON object: ``cases`` (a small net per layer type and setting, and the CIFAR-10 demo net),
each with the spec as written, the normalised spec, parameters, inputs ``x`` (N, C, H, W),
targets, the dropout masks drawn (training mode), the outputs of that pass, the summed loss, the
correct count, the gradient SUMS and the gradient by the input; ``predict`` (test-mode outputs);
``bad_specs`` with Python's error message for each; ``add_class`` before and after;
``inner_steps``: a ``local`` project's inner optimizer (``mlitb.optim``) taking two steps on one
batch of a small net, per optimizer and setting, with the mean gradients stepped on and the
parameters after each step (the second step covers the state carried over); ``augmentation``:
``mlitb.training.augment`` with the offsets and flips given explicitly (numpy's random streams
are not the browser's). Float arrays are base64 of little-endian float32. Everything comes from
fixed seeds.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import CIFAR10_FAST_SPEC, CIFAR10_SPEC
from ..errors import ModelFormatError
from ..optim import from_wire, make_optimizer
from ._layers import F32, DropoutLayer
from ._net import Net

FORMAT = "mlitb-engine-vectors"
VERSION = 2
# Max abs difference relative to scale (max abs of the expected array) that a reimplementation
# must meet, and that the committed file must meet against the current numpy engine.
TOLERANCE = 1e-5
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "tests" / "vectors" / "engine.json"

DEMO_NET = CIFAR10_SPEC  # the CIFAR-10 demo net of the paper (22,466 parameters)


def _narrowed(spec: list[dict[str, Any]], filters: Sequence[int]) -> list[dict[str, Any]]:
    """``spec`` with its conv layers' filters replaced, in order: the same layers, strides and
    map sizes at a fraction of the parameters (the vectors file stays small)."""
    widths = iter(filters)
    return [dict(d, filters=next(widths)) if d["type"] == "conv" else dict(d) for d in spec]


def _inp(c: int, h: int, w: int) -> dict[str, Any]:
    return {"type": "input", "out_sx": w, "out_sy": h, "out_depth": c}


def _softmax(k: int = 3) -> dict[str, Any]:
    return {"type": "softmax", "num_classes": k}


# (name, spec, batch size, input kind, training). Input kinds: "normal" (standard normal) or
# "ties" (small integers, so max pooling and maxout see many ties). Every case records the input
# gradient, so a layer right after the input is checked through it even without parameters.
CASES: list[tuple[str, list[dict[str, Any]], int, str, bool]] = [
    ("conv 3x3 s1 p1 (input grad by convolution)",
     [_inp(3, 6, 5), {"type": "conv", "sx": 3, "filters": 4, "pad": 1}, _softmax()], 5, "normal", True),
    ("conv 3x2 s2 p1 (input grad by col2im)",
     [_inp(2, 7, 6), {"type": "conv", "sx": 3, "sy": 2, "filters": 5, "stride": 2, "pad": 1},
      _softmax()], 5, "normal", True),
    ("conv 1x1", [_inp(4, 3, 3), {"type": "conv", "sx": 1, "filters": 6}, _softmax(4)], 5,
     "normal", True),
    ("conv 2x2 pad 3 (pad > k-1: col2im)",
     [_inp(2, 4, 4), {"type": "conv", "sx": 2, "filters": 3, "pad": 3}, _softmax()], 5, "normal",
     True),
    ("conv 5x5 s1 p2 relu, then conv 3x3 s3",
     [_inp(3, 9, 9), {"type": "conv", "sx": 5, "filters": 6, "pad": 2, "activation": "relu"},
      {"type": "conv", "sx": 3, "filters": 4, "stride": 3}, _softmax()], 5, "normal", True),
    ("pool 2x2 s2 after conv",
     [_inp(2, 6, 8), {"type": "conv", "sx": 3, "filters": 4, "pad": 1}, {"type": "pool", "sx": 2},
      _softmax()], 5, "normal", True),
    ("pool 2x2 s2 ties (first maximum, x outer y inner)",
     [_inp(3, 6, 6), {"type": "pool", "sx": 2, "stride": 2}, _softmax()], 5, "ties", True),
    ("pool 3x3 s2 p1 ties (overlap, padding never wins)",
     [_inp(2, 7, 6), {"type": "pool", "sx": 3, "stride": 2, "pad": 1}, _softmax()], 5, "ties",
     True),
    ("pool 3x2 s1 p1 on odd sizes",
     [_inp(2, 5, 7), {"type": "pool", "sx": 3, "sy": 2, "stride": 1, "pad": 1}, _softmax()], 5,
     "normal", True),
    ("pool 2x2 s2 on odd sizes, after conv relu",
     [_inp(2, 7, 5), {"type": "conv", "sx": 3, "filters": 3, "pad": 1, "activation": "relu"},
      {"type": "pool", "sx": 2}, _softmax()], 5, "normal", True),
    ("fc on a spatial input (C, H, W order)",
     [_inp(3, 4, 2), {"type": "fc", "num_neurons": 6}, _softmax()], 5, "normal", True),
    ("fc relu, fc sigmoid, fc tanh",
     [_inp(5, 1, 1), {"type": "fc", "num_neurons": 7, "activation": "relu"},
      {"type": "fc", "num_neurons": 6, "activation": "sigmoid"},
      {"type": "fc", "num_neurons": 5, "activation": "tanh"}, _softmax(4)], 5, "normal", True),
    ("relu right after the input", [_inp(3, 3, 3), {"type": "relu"}, _softmax()], 5, "normal",
     True),
    ("sigmoid after conv",
     [_inp(2, 4, 4), {"type": "conv", "sx": 3, "filters": 3, "pad": 1}, {"type": "sigmoid"},
      _softmax()], 5, "normal", True),
    ("tanh after conv",
     [_inp(2, 4, 4), {"type": "conv", "sx": 3, "filters": 3, "pad": 1}, {"type": "tanh"},
      _softmax()], 5, "normal", True),
    ("maxout group 2",
     [_inp(2, 3, 3), {"type": "conv", "sx": 3, "filters": 6, "pad": 1, "activation": "maxout"},
      _softmax()], 5, "normal", True),
    ("maxout group 3, leftover channel, ties",
     [_inp(7, 2, 3), {"type": "maxout", "group_size": 3}, _softmax()], 5, "ties", True),
    ("maxout shorthand with group_size on fc",
     [_inp(4, 1, 1), {"type": "fc", "num_neurons": 9, "activation": "maxout", "group_size": 3},
      _softmax()], 5, "normal", True),
    ("dropout test mode (scale 1 - p)",
     [_inp(3, 2, 2), {"type": "fc", "num_neurons": 8}, {"type": "dropout", "drop_prob": 0.3},
      _softmax()], 5, "normal", False),
    ("dropout training mode (masks replayed)",
     [_inp(3, 2, 2), {"type": "fc", "num_neurons": 8, "drop_prob": 0.4},
      {"type": "conv", "sx": 1, "filters": 4}, _softmax()], 5, "normal", True),
    ("dropout training mode after the input",
     [_inp(2, 3, 3), {"type": "dropout", "drop_prob": 0.5}, _softmax()], 5, "normal", True),
    ("lrn n=3 after conv",
     [_inp(2, 3, 3), {"type": "conv", "sx": 3, "filters": 5, "pad": 1},
      {"type": "lrn", "k": 1.0, "n": 3, "alpha": 0.5, "beta": 0.75}, _softmax()], 5, "normal",
     True),
    ("lrn n=5 right after the input",
     [_inp(7, 2, 2), {"type": "lrn", "k": 2.0, "n": 5, "alpha": 1e-1, "beta": 0.6}, _softmax()],
     5, "normal", True),
    ("svm", [_inp(3, 2, 2), {"type": "fc", "num_neurons": 6, "activation": "relu"},
             {"type": "svm", "num_classes": 4}], 5, "normal", True),
    ("regression", [_inp(2, 3, 2), {"type": "conv", "sx": 2, "filters": 3, "activation": "tanh"},
                    {"type": "regression", "num_neurons": 3}], 5, "normal", True),
    ("softmax after an explicit fc of its size (no second fc)",
     [_inp(4, 1, 1), {"type": "fc", "num_neurons": 3}, _softmax()], 5, "normal", True),
    ("decay and bias_pref fields",
     [_inp(2, 3, 3), {"type": "conv", "sx": 3, "filters": 2, "bias_pref": 0.3,
                      "l1_decay_mul": 0.5, "l2_decay_mul": 2.0},
      {"type": "fc", "num_neurons": 4, "activation": "relu"}, _softmax()], 5, "normal", True),
    ("batch of 11 (several chunks)",
     [_inp(3, 5, 5), {"type": "conv", "sx": 3, "filters": 4, "pad": 1, "activation": "relu"},
      {"type": "pool", "sx": 2}, _softmax(5)], 11, "normal", True),
    ("CIFAR-10 demo net", DEMO_NET, 4, "normal", True),
    # `mlitb demo`'s CIFAR-10 net (CIFAR10_FAST_SPEC: a 5x5 stride-2 first conv on 32x32, pools,
    # 3x3 convs), with 4, 6 and 8 filters instead of 32, 48 and 96.
    ("CIFAR-10 fast net, narrowed", _narrowed(CIFAR10_FAST_SPEC, (4, 6, 8)), 3, "normal", True),
]

# Common mistakes: Python's messages must be the JavaScript engine's too.
BAD_SPECS: list[Any] = [
    {"type": "input"},
    [],
    [_inp(1, 2, 2), "relu", _softmax()],
    [_inp(1, 2, 2), {"type": "convolution", "sx": 3}, _softmax()],
    [_inp(1, 2, 2), {"filters": 3}, _softmax()],
    [{"type": "conv", "sx": 3, "filters": 2}, _softmax()],
    [_inp(1, 4, 4), {"type": "conv", "filters": 2}, _softmax()],
    [_inp(1, 4, 4), {"type": "conv", "sx": 3, "filters": 2.5}, _softmax()],
    [_inp(1, 4, 4), {"type": "conv", "sx": 3, "filters": "2"}, _softmax()],
    [_inp(1, 4, 4), {"type": "conv", "sx": 3, "filters": 0}, _softmax()],
    [_inp(1, 4, 4), {"type": "conv", "sx": 3, "filters": 2, "pad": -1}, _softmax()],
    [_inp(1, 4, 4), {"type": "conv", "sx": 3, "filters": 2, "sxx": 3}, _softmax()],
    [_inp(1, 4, 4), {"type": "conv", "sx": 3, "filters": 2, "activation": "softplus"},
     _softmax()],
    [_inp(1, 4, 4), {"type": "conv", "sx": 5, "filters": 2}, _softmax()],
    [_inp(1, 4, 4), {"type": "pool", "sx": 2, "pad": 2}, _softmax()],
    [_inp(1, 4, 4), {"type": "dropout", "drop_prob": 1.5}, _softmax()],
    [_inp(1, 4, 4), {"type": "dropout", "drop_prob": -0.5}, _softmax()],
    [_inp(1, 4, 4), {"type": "lrn", "k": 1, "n": 4, "alpha": 1, "beta": 1}, _softmax()],
    [_inp(1, 4, 4), {"type": "lrn", "k": 0, "n": 3, "alpha": 1, "beta": 1}, _softmax()],
    [_inp(1, 4, 4), {"type": "lrn", "n": 3, "alpha": 1, "beta": 1}, _softmax()],
    [_inp(1, 4, 4), {"type": "maxout", "group_size": 2}, _softmax()],
    [_inp(1, 4, 4), {"type": "fc", "num_neurons": 3}],
    [_inp(1, 4, 4), _softmax(1)],
    [_inp(1, 4, 4), {"type": "softmax"}],
    [_inp(1, 4, 4), _softmax(), {"type": "fc", "num_neurons": 2}, _softmax()],
    [_inp(1, 4, 4), _inp(1, 4, 4), _softmax()],
    [_inp(1, 4, 4), {"type": "fc", "num_neurons": 3}, {"type": "svm", "num_classes": 3},
     {"type": "regression", "num_neurons": 2}],
    [{"type": "input", "out_sx": 0}, _softmax()],
    [{"type": "input", "out_sx": True}, _softmax()],
    [_inp(1, 4, 4), {"type": "fc", "num_neurons": None}, _softmax()],
]


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def decode(text: str) -> np.ndarray:
    """A base64 float32 array of the vectors file, as a float32 vector."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(F32)


def _inputs(rng: np.random.Generator, n: int, shape: tuple[int, int, int], kind: str) -> np.ndarray:
    if kind == "ties":
        return rng.integers(-2, 3, size=(n, *shape)).astype(F32)
    return rng.standard_normal((n, *shape)).astype(F32)


def _targets(rng: np.random.Generator, net: Net, n: int) -> np.ndarray:
    if net.is_classifier:
        return rng.integers(0, net.num_outputs, size=n)
    return rng.standard_normal((n, net.num_outputs)).astype(F32)


def run_case(net: Net, x: np.ndarray, y: np.ndarray, training: bool) -> dict[str, Any]:
    """One pass over the whole batch, backward down to the input: outputs, loss, correct count,
    gradient sums, input gradient and the dropout masks drawn (as (N, C, H, W) 1/0 arrays)."""
    net.zero_grads()
    a = x.transpose(1, 0, 2, 3)
    for layer in net._plan:
        a = layer.forward(a, training)
    out = np.array(a.T, dtype=F32, order="C")
    yy = y.astype(np.intp) if net.is_classifier else y
    loss, d = net.loss_layer.loss(yy)
    correct = int((out.argmax(axis=1) == y).sum()) if net.is_classifier else 0
    d = d.reshape(d.shape[0], d.shape[1], 1, 1)
    for layer in reversed(net._plan[:-1]):
        d = layer.backward(d)
    masks = {}
    for i, layer in enumerate(net.layers):
        if isinstance(layer, DropoutLayer) and layer.keep is not None:
            masks[i] = np.array(layer.keep.transpose(1, 0, 2, 3), dtype=F32)
    return {"out": out, "loss": float(loss), "correct": correct, "grads": net.grads.copy(),
            "dx": np.array(d.transpose(1, 0, 2, 3), dtype=F32), "masks": masks}


def make_case(index: int, name: str, spec: list[dict[str, Any]], n: int, kind: str,
              training: bool) -> dict[str, Any]:
    seed = 1000 + index
    net = Net(spec, seed=seed)
    rng = np.random.default_rng(seed)
    # Biases away from their initial bias_pref, so a mix-up of biases shows.
    for layer in net.layers:
        if layer.param_shapes():
            bias = layer.params[1]
            bias += F32(0.1) * rng.standard_normal(bias.shape).astype(F32)
    x = _inputs(rng, n, net.input_shape, kind)
    y = _targets(rng, net, n)
    r = run_case(net, x, y, training)
    return {
        "name": name,
        "spec": spec,
        "normalized": net.spec(),
        "num_params": net.num_params,
        "params": _b64(net.params),
        "n": n,
        "x": _b64(x),
        "targets": [int(t) for t in y] if net.is_classifier else _b64(y),
        "training": training,
        "masks": {str(i): _b64(m) for i, m in r["masks"].items()},
        "out": _b64(r["out"]),
        "loss": r["loss"],
        "correct": r["correct"],
        "grads": _b64(r["grads"]),
        "dx": _b64(r["dx"]),
        "predict": _b64(net.predict(x)),
    }


# Inner steps: (name, optimizer, hyperparameters as the wire carries them: every value a number,
# flags 0/1). Decay is on in most, so the per-layer multipliers (biases 0) count; the net has
# conv decay multipliers of its own. tanh, not relu: no dead units, so no mean gradient is so
# near 0 that float32 noise in it would change an adaptive step (checked in _inner_steps).
INNER_SPEC: list[dict[str, Any]] = [
    _inp(2, 3, 3),
    {"type": "conv", "sx": 2, "filters": 3, "activation": "tanh", "l1_decay_mul": 0.5,
     "l2_decay_mul": 2.0},
    {"type": "fc", "num_neurons": 4, "activation": "tanh"},
    _softmax(3),
]
INNER_OPTIMIZERS: list[tuple[str, str, dict[str, float]]] = [
    ("sgd, momentum 0.9, l1 and l2 decay", "sgd",
     {"learning_rate": 0.1, "momentum": 0.9, "l1_decay": 0.001, "l2_decay": 0.01}),
    ("sgd, no momentum", "sgd", {"learning_rate": 0.1, "momentum": 0.0, "l2_decay": 0.01}),
    ("sgd, nesterov flag 1", "sgd", {"learning_rate": 0.1, "momentum": 0.8, "nesterov": 1.0}),
    ("nesterov", "nesterov", {"learning_rate": 0.05, "momentum": 0.9, "l1_decay": 0.001}),
    ("sgd, lr decay 0.5 to lr_min 0.03", "sgd",
     {"learning_rate": 0.1, "momentum": 0.5, "lr_decay": 0.5, "lr_decay_every": 1.0,
      "lr_min": 0.03}),
    ("adagrad", "adagrad", {"learning_rate": 0.05, "eps": 1e-8, "l2_decay": 0.001}),
    ("adadelta", "adadelta", {"learning_rate": 1.0, "ro": 0.9, "eps": 1e-6, "l2_decay": 0.001}),
    ("adam", "adam",
     {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-8, "l2_decay": 0.001}),
]
INNER_BATCH = 6
INNER_STEPS = 2


def _inner_steps() -> list[dict[str, Any]]:
    """Per optimizer: two inner steps of a local round on one batch, as a worker takes them
    (zero the gradients, accumulate the batch, step on the mean gradient)."""
    net = Net(INNER_SPEC, seed=14)  # a seed whose gradients pass the check below
    rng = np.random.default_rng(14)
    x = rng.standard_normal((INNER_BATCH, *net.input_shape)).astype(F32)
    y = rng.integers(0, net.num_outputs, size=INNER_BATCH)
    start = net.params.copy()
    l1, l2 = net.decay_multipliers()
    out = []
    for name, optimizer, hyperparameters in INNER_OPTIMIZERS:
        net.params = start.copy()  # adopted, not copied: steps must not move `start`
        opt = make_optimizer(optimizer, net.num_params, **from_wire(hyperparameters),
                             l1_mul=l1, l2_mul=l2)
        grads, after, losses = [], [], []
        for _ in range(INNER_STEPS):
            net.zero_grads()
            stats = net.accumulate_gradient(x, y)
            grad = net.grads / F32(stats.count)
            smallest = float(np.abs(grad).min())
            assert smallest > 1e-3 * float(np.abs(grad).max()), (name, smallest)
            opt.step(net.params, grad)
            grads.append(_b64(grad))
            after.append(_b64(net.params))
            losses.append(float(stats.loss))
        out.append({"name": name, "optimizer": optimizer, "hyperparameters": hyperparameters,
                    "spec": INNER_SPEC, "params": _b64(start), "n": INNER_BATCH, "x": _b64(x),
                    "targets": [int(t) for t in y], "grads": grads, "params_after": after,
                    "loss": losses})
    return out


# Augmentation: (shift, flip, dy, dx, flips) with the draws given, on a batch of 4 (2, 4, 5)
# images. An offset as large as the image leaves it all zeros.
AUGMENTATIONS: list[tuple[int, bool, list[int], list[int], list[int]]] = [
    (2, False, [-2, 0, 1, 2], [1, -2, 0, 2], [0, 0, 0, 0]),
    (0, True, [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]),
    (4, True, [4, -1, 0, -3], [-4, 2, 3, 0], [1, 1, 0, 1]),
]


class _GivenDraws:
    """Stands in for ``augment``'s generator: returns the offsets and flips given, checking that
    they are asked for in the order and range ``augment`` documents."""

    def __init__(self, shift: int, dy: list[int], dx: list[int], flips: list[int]) -> None:
        self.shift, self.offsets, self.flips = shift, [dy, dx] if shift else [], flips

    def integers(self, low: int, high: int, size: int) -> np.ndarray:
        assert (low, high) == (-self.shift, self.shift + 1) and self.offsets
        values = np.array(self.offsets.pop(0))
        assert values.size == size and np.abs(values).max(initial=0) <= self.shift
        return values

    def random(self, size: int) -> np.ndarray:
        assert not self.offsets and len(self.flips) == size  # the shifts come first
        return np.where(np.array(self.flips) == 1, 0.25, 0.75)


def _augmentations() -> list[dict[str, Any]]:
    from ..training import augment

    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 2, 4, 5)).astype(F32)
    out = []
    for shift, flip, dy, dx, flips in AUGMENTATIONS:
        draws = _GivenDraws(shift, dy, dx, flips)
        result = augment(x, draws, shift=shift, flip=flip)  # type: ignore[arg-type]
        out.append({"shape": list(x.shape[1:]), "n": x.shape[0], "x": _b64(x), "shift": shift,
                    "flip": flip, "dy": dy, "dx": dx, "flips": flips, "out": _b64(result)})
    return out


def _bad_spec(spec: Any) -> dict[str, Any]:
    try:
        Net(spec)
    except ModelFormatError as exc:
        return {"spec": spec, "error": str(exc)}
    raise AssertionError(f"spec {spec!r} was accepted")


def _add_class() -> dict[str, Any]:
    spec = [_inp(2, 4, 4), {"type": "conv", "sx": 3, "filters": 2, "activation": "relu"},
            {"type": "pool", "sx": 2, "stride": 1}, _softmax(3)]
    net = Net(spec, seed=7, labels=["cat", "dog", "owl"])
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, *net.input_shape)).astype(F32)
    before, predict_before = net.params.copy(), net.predict(x)
    index_map = net.add_class("emu")
    return {"spec": spec, "labels": ["cat", "dog", "owl"], "label": "emu",
            "params": _b64(before), "x": _b64(x), "predict": _b64(predict_before),
            "params_after": _b64(net.params), "index_map": [int(i) for i in index_map],
            "predict_after": _b64(net.predict(x)), "normalized_after": net.spec()}


def generate() -> dict[str, Any]:
    """The vectors, as the JSON object that is written to the file."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "generator": "python -m mlitb.nn._vectors",
        "tolerance": TOLERANCE,
        "cases": [make_case(i, *case) for i, case in enumerate(CASES)],
        "bad_specs": [_bad_spec(s) for s in BAD_SPECS],
        "add_class": _add_class(),
        "inner_steps": _inner_steps(),
        "augmentation": _augmentations(),
    }


def dumps(vectors: Mapping[str, Any]) -> str:
    """The file's text: one field per line, and one item of each list per line, so diffs stay
    readable."""
    lines = ["{"]
    keys = list(vectors)
    for i, key in enumerate(keys):
        value, end = vectors[key], "," if i < len(keys) - 1 else ""
        if isinstance(value, list) and value:
            items: Sequence[Any] = value
            lines.append(f" {json.dumps(key)}: [")
            lines += ["  " + json.dumps(item) + ("," if j < len(items) - 1 else "")
                      for j, item in enumerate(items)]
            lines.append(" ]" + end)
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}{end}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(args[0]) if args else DEFAULT_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(generate()), encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
