"""ConvNetJS 0.3's toJSON format: the fields it writes, the HWC <-> CHW weight layout, exact round
trips, clear errors, and cross-checks against the real ConvNetJS under node.

The cross-checks need node and the convnetjs package: ``npm ci --prefix tests/js`` installs it into
tests/js/node_modules (or point MLITB_CONVNETJS at a convnetjs package directory). Without them
those tests are skipped with the reason.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlitb.errors import ModelFormatError
from mlitb.nn import Net, from_convnetjs, load_any, to_convnetjs

JS_DIR = Path(__file__).with_name("js")

# Between them these nets hold every layer type; dropout stays at 0.5, where ConvNetJS's test-time
# scaling (by drop_prob) and ours (by 1 - drop_prob) agree.
NETS: dict[str, list[dict[str, Any]]] = {
    "softmax": [
        {"type": "input", "out_sx": 9, "out_sy": 7, "out_depth": 2},
        {"type": "conv", "sx": 3, "sy": 5, "filters": 3, "stride": 2, "pad": 2,
         "activation": "tanh", "l1_decay_mul": 0.5, "l2_decay_mul": 2.0},
        {"type": "lrn", "k": 2.0, "n": 5, "alpha": 0.3, "beta": 0.75},
        {"type": "pool", "sx": 3, "sy": 2, "stride": 2, "pad": 1},
        {"type": "conv", "sx": 1, "filters": 4, "activation": "maxout", "group_size": 2},
        {"type": "dropout", "drop_prob": 0.5},
        {"type": "fc", "num_neurons": 5, "activation": "sigmoid"},
        {"type": "softmax", "num_classes": 5},
    ],
    "svm": [
        {"type": "input", "out_sx": 4, "out_sy": 3, "out_depth": 1},
        {"type": "fc", "num_neurons": 8, "activation": "relu", "drop_prob": 0.5},
        {"type": "maxout", "group_size": 3},
        {"type": "svm", "num_classes": 3},
    ],
    "regression": [
        {"type": "input", "out_sx": 5, "out_sy": 4, "out_depth": 3},
        {"type": "pool", "sx": 2, "sy": 3, "stride": 1},
        {"type": "relu"},
        {"type": "fc", "num_neurons": 7, "activation": "tanh"},
        {"type": "regression", "num_neurons": 3},
    ],
}

# What ConvNetJS 0.3's toJSON writes, per layer_type and in its order (build/convnet.js).
SHAPE = ["out_depth", "out_sx", "out_sy", "layer_type"]
FIELDS = {
    "input": SHAPE,
    "conv": ["sx", "sy", "stride", "in_depth", "out_depth", "out_sx", "out_sy", "layer_type",
             "l1_decay_mul", "l2_decay_mul", "pad", "filters", "biases"],
    "pool": ["sx", "sy", "stride", "in_depth", "out_depth", "out_sx", "out_sy", "layer_type",
             "pad"],
    "fc": [*SHAPE, "num_inputs", "l1_decay_mul", "l2_decay_mul", "filters", "biases"],
    "relu": SHAPE, "sigmoid": SHAPE, "tanh": SHAPE,
    "maxout": [*SHAPE, "group_size"],
    "dropout": [*SHAPE, "drop_prob"],
    "lrn": ["k", "n", "alpha", "beta", "out_sx", "out_sy", "out_depth", "layer_type"],
    "softmax": [*SHAPE, "num_inputs"], "svm": [*SHAPE, "num_inputs"],
    "regression": [*SHAPE, "num_inputs"],
}


def make_net(defs: list[dict[str, Any]], seed: int = 0) -> Net:
    net = Net(defs, seed=seed)
    net.params = np.random.default_rng(seed).normal(0, 0.5, net.num_params).astype(np.float32)
    return net


def inputs(net: Net, n: int = 4, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *net.input_shape)).astype(np.float32)


def vols(x: np.ndarray) -> list[dict[str, Any]]:
    """Input samples (N, C, H, W) as ConvNetJS Vols, values in (H, W, C) order."""
    return [{"sx": s.shape[2], "sy": s.shape[1], "depth": s.shape[0],
             "w": s.transpose(1, 2, 0).ravel().tolist()} for s in x]


def without_bias_pref(spec: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if k != "bias_pref"} for d in spec]


def through_json(d: Any) -> Any:
    return json.loads(json.dumps(d))


def assert_same_net(a: Net, b: Net) -> None:
    assert without_bias_pref(b.spec()) == without_bias_pref(a.spec())
    assert np.array_equal(b.params.view(np.uint32), a.params.view(np.uint32))  # bit for bit
    x = inputs(a)
    assert np.array_equal(b.predict(x), a.predict(x))
    assert all(np.array_equal(p, q) for p, q in zip(a.decay_multipliers(), b.decay_multipliers()))


# -- what we write --------------------------------------------------------------------------

@pytest.mark.parametrize("name", NETS)
def test_writes_the_fields_convnetjs_writes(name: str) -> None:
    net = make_net(NETS[name])
    d = to_convnetjs(net)
    assert list(d) == ["layers"]
    assert [layer["layer_type"] for layer in d["layers"]] == [s["type"] for s in net.spec()]
    for layer in d["layers"]:
        assert list(layer) == FIELDS[layer["layer_type"]]
        for vol in [*layer.get("filters", []), *([layer["biases"]] if "biases" in layer else [])]:
            assert list(vol) == ["sx", "sy", "depth", "w"]
            n = vol["sx"] * vol["sy"] * vol["depth"]
            assert list(vol["w"]) == [str(i) for i in range(n)]  # Float64Array as JSON: an object


def test_conv_filter_layout() -> None:
    net = Net([{"type": "input", "out_sx": 3, "out_sy": 3, "out_depth": 2},
               {"type": "conv", "sx": 3, "sy": 2, "filters": 2},
               {"type": "regression", "num_neurons": 1}])
    w = net.params[:2 * 2 * 2 * 3].reshape(2, 2, 2, 3)  # ours: (filter, depth, y, x)
    w[...] = np.arange(w.size).reshape(w.shape)
    net.params[24:26] = [100, 200]
    conv = to_convnetjs(net)["layers"][1]
    for f in range(2):
        vol = conv["filters"][f]
        assert (vol["sx"], vol["sy"], vol["depth"]) == (3, 2, 2)
        for y in range(2):
            for x in range(3):
                for d in range(2):  # ConvNetJS's Vol index: ((sx * y) + x) * depth + d
                    assert vol["w"][str(((3 * y) + x) * 2 + d)] == w[f, d, y, x]
    assert conv["biases"]["w"] == {"0": 100.0, "1": 200.0}
    assert_same_net(net, from_convnetjs(through_json(to_convnetjs(net))))


def test_fc_filter_layout() -> None:
    net = Net([{"type": "input", "out_sx": 3, "out_sy": 2, "out_depth": 2},
               {"type": "fc", "num_neurons": 2},
               {"type": "regression", "num_neurons": 2}])
    w = net.params[:2 * 12].reshape(2, 12)  # ours: inputs in (C, H, W) order
    w[...] = np.arange(w.size).reshape(w.shape)
    fc = to_convnetjs(net)["layers"][1]
    assert fc["num_inputs"] == 12
    for f in range(2):
        vol = fc["filters"][f]
        assert (vol["sx"], vol["sy"], vol["depth"]) == (1, 1, 12)
        for c in range(2):
            for y in range(2):
                for x in range(3):  # the input Vol's index: ((sx * y) + x) * depth + c
                    assert vol["w"][str(((3 * y) + x) * 2 + c)] == w[f, (c * 2 + y) * 3 + x]
    assert_same_net(net, from_convnetjs(through_json(to_convnetjs(net))))


def test_refuses_non_finite_parameters() -> None:
    net = make_net(NETS["svm"])
    net.params[5] = np.inf
    with pytest.raises(ModelFormatError, match="parameters"):
        to_convnetjs(net)


# -- reading --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NETS)
def test_round_trip_is_exact(name: str) -> None:
    net = make_net(NETS[name])
    assert_same_net(net, from_convnetjs(through_json(to_convnetjs(net))))


def test_reads_w_as_a_plain_list() -> None:
    net = make_net(NETS["softmax"])
    d = through_json(to_convnetjs(net))
    for layer in d["layers"]:
        for vol in [*layer.get("filters", []), *([layer["biases"]] if "biases" in layer else [])]:
            vol["w"] = [vol["w"][str(i)] for i in range(len(vol["w"]))]
    assert_same_net(net, from_convnetjs(d))


def test_missing_optional_fields_take_convnetjs_defaults() -> None:
    net = make_net(NETS["regression"])
    d = through_json(to_convnetjs(net))
    for layer in d["layers"]:
        for key in ("l1_decay_mul", "l2_decay_mul", "pad"):  # as ConvNetJS's fromJSON
            layer.pop(key, None)
    spec = from_convnetjs(d).spec()
    assert spec[1]["pad"] == 0
    assert all(s["l1_decay_mul"] == s["l2_decay_mul"] == 1.0 for s in spec if s["type"] == "fc")


def test_labels() -> None:
    d = to_convnetjs(make_net(NETS["svm"]))
    assert from_convnetjs(d).labels == ["0", "1", "2"]
    assert from_convnetjs(d, labels=["a", "b", "c"]).labels == ["a", "b", "c"]
    with pytest.raises(ModelFormatError, match="labels"):
        from_convnetjs(d, labels=["a", "b"])


def test_load_any_reads_convnetjs(tmp_path: Path) -> None:
    net = make_net(NETS["softmax"])
    path = tmp_path / "convnetjs.json"
    path.write_text(json.dumps(to_convnetjs(net)))
    assert_same_net(net, load_any(path))
    assert_same_net(net, load_any(to_convnetjs(net)))


@st.composite
def architectures(draw: st.DrawFn, drop_prob: st.SearchStrategy[float]) -> list[dict[str, Any]]:
    """Small valid makeLayers lists, with ConvNetJS's shorthands (activation, drop_prob on conv
    and fc) and every layer type; shapes are tracked so that each layer fits."""
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    defs: list[dict[str, Any]] = [{"type": "input", "out_sx": w, "out_sy": h, "out_depth": c}]
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["conv", "fc", "pool", "lrn", "relu", "sigmoid", "tanh",
                                     "maxout", "dropout"]))
        d: dict[str, Any] = {"type": kind}
        if kind in ("conv", "pool"):
            # pad < filter size: ConvNetJS never lets a pooling window lie wholly in the padding
            sx, sy = draw(st.integers(1, min(3, w))), draw(st.integers(1, min(3, h)))
            stride, pad = draw(st.integers(1, 2)), draw(st.integers(0, min(sx, sy) - 1))
            d.update(sx=sx, sy=sy, stride=stride, pad=pad)
            w, h = (w + 2 * pad - sx) // stride + 1, (h + 2 * pad - sy) // stride + 1
            if kind == "conv":
                c = d["filters"] = draw(st.integers(1, 4))
        elif kind == "fc":
            c, h, w = draw(st.integers(1, 6)), 1, 1
            d["num_neurons"] = c
        if kind in ("conv", "fc"):
            act = draw(st.sampled_from([None, "relu", "sigmoid", "tanh", "maxout"]))
            if act is not None:
                d["activation"] = act
            if act == "maxout":
                d["group_size"] = draw(st.integers(1, c))
                c //= d["group_size"]
            if draw(st.booleans()):
                d["drop_prob"] = draw(drop_prob)
        elif kind == "maxout":
            d["group_size"] = draw(st.integers(1, c))
            c //= d["group_size"]
        elif kind == "dropout":
            d["drop_prob"] = draw(drop_prob)
        elif kind == "lrn":
            d.update(k=draw(st.floats(0.5, 2.0)), n=draw(st.sampled_from([1, 3, 5])),
                     alpha=draw(st.floats(0.0, 1.0)), beta=draw(st.floats(0.5, 1.0)))
        defs.append(d)
    loss = draw(st.sampled_from(["softmax", "svm", "regression"]))
    size = draw(st.integers(2, 4))
    if defs[-1] == {"type": "fc", "num_neurons": size}:
        size += 1  # makeLayers would add a second fc of that size here, our engine does not
    defs.append({"type": loss, ("num_neurons" if loss == "regression" else "num_classes"): size})
    return defs


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(defs=architectures(st.floats(0.0, 0.9)), seed=st.integers(0, 2**32 - 1))
def test_random_architectures_round_trip(defs: list[dict[str, Any]], seed: int) -> None:
    net = make_net(defs, seed)
    assert_same_net(net, from_convnetjs(through_json(to_convnetjs(net))))


# -- malformed input ------------------------------------------------------------------------

def _layer(index: int, **fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["layers"][index].update(fields)


def _one_class(d: dict[str, Any]) -> None:
    d["layers"][10]["out_depth"] = d["layers"][11]["out_depth"] = 1


def _drop(index: int, key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["layers"][index].pop(key)


def _vol(index: int, path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set a field of a filter or bias Vol: path such as 'filters.0.depth' or 'biases.w.1'."""
    def mutate(d: dict[str, Any]) -> None:
        *parts, last = path.split(".")
        target: Any = d["layers"][index]
        for part in parts:
            target = target[int(part)] if isinstance(target, list) else target[part]
        key = int(last) if isinstance(target, list) else last
        if value is _DELETE:
            del target[key]
        else:
            target[key] = value
    return mutate


