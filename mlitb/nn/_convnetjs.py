"""ConvNetJS 0.3's ``Net.toJSON()`` format, read and written field for field.

A ConvNetJS net is ``{"layers": [...]}``, one object per layer of the desugared net, each with its
``layer_type``, its output shape (``out_sx``, ``out_sy``, ``out_depth``) and its own fields; conv and
fc layers carry their weights as ``filters`` (a list of Vols) and ``biases`` (one Vol). A Vol is
``{"sx", "sy", "depth", "w"}`` with the value at (x, y, d) stored at ``w[((sx * y) + x) * depth + d]``
(HWC order); ConvNetJS writes ``w`` from a Float64Array, which JSON.stringify turns into an object
``{"0": .., "1": ..}``. We read that and a plain list, and write the object form.

Our engine is channel-major (CHW), so weights are transposed on the way: a conv filter is a
``Vol(sx, sy, in_depth)`` (ours: ``(in_depth, sy, sx)``) and an fc filter is a ``Vol(1, 1, n)`` over
the previous layer's output in HWC order (ours: CHW). See docs/formats.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ModelFormatError
from ._net import Net
from ._spec import LOSS_TYPES

F32 = np.float32
JSONDict = dict[str, Any]

# The fields ConvNetJS 0.3's toJSON writes for each layer_type, in its order.
_SHAPE = ("out_depth", "out_sx", "out_sy", "layer_type")
CONVNETJS_FIELDS: dict[str, tuple[str, ...]] = {
    "input": _SHAPE,
    "conv": ("sx", "sy", "stride", "in_depth", "out_depth", "out_sx", "out_sy", "layer_type",
             "l1_decay_mul", "l2_decay_mul", "pad", "filters", "biases"),
    "pool": ("sx", "sy", "stride", "in_depth", "out_depth", "out_sx", "out_sy", "layer_type",
             "pad"),
    "fc": (*_SHAPE, "num_inputs", "l1_decay_mul", "l2_decay_mul", "filters", "biases"),
    "relu": _SHAPE,
    "sigmoid": _SHAPE,
    "tanh": _SHAPE,
    "maxout": (*_SHAPE, "group_size"),
    "dropout": (*_SHAPE, "drop_prob"),
    "lrn": ("k", "n", "alpha", "beta", "out_sx", "out_sy", "out_depth", "layer_type"),
    "softmax": (*_SHAPE, "num_inputs"),
    "svm": (*_SHAPE, "num_inputs"),
    "regression": (*_SHAPE, "num_inputs"),
}
# Fields ConvNetJS's fromJSON fills in when absent (older files lack them).
_DEFAULTS: dict[str, dict[str, float]] = {
    "conv": {"l1_decay_mul": 1.0, "l2_decay_mul": 1.0, "pad": 0},
    "pool": {"pad": 0},
    "fc": {"l1_decay_mul": 1.0, "l2_decay_mul": 1.0},
}


# -- reading ------------------------------------------------------------------------------------

def _where(i: int, layer_type: object) -> str:
    return f"layer {i} ({layer_type})"


def _get(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key in d:
        return d[key]
    kind = d.get("layer_type")
    if isinstance(kind, str) and key in _DEFAULTS.get(kind, {}):
        return _DEFAULTS[kind][key]
    raise ModelFormatError(f"{where}: field '{key}' is missing")


def _int(d: Mapping[str, Any], key: str, where: str, minimum: int = 1) -> int:
    value = _get(d, key, where)
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value != int(value)):
        raise ModelFormatError(f"{where}: field '{key}' must be an integer, got {value!r}")
    if value < minimum:
        raise ModelFormatError(f"{where}: field '{key}' must be >= {minimum}, got {value!r}")
    return int(value)


def _number(d: Mapping[str, Any], key: str, where: str, minimum: float | None = None) -> float:
    value = _get(d, key, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelFormatError(f"{where}: field '{key}' must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ModelFormatError(f"{where}: field '{key}' must be >= {minimum}, got {value!r}")
    return float(value)


def _decay_muls(d: Mapping[str, Any], where: str) -> dict[str, float]:
    return {key: _number(d, key, where, minimum=0.0) for key in ("l1_decay_mul", "l2_decay_mul")}


def _layer_def(i: int, d: Mapping[str, Any]) -> JSONDict:
    """Our layer definition from one ConvNetJS layer object."""
    kind = d["layer_type"]
    where = _where(i, kind)
    if kind == "input":
        return {"type": "input", "out_sx": _int(d, "out_sx", where),
                "out_sy": _int(d, "out_sy", where), "out_depth": _int(d, "out_depth", where)}
    if kind in ("conv", "pool"):
        out: JSONDict = {"type": kind, "sx": _int(d, "sx", where), "sy": _int(d, "sy", where),
                         "stride": _int(d, "stride", where), "pad": _int(d, "pad", where, 0)}
        if kind == "conv":
            out.update(filters=_int(d, "out_depth", where), **_decay_muls(d, where))
        return out
    if kind == "fc":
        return {"type": "fc", "num_neurons": _int(d, "out_depth", where), **_decay_muls(d, where)}
    if kind == "maxout":
        return {"type": kind, "group_size": _int(d, "group_size", where)}
    if kind == "dropout":
        return {"type": kind, "drop_prob": _number(d, "drop_prob", where)}
    if kind == "lrn":
        return {"type": kind, "k": _number(d, "k", where), "n": _int(d, "n", where),
                "alpha": _number(d, "alpha", where), "beta": _number(d, "beta", where)}
    if kind in ("softmax", "svm"):
        return {"type": kind, "num_classes": _int(d, "out_depth", where, minimum=2)}
    if kind == "regression":
        return {"type": kind, "num_neurons": _int(d, "out_depth", where)}
    return {"type": kind}  # relu, sigmoid, tanh


def _vol(vol: Any, where: str, field: str, shape: tuple[int, int, int]) -> np.ndarray:
    """The values of a Vol whose (sx, sy, depth) must be ``shape``, in the Vol's own order."""
    if not isinstance(vol, Mapping):
        raise ModelFormatError(f"{where}: field '{field}' must be a Vol object, got {vol!r:.60}")
    got = tuple(vol.get(k) for k in ("sx", "sy", "depth"))
    if got != shape:
        raise ModelFormatError(f"{where}: field '{field}' must be a Vol of (sx, sy, depth) "
                               f"{shape}, got {got}")
    n = shape[0] * shape[1] * shape[2]
    w = vol.get("w")
    if isinstance(w, Mapping):  # what ConvNetJS writes: {"0": .., "1": .., ...}
        if len(w) != n or any(str(j) not in w for j in range(n)):
            raise ModelFormatError(f"{where}: field '{field}.w' must have the {n} keys "
                                   f"'0'..'{n - 1}'")
        w = [w[str(j)] for j in range(n)]
    if not isinstance(w, list) or len(w) != n:
        raise ModelFormatError(f"{where}: field '{field}.w' must hold {n} numbers")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in w):
        raise ModelFormatError(f"{where}: field '{field}.w' must hold only numbers")
    values = np.array(w, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ModelFormatError(f"{where}: field '{field}.w' holds a value that is not finite")
    return values


def _filters(d: Mapping[str, Any], where: str, count: int,
             shape: tuple[int, int, int]) -> list[np.ndarray]:
    filters = _get(d, "filters", where)
    if not isinstance(filters, list) or len(filters) != count:
        got = len(filters) if isinstance(filters, list) else type(filters).__name__
        raise ModelFormatError(f"{where}: field 'filters' must be a list of {count} Vols, "
                               f"got {got}")
    return [_vol(f, where, f"filters[{j}]", shape) for j, f in enumerate(filters)]


def _check_output_fc(defs: list[JSONDict]) -> None:
    """ConvNetJS's makeLayers puts an fc layer before the loss layer, and so does our engine unless
    one of the loss layer's size is there already; it must be, or the layers would not line up."""
    n, last = len(defs), defs[-1]
    if n < 2 or last["type"] not in LOSS_TYPES:
        return  # Net names what is wrong
    size = last["num_neurons" if last["type"] == "regression" else "num_classes"]
    where = _where(n - 1, last["type"])
    if defs[-2]["type"] != "fc":
        raise ModelFormatError(f"{where}: a loss layer must follow an fc layer, not "
                               f"{defs[-2]['type']}")
    if defs[-2]["num_neurons"] != size:
        raise ModelFormatError(f"{where}: field 'out_depth' is {size} but layer {n - 2} (fc) "
                               f"has {defs[-2]['num_neurons']} outputs")


def _check(d: Mapping[str, Any], key: str, where: str, expected: int) -> None:
    value = _int(d, key, where, minimum=0)
    if value != expected:
        raise ModelFormatError(f"{where}: field '{key}' is {value} but the net computes {expected}")


def _layer_params(i: int, d: Mapping[str, Any], ours: Mapping[str, Any],
                  net: Net) -> list[np.ndarray]:
    """Check one layer's derived fields against the shapes our engine computes, and return its
    parameters in our layout."""
    kind = d["layer_type"]
    where = _where(i, kind)
    layer = net.layers[i]
    c_in, h_in, w_in = layer.in_shape
    c, h, w = layer.out_shape
    for key, value in (("out_depth", c), ("out_sx", w), ("out_sy", h)):
        _check(d, key, where, value)
    if kind in ("conv", "pool"):
        _check(d, "in_depth", where, c_in)
    if kind in ("fc", *LOSS_TYPES):
        _check(d, "num_inputs", where, c_in * h_in * w_in)
    if kind not in ("conv", "fc"):
        return []
    filters: list[np.ndarray]
    if kind == "conv":
        sx, sy = ours["sx"], ours["sy"]
        # Vol(sx, sy, in_depth) is (sy, sx, in_depth) row-major; ours is (in_depth, sy, sx).
        filters = [f.reshape(sy, sx, c_in).transpose(2, 0, 1)
                   for f in _filters(d, where, c, (sx, sy, c_in))]
    else:
        # Vol(1, 1, n) over the previous output in (H, W, C) order; ours is (C, H, W).
        filters = [f.reshape(h_in, w_in, c_in).transpose(2, 0, 1).ravel()
                   for f in _filters(d, where, c, (1, 1, c_in * h_in * w_in))]
    biases = _vol(_get(d, "biases", where), where, "biases", (1, 1, c))
    return [np.stack(filters).ravel(), biases]


def from_convnetjs(d: Mapping[str, Any], labels: Sequence[str] | None = None) -> Net:
    """A Net from what ConvNetJS 0.3's ``Net.toJSON()`` writes.

    Raises ModelFormatError, naming the layer (index and layer_type) and the field, when the JSON
    is malformed or inconsistent: a field missing or of the wrong type, a derived field (in_depth,
    out_sx, out_sy, out_depth, num_inputs) that differs from what the layers compute, filters or
    Vols of the wrong number or size, or weights that are not finite numbers.
    """
    if not isinstance(d, Mapping):
        raise ModelFormatError("a ConvNetJS net must be a JSON object")
    layers = d.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ModelFormatError("field 'layers' must be a non-empty list of layer objects")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Mapping):
            raise ModelFormatError(f"layer {i}: must be an object, got {layer!r:.60}")
        kind = layer.get("layer_type")
        if kind not in CONVNETJS_FIELDS:
            raise ModelFormatError(f"{_where(i, kind)}: field 'layer_type' must be one of "
                                   f"{', '.join(CONVNETJS_FIELDS)}, got {kind!r}")
    defs = [_layer_def(i, layer) for i, layer in enumerate(layers)]
    _check_output_fc(defs)
    net = Net(defs, labels=labels)
    params = [p for i, (layer, ours) in enumerate(zip(layers, defs))
              for p in _layer_params(i, layer, ours, net)]
    net.params = np.concatenate(params).astype(F32) if params else np.zeros(0, F32)
    return net


