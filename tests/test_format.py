"""Our JSON model format: exact round trips, atomic saving, and a clear error for every malformed
input."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlitb.errors import ModelFormatError
from mlitb.nn import Net, load_any, load_model, model_from_dict, model_to_dict, save_model

# Between them, these nets hold every layer type (conv with stride, pad and a non-square filter).
NETS: dict[str, list[dict[str, Any]]] = {
    "softmax": [
        {"type": "input", "out_sx": 8, "out_sy": 5, "out_depth": 3},
        {"type": "conv", "sx": 3, "sy": 2, "filters": 4, "stride": 2, "pad": 1,
         "activation": "relu"},
        {"type": "pool", "sx": 2, "stride": 1},
        {"type": "lrn", "k": 1.0, "n": 3, "alpha": 0.1, "beta": 0.75},
        {"type": "fc", "num_neurons": 6, "activation": "maxout", "group_size": 2,
         "drop_prob": 0.5},
        {"type": "tanh"},
        {"type": "softmax", "num_classes": 3},
    ],
    "svm": [
        {"type": "input", "out_sx": 6, "out_sy": 5, "out_depth": 2},
        {"type": "conv", "sx": 2, "sy": 3, "filters": 4, "activation": "maxout",
         "l1_decay_mul": 0.5, "l2_decay_mul": 2.0},
        {"type": "sigmoid"},
        {"type": "pool", "sx": 2, "stride": 2, "pad": 1},
        {"type": "fc", "num_neurons": 4, "activation": "relu"},
        {"type": "dropout", "drop_prob": 0.5},
        {"type": "svm", "num_classes": 4},
    ],
    "regression": [
        {"type": "input", "out_sx": 1, "out_sy": 1, "out_depth": 5},
        {"type": "fc", "num_neurons": 8, "activation": "tanh"},
        {"type": "maxout", "group_size": 3},
        {"type": "fc", "num_neurons": 3, "activation": "sigmoid"},
        {"type": "regression", "num_neurons": 2},
    ],
}


def make_net(name: str, seed: int = 0) -> Net:
    k = Net(NETS[name]).num_outputs
    labels = None if name == "regression" else [f"class {i}" for i in range(k)]
    net = Net(NETS[name], seed=seed, labels=labels)
    # Random biases too, so that every parameter has a value of its own.
    net.params = np.random.default_rng(seed).normal(0, 0.5, net.num_params).astype(np.float32)
    return net


def inputs(net: Net, n: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *net.input_shape)).astype(np.float32)


def assert_same_net(a: Net, b: Net) -> None:
    assert b.spec() == a.spec()
    assert b.labels == a.labels
    assert b.params.dtype == np.float32
    assert np.array_equal(b.params.view(np.uint32), a.params.view(np.uint32))  # bit for bit
    x = inputs(a)
    assert np.array_equal(b.predict(x), a.predict(x))
    assert all(np.array_equal(p, q) for p, q in zip(a.decay_multipliers(), b.decay_multipliers()))


def through_json(d: dict[str, Any]) -> Any:
    return json.loads(json.dumps(d))


# -- round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", NETS)
def test_round_trip_is_exact(name: str) -> None:
    net = make_net(name)
    d = model_to_dict(net)
    assert d["format"] == "mlitb-model" and d["version"] == 1
    assert d["num_params"] == net.num_params
    raw = base64.b64decode(d["parameters"])
    assert raw == net.params.astype("<f4").tobytes()
    assert d["sha256"] == hashlib.sha256(raw).hexdigest()
    assert_same_net(net, model_from_dict(through_json(d)))


def test_dict_is_plain_json() -> None:
    d = model_to_dict(make_net("softmax"))
    assert set(d) == {"format", "version", "layers", "labels", "num_params", "parameters",
                      "sha256"}
    assert json.loads(json.dumps(d, allow_nan=False)) == d


def test_loaded_params_are_independent_of_the_source() -> None:
    net = make_net("regression")
    d = model_to_dict(net)
    a, b = model_from_dict(d), model_from_dict(d)
    a.params[:] = 0
    assert np.array_equal(b.params, net.params)
    assert b.params.flags.writeable


def test_regression_net_has_no_labels() -> None:
    net = make_net("regression")
    d = model_to_dict(net)
    assert d["labels"] == []
    assert model_from_dict(d).labels == []


def test_non_default_output_fc_survives() -> None:
    # The fc before a loss layer is normally made by desugaring, with default fields; an explicit
    # one with its own decay multipliers must come back as it was.
    spec = Net(NETS["regression"]).spec()
    spec[-2].update(l1_decay_mul=0.25, l2_decay_mul=3.0, bias_pref=0.5)
    net = Net(NETS["regression"], seed=3)
    d = model_to_dict(net)
    d["layers"] = spec
    loaded = model_from_dict(d)
    assert loaded.spec() == spec
    l1, l2 = loaded.decay_multipliers()
    n_w = spec[-2]["num_neurons"] * 3
    assert np.all(l1[-n_w - 2:-2] == 0.25) and np.all(l2[-n_w - 2:-2] == 3.0)


def test_save_and_load_file(tmp_path: Path) -> None:
    net = make_net("svm")
    path = tmp_path / "model.json"
    save_model(net, path)
    assert_same_net(net, load_model(path))
    assert_same_net(net, load_any(path))
    assert_same_net(net, load_any(str(path)))
    other = make_net("svm", seed=7)
    save_model(other, path)  # replaces the file
    assert_same_net(other, load_model(path))
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_save_leaves_old_file_when_it_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.json"
    net = make_net("softmax")
    save_model(net, path)
    before = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        save_model(make_net("softmax", seed=5), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]

    net.params[3] = np.nan
    with pytest.raises(ModelFormatError, match=r"layer 1 \(conv\).*'parameters'.*NaN"):
        save_model(net, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


# -- random architectures -------------------------------------------------------------------

@st.composite
def architectures(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Small valid layer lists over every layer type, shapes tracked so that each layer fits."""
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    defs: list[dict[str, Any]] = [{"type": "input", "out_sx": w, "out_sy": h, "out_depth": c}]
    decay = st.sampled_from([0.0, 0.5, 1.0, 2.0])
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["conv", "pool", "fc", "relu", "sigmoid", "tanh", "maxout",
                                     "dropout", "lrn"]))
        d: dict[str, Any] = {"type": kind}
        if kind in ("conv", "pool"):
            sx, sy = draw(st.integers(1, min(3, w))), draw(st.integers(1, min(3, h)))
            stride, pad = draw(st.integers(1, 2)), draw(st.integers(0, min(sx, sy) - 1))
            d.update(sx=sx, sy=sy, stride=stride, pad=pad)
            w, h = (w + 2 * pad - sx) // stride + 1, (h + 2 * pad - sy) // stride + 1
            if kind == "conv":
                c = draw(st.integers(1, 4))
                d.update(filters=c, l1_decay_mul=draw(decay), l2_decay_mul=draw(decay))
        elif kind == "fc":
            c, h, w = draw(st.integers(1, 5)), 1, 1
            d.update(num_neurons=c, l1_decay_mul=draw(decay), l2_decay_mul=draw(decay))
        elif kind == "maxout":
            d["group_size"] = draw(st.integers(1, c))
            c //= d["group_size"]
        elif kind == "dropout":
            d["drop_prob"] = draw(st.floats(0.0, 0.9))
        elif kind == "lrn":
            d.update(k=draw(st.floats(0.5, 2.0)), n=draw(st.sampled_from([1, 3, 5])),
                     alpha=draw(st.floats(0.0, 1.0)), beta=draw(st.floats(0.5, 1.0)))
        defs.append(d)
    loss = draw(st.sampled_from(["softmax", "svm", "regression"]))
    size = draw(st.integers(2, 4))
    defs.append({"type": loss, ("num_neurons" if loss == "regression" else "num_classes"): size})
    return defs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(defs=architectures(), seed=st.integers(0, 2**32 - 1))