_DELETE = object()

# The softmax net desugars to: 0 input, 1 conv, 2 tanh, 3 lrn, 4 pool, 5 conv, 6 maxout,
# 7 dropout, 8 fc, 9 sigmoid, 10 fc, 11 softmax.
MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "layers missing": (lambda d: d.pop("layers"), r"field 'layers' must be a non-empty list"),
    "layers empty": (lambda d: d.update(layers=[]), r"field 'layers' must be a non-empty list"),
    "layer not an object": (lambda d: d["layers"].__setitem__(2, "tanh"),
                            r"layer 2: must be an object"),
    "layer_type missing": (_drop(2, "layer_type"), r"layer 2 \(None\): field 'layer_type'"),
    "layer_type unsupported": (_layer(2, layer_type="quadtransform"),
                               r"layer 2 \(quadtransform\): field 'layer_type' must be one of"),
    "input size missing": (_drop(0, "out_sx"), r"layer 0 \(input\): field 'out_sx' is missing"),
    "conv sx missing": (_drop(1, "sx"), r"layer 1 \(conv\): field 'sx' is missing"),
    "conv sy not int": (_layer(1, sy=2.5), r"layer 1 \(conv\): field 'sy' must be an integer"),
    "conv stride bool": (_layer(1, stride=True), r"layer 1 \(conv\): field 'stride' must be an"),
    "conv pad negative": (_layer(1, pad=-1), r"layer 1 \(conv\): field 'pad' must be >= 0"),
    "conv in_depth wrong": (_layer(1, in_depth=3),
                            r"layer 1 \(conv\): field 'in_depth' is 3 but the net computes 2"),
    "conv out_sx wrong": (_layer(1, out_sx=4), r"layer 1 \(conv\): field 'out_sx' is 4"),
    "conv decay bad": (_layer(1, l2_decay_mul="x"), r"layer 1 \(conv\): field 'l2_decay_mul'"),
    "conv decay negative": (_layer(1, l1_decay_mul=-1), r"layer 1 \(conv\): field 'l1_decay_mul'"),
    "conv filter count": (lambda d: d["layers"][1]["filters"].pop(),
                          r"layer 1 \(conv\): field 'filters' must be a list of 3 Vols, got 2"),
    "conv filters not list": (_layer(1, filters={}), r"layer 1 \(conv\): field 'filters' must be"),
    "conv filter not a Vol": (_vol(1, "filters.0", 1.5), r"field 'filters\[0\]' must be a Vol"),
    "conv filter depth": (_vol(1, "filters.2.depth", 3),
                          r"layer 1 \(conv\): field 'filters\[2\]' must be a Vol of .*\(3, 5, 2\)"),
    "conv filter key missing": (_vol(1, "filters.0.w.7", _DELETE),
                                r"layer 1 \(conv\): field 'filters\[0\].w' must have the 30 keys"),
    "conv filter w missing": (_vol(1, "filters.0.w", _DELETE),
                              r"field 'filters\[0\].w' must hold 30 numbers"),
    "conv filter w short": (_vol(1, "filters.0.w", [0.0] * 29),
                            r"field 'filters\[0\].w' must hold 30 numbers"),
    "conv filter NaN": (_vol(1, "filters.1.w.4", None),  # JSON.stringify writes NaN as null
                        r"layer 1 \(conv\): field 'filters\[1\].w' must hold only numbers"),
    "conv filter huge": (_vol(1, "filters.1.w.4", 1e309),
                         r"layer 1 \(conv\): field 'filters\[1\].w' holds a value that is not fin"),
    "conv filter string": (_vol(1, "filters.1.w.4", "0.5"), r"'filters\[1\].w' must hold only"),
    "conv biases missing": (_drop(1, "biases"), r"layer 1 \(conv\): field 'biases' is missing"),
    "conv biases size": (_vol(1, "biases.depth", 4), r"layer 1 \(conv\): field 'biases' must be"),
    "tanh out_depth wrong": (_layer(2, out_depth=2), r"layer 2 \(tanh\): field 'out_depth' is 2"),
    "lrn n even": (_layer(3, n=4), r"layer 3 \(lrn\): field 'n' must be odd"),
    "lrn k missing": (_drop(3, "k"), r"layer 3 \(lrn\): field 'k' is missing"),
    "pool in_depth wrong": (_layer(4, in_depth=1), r"layer 4 \(pool\): field 'in_depth' is 1"),
    "pool out_sy wrong": (_layer(4, out_sy=9), r"layer 4 \(pool\): field 'out_sy' is 9"),
    "pool too big": (_layer(4, sx=99), r"layer 4 \(pool\): a 99x2 pool does not fit"),
    "maxout group bad": (_layer(6, group_size="2"), r"layer 6 \(maxout\): field 'group_size'"),
    "dropout prob missing": (_drop(7, "drop_prob"), r"layer 7 \(dropout\): field 'drop_prob' is"),
    "dropout prob 1": (_layer(7, drop_prob=1), r"layer 7 \(dropout\): field 'drop_prob' must be"),
    "fc num_inputs wrong": (_layer(8, num_inputs=5), r"layer 8 \(fc\): field 'num_inputs' is 5"),
    "fc filter size": (_vol(8, "filters.0.depth", 5), r"layer 8 \(fc\): field 'filters\[0\]'"),
    "output fc out_depth": (_layer(10, out_depth=4),
                            r"layer 11 \(softmax\): field 'out_depth' is 5 but layer 10 \(fc\) has 4"),
    "softmax num_inputs": (_layer(11, num_inputs=4), r"layer 11 \(softmax\): field 'num_inputs'"),
    "softmax one class": (_one_class,
                          r"layer 11 \(softmax\): field 'out_depth' must be >= 2"),
    "loss without fc": (lambda d: d["layers"].pop(10),
                        r"layer 10 \(softmax\): a loss layer must follow an fc layer"),
    "no input layer": (lambda d: d["layers"].pop(0), r"layer 0.*must be of type 'input'"),
    "no loss layer": (lambda d: d["layers"].pop(), r"layer 10 \(fc\): the last layer must be a los"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_convnetjs_names_the_field(case: str) -> None:
    mutate, message = MALFORMED[case]
    d = through_json(to_convnetjs(make_net(NETS["softmax"])))
    mutate(d)
    with pytest.raises(ModelFormatError, match=message):
        from_convnetjs(d)


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(ModelFormatError, match="must be a JSON object"):
        from_convnetjs([])  # type: ignore[arg-type]


# -- against the real ConvNetJS -------------------------------------------------------------

def _convnetjs_command() -> list[str] | str:
    """How to run a script of tests/js with ConvNetJS, or why we cannot."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed"
    if os.environ.get("MLITB_CONVNETJS"):
        if not Path(os.environ["MLITB_CONVNETJS"]).exists():
            return f"MLITB_CONVNETJS={os.environ['MLITB_CONVNETJS']} does not exist"
        return [node]
    modules = JS_DIR / "node_modules"
    if not (modules / "convnetjs" / "package.json").is_file():
        return "ConvNetJS is not installed: run `npm ci --prefix tests/js` or set MLITB_CONVNETJS"
    return [node, str(modules)]


Runner = Callable[..., Any]


@pytest.fixture(scope="module")
def convnetjs(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    command = _convnetjs_command()
    if isinstance(command, str):
        pytest.skip(command)
    node, *modules = command
    tmp = tmp_path_factory.mktemp("convnetjs")

    def run(script: str, first: Any, second: Any) -> Any:
        paths = []
        for name, payload in (("first.json", first), ("second.json", second)):
            (tmp / name).write_text(json.dumps(payload))
            paths.append(str(tmp / name))
        done = subprocess.run([node, str(JS_DIR / script), *paths, *modules],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return run


def assert_close(ours: np.ndarray, theirs: Any) -> None:
    # ConvNetJS computes in float64, we in float32.
    np.testing.assert_allclose(ours, np.array(theirs), rtol=1e-4, atol=1e-5)


def check_export(run: Runner, net: Net) -> None:
    """Our export, loaded by ConvNetJS's fromJSON: same outputs, and it writes back our JSON."""
    x = inputs(net)
    exported = through_json(to_convnetjs(net))
    done = run("convnetjs_predict.js", exported, vols(x))
    assert_close(net.predict(x), done["outputs"])
    assert done["net"] == exported


def _no_weights(d: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(d)
    for layer in d["layers"]:
        for vol in [*layer.get("filters", []), *([layer["biases"]] if "biases" in layer else [])]:
            vol["w"] = list(vol["w"])  # the keys only
    return d


def check_import(run: Runner, defs: list[dict[str, Any]]) -> None:
    """A net built by ConvNetJS's makeLayers, imported: same structure and outputs."""
    ours = Net(defs)
    x = inputs(ours)
    built = run("convnetjs_build.js", defs, vols(x))
    net = from_convnetjs(built["net"])
    assert without_bias_pref(net.spec()) == without_bias_pref(ours.spec())  # same desugaring
    assert_close(net.predict(x), built["outputs"])
    exported = through_json(to_convnetjs(net))
    assert [list(layer) for layer in exported["layers"]] == [
        list(layer) for layer in built["net"]["layers"]]  # field for field, in order
    assert _no_weights(exported) == _no_weights(built["net"])


@pytest.mark.parametrize("name", NETS)
def test_convnetjs_runs_our_export(convnetjs: Runner, name: str) -> None:
    check_export(convnetjs, make_net(NETS[name]))


@pytest.mark.parametrize("name", NETS)
def test_we_run_convnetjs_nets(convnetjs: Runner, name: str) -> None:
    check_import(convnetjs, NETS[name])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(defs=architectures(st.just(0.5)), seed=st.integers(0, 2**32 - 1))
def test_random_architectures_match_convnetjs(convnetjs: Runner, defs: list[dict[str, Any]],
                                              seed: int) -> None:
    check_export(convnetjs, make_net(defs, seed))
    check_import(convnetjs, defs)