# -- writing ------------------------------------------------------------------------------------

def _vol_json(sx: int, sy: int, depth: int, values: np.ndarray) -> JSONDict:
    return {"sx": sx, "sy": sy, "depth": depth,
            "w": {str(j): float(v) for j, v in enumerate(values.ravel().tolist())}}


def to_convnetjs(net: Net) -> JSONDict:
    """What ConvNetJS 0.3's ``Net.toJSON()`` would write for this net (weights as float64 values
    of our float32 parameters, so reading it back gives bit-identical parameters).

    ConvNetJS keeps no ``bias_pref`` and no class labels; those are not written.
    """
    if not np.isfinite(net.params).all():
        raise ModelFormatError("parameters: cannot export a net whose parameters are not finite")
    out: list[JSONDict] = []
    offset = 0
    for d, layer in zip(net.spec(), net.layers):
        c_in, h_in, w_in = layer.in_shape
        c, h, w = layer.out_shape
        arrays = []
        for shape in layer.param_shapes():
            size = int(np.prod(shape))
            arrays.append(net.params[offset:offset + size].reshape(shape))
            offset += size
        kind = d["type"]
        fields: JSONDict = {
            "out_depth": c, "out_sx": w, "out_sy": h, "layer_type": kind,
            "sx": d.get("sx"), "sy": d.get("sy"), "stride": d.get("stride"), "pad": d.get("pad"),
            "in_depth": c_in, "num_inputs": c_in * h_in * w_in,
            **{k: d[k] for k in ("l1_decay_mul", "l2_decay_mul", "group_size", "drop_prob",
                                 "k", "n", "alpha", "beta") if k in d},
        }
        if kind == "conv":
            weights, biases = arrays
            fields["filters"] = [_vol_json(d["sx"], d["sy"], c_in, f.transpose(1, 2, 0))
                                 for f in weights]
            fields["biases"] = _vol_json(1, 1, c, biases)
        elif kind == "fc":
            weights, biases = arrays
            fields["filters"] = [
                _vol_json(1, 1, c_in * h_in * w_in, f.reshape(c_in, h_in, w_in).transpose(1, 2, 0))
                for f in weights]
            fields["biases"] = _vol_json(1, 1, c, biases)
        out.append({key: fields[key] for key in CONVNETJS_FIELDS[kind]})
    return {"layers": out}