def test_random_architectures_round_trip(defs: list[dict[str, Any]], seed: int) -> None:
    net = Net(defs, seed=seed)
    net.params = np.random.default_rng(seed).normal(0, 1, net.num_params).astype(np.float32)
    assert_same_net(net, model_from_dict(through_json(model_to_dict(net))))


# -- malformed input ------------------------------------------------------------------------

def _with_params(d: dict[str, Any], params: np.ndarray) -> None:
    raw = params.astype("<f4").tobytes()
    d["parameters"] = base64.b64encode(raw).decode()
    d["sha256"] = hashlib.sha256(raw).hexdigest()


def _param(d: dict[str, Any], index: int, value: float) -> None:
    params = np.frombuffer(base64.b64decode(d["parameters"]), "<f4").copy()
    params[index] = value
    _with_params(d, params)


def _one_param_more(d: dict[str, Any]) -> None:
    d["num_params"] += 1
    _with_params(d, np.zeros(d["num_params"]))


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(key)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.__setitem__(key, value)


def _layer(index: int, **fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["layers"][index].update(fields)


# The softmax net desugars to: 0 input, 1 conv, 2 relu, 3 pool, 4 lrn, 5 fc, 6 maxout,
# 7 dropout, 8 tanh, 9 fc, 10 softmax; its conv weights come first in the parameters.
MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "format missing": (_drop("format"), r"field 'format' must be 'mlitb-model'"),
    "format wrong": (_set("format", "convnetjs"), r"field 'format'.*'convnetjs'"),
    "version newer": (_set("version", 2), r"field 'version' is 2"),
    "version string": (_set("version", "1"), r"field 'version' must be an integer"),
    "version bool": (_set("version", True), r"field 'version' must be an integer"),
    "layers missing": (_drop("layers"), r"field 'layers' is missing"),
    "layers not a list": (_set("layers", {"type": "input"}), r"field 'layers' must be a list"),
    "layer not an object": (lambda d: d["layers"].insert(1, 7),
                            r"layer 1: a layer definition must be an object"),
    "layer field wrong": (_layer(1, sx="3"), r"layer 1 \(conv\): field 'sx' must be an integer"),
    "layer type unknown": (_layer(2, type="swish"), r"layer 2 \(swish\): field 'type'"),
    "loss layer field wrong": (_layer(10, num_classes=1),
                               r"\(softmax\): field 'num_classes' must be >= 2"),
    "output fc wrong size": (_layer(9, num_neurons=4),  # the engine adds an fc of the right size
                             r"field 'num_params' is \d+, but the layers have \d+ parameters"),
    "output fc unknown field": (_layer(9, colour="red"), r"layer 9 \(fc\): unknown field"),
    "output fc bad decay": (_layer(9, l2_decay_mul="x"), r"layer 9 \(fc\): field 'l2_decay_mul'"),
    "labels missing": (_drop("labels"), r"field 'labels' is missing"),
    "labels not a list": (_set("labels", "a,b,c"), r"field 'labels' must be a list"),
    "labels too few": (_set("labels", ["a", "b"]), r"labels: need 3 strings"),
    "labels empty": (_set("labels", []), r"field 'labels' must hold 3 class labels"),
    "num_params missing": (_drop("num_params"), r"field 'num_params' is missing"),
    "num_params float": (_set("num_params", 12.0), r"field 'num_params' must be an integer"),
    "num_params wrong": (_one_param_more, r"field 'num_params' is \d+, but the layers have \d+"),
    "parameters missing": (_drop("parameters"), r"field 'parameters' is missing"),
    "parameters not a string": (_set("parameters", [1.0, 2.0]),
                                r"field 'parameters' must be a base64 string"),
    "parameters bad base64": (_set("parameters", "not base64!"),
                              r"field 'parameters' is not valid base64"),
    "parameters with junk": (lambda d: d.update(parameters="*" + d["parameters"]),
                             r"field 'parameters' is not valid base64"),
    "parameters bad padding": (_set("parameters", "AAAAA"),
                               r"field 'parameters' is not valid base64"),
    "parameters too short": (lambda d: _with_params(d, np.zeros(d["num_params"] - 1)),
                             r"field 'parameters' holds \d+ bytes, but 'num_params' \d+ needs"),
    "parameters odd bytes": (lambda d: d.update(parameters=base64.b64encode(b"abc").decode()),
                             r"field 'parameters' holds 3 bytes"),
    "sha256 missing": (_drop("sha256"), r"field 'sha256' is missing"),
    "sha256 wrong": (_set("sha256", "0" * 64), r"field 'sha256' does not match"),
    "parameter NaN": (lambda d: _param(d, 0, np.nan),
                      r"layer 1 \(conv\): field 'parameters' holds 1 value.*NaN or infinite"),
    "parameter Inf": (lambda d: _param(d, -1, -np.inf),
                      r"layer 9 \(fc\): field 'parameters' holds 1 value.*index \d+"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_model_names_the_field(case: str) -> None:
    mutate, message = MALFORMED[case]
    d = through_json(model_to_dict(make_net("softmax")))
    mutate(d)
    with pytest.raises(ModelFormatError, match=message):
        model_from_dict(d)


@pytest.mark.parametrize("value", [[], "model", 3, None])
def test_top_level_must_be_an_object(value: Any) -> None:
    with pytest.raises(ModelFormatError, match="must be a JSON object"):
        model_from_dict(value)


@pytest.mark.parametrize(("content", "message"), [
    (b"{\"format\": \"mlitb-model\",", r"model\.json: not valid JSON"),
    (b"", r"not valid JSON"),
    (b"NaN", r"must be a JSON object, got float"),
    (b"[1, 2]", r"must be a JSON object, got list"),
    (b"\xff\xfe{}", r"not UTF-8"),
])
def test_malformed_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.json"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match=message):
        load_model(path)
    with pytest.raises(ModelFormatError, match=message):
        load_any(path)


def test_load_any_tells_formats_apart() -> None:
    net = make_net("softmax")
    assert_same_net(net, load_any(model_to_dict(net)))
    with pytest.raises(ModelFormatError, match="field 'format'.*'mlitb-closure'"):
        load_any({"format": "mlitb-closure", "layers": []})
    with pytest.raises(ModelFormatError, match="neither an mlitb model.*nor a ConvNetJS net"):
        load_any({"net": {}})


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent.json")
