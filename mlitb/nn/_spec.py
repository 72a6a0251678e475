"""Layer definitions: ConvNetJS's ``makeLayers`` form, desugared and validated.

A network is described by a list of JSON objects such as ``{"type": "conv", "sx": 5, "filters": 16,
"activation": "relu"}``. ``desugar`` expands the shorthands as ConvNetJS 0.3 does (an fc layer
before softmax/svm/regression unless one of that size is there already, activation and dropout
layers after conv/fc, ``bias_pref`` 0.1 before a relu); ``normalize`` then checks every field and fills in every default, so the result is the full,
explicit definition of each layer. Errors name the layer by index and type and the field at fault.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ModelFormatError

LayerDef = dict[str, Any]

LAYER_TYPES = (
    "input", "conv", "pool", "fc", "relu", "sigmoid", "tanh", "maxout", "dropout", "lrn",
    "softmax", "svm", "regression",
)
LOSS_TYPES = ("softmax", "svm", "regression")
ACTIVATIONS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "maxout": "maxout"}

# Fields each layer type may carry after normalisation, besides "type".
_FIELDS: dict[str, tuple[str, ...]] = {
    "input": ("out_sx", "out_sy", "out_depth"),
    "conv": ("sx", "sy", "filters", "stride", "pad", "l1_decay_mul", "l2_decay_mul", "bias_pref"),
    "pool": ("sx", "sy", "stride", "pad"),
    "fc": ("num_neurons", "l1_decay_mul", "l2_decay_mul", "bias_pref"),
    "relu": (),
    "sigmoid": (),
    "tanh": (),
    "maxout": ("group_size",),
    "dropout": ("drop_prob",),
    "lrn": ("k", "n", "alpha", "beta"),
    "softmax": ("num_classes",),
    "svm": ("num_classes",),
    "regression": ("num_neurons",),
}
# Shorthand fields makeLayers reads and consumes during desugaring.
_SUGAR = ("activation", "group_size", "drop_prob")


def _where(index: int, layer_type: object) -> str:
    return f"layer {index} ({layer_type})"


def desugar(defs: Sequence[Mapping[str, Any]]) -> list[LayerDef]:
    """Expand makeLayers shorthands, as ConvNetJS 0.3's ``desugar`` does."""
    if isinstance(defs, (str, bytes)) or not isinstance(defs, Sequence):
        raise ModelFormatError("a network spec must be a list of layer definitions")
    out: list[LayerDef] = []
    for i, raw in enumerate(defs):
        if not isinstance(raw, Mapping):
            raise ModelFormatError(f"layer {i}: a layer definition must be an object, got {raw!r}")
        d = dict(raw)
        kind = d.get("type")
        if kind not in LAYER_TYPES:
            raise ModelFormatError(
                f"{_where(i, kind)}: field 'type' must be one of {', '.join(LAYER_TYPES)}"
            )
        if kind in LOSS_TYPES:
            size = d.get("num_neurons" if kind == "regression" else "num_classes")
            # One deviation from makeLayers: a loss layer that already follows an fc layer of its
            # size gets no second one (fc after fc is a redundant linear map), which makes
            # desugaring idempotent, so explicit specs such as Net.spec() rebuild the same net.
            previous = out[-1] if out else {}
            if not (previous.get("type") == "fc" and previous.get("num_neurons") == size):
                out.append({"type": "fc", "num_neurons": size})
        activation = d.pop("activation", None)  # ConvNetJS honours it on any layer type
        if kind in ("conv", "fc") and "bias_pref" not in d:
            d["bias_pref"] = 0.1 if activation == "relu" else 0.0
        group_size = d.pop("group_size", None) if kind != "maxout" else None
        drop_prob = d.pop("drop_prob", None) if kind != "dropout" else None
        out.append(d)
        if activation is not None:
            if activation not in ACTIVATIONS:
                raise ModelFormatError(
                    f"{_where(i, kind)}: field 'activation' must be one of "
                    f"{', '.join(ACTIVATIONS)}, got {activation!r}"
                )
            act: LayerDef = {"type": ACTIVATIONS[activation]}
            if activation == "maxout":
                act["group_size"] = 2 if group_size is None else group_size
            out.append(act)
        if drop_prob is not None:
            out.append({"type": "dropout", "drop_prob": drop_prob})
    return out


def _int(d: Mapping[str, Any], key: str, where: str, default: int | None = None,
         minimum: int = 1) -> int:
    value = d.get(key, default)
    if value is None:
        raise ModelFormatError(f"{where}: field '{key}' is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ModelFormatError(f"{where}: field '{key}' must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ModelFormatError(f"{where}: field '{key}' must be >= {minimum}, got {value!r}")
    return int(value)


def _float(d: Mapping[str, Any], key: str, where: str, default: float | None = None,
           lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> float:
    value = d.get(key, default)
    if value is None:
        raise ModelFormatError(f"{where}: field '{key}' is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelFormatError(f"{where}: field '{key}' must be a finite number, got {value!r}")
    v = float(value)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ModelFormatError(f"{where}: field '{key}' must be {'>' if lo_open else '>='} {lo}, "
                               f"got {value!r}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ModelFormatError(f"{where}: field '{key}' must be {'<' if hi_open else '<='} {hi}, "
                               f"got {value!r}")
    return v


def _normalize_one(i: int, d: Mapping[str, Any]) -> LayerDef:
    kind = d["type"]
    where = _where(i, kind)
    unknown = sorted(set(d) - set(_FIELDS[kind]) - {"type"} - set(_SUGAR))
    if unknown:
        raise ModelFormatError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    n: LayerDef = {"type": kind}
    if kind == "input":
        for key in ("out_sx", "out_sy", "out_depth"):
            n[key] = _int(d, key, where, default=1)
    elif kind == "conv":
        n["sx"] = _int(d, "sx", where)
        n["sy"] = _int(d, "sy", where, default=n["sx"])
        n["filters"] = _int(d, "filters", where)
        n["stride"] = _int(d, "stride", where, default=1)
        n["pad"] = _int(d, "pad", where, default=0, minimum=0)
    elif kind == "pool":
        n["sx"] = _int(d, "sx", where)
        n["sy"] = _int(d, "sy", where, default=n["sx"])
        n["stride"] = _int(d, "stride", where, default=2)
        n["pad"] = _int(d, "pad", where, default=0, minimum=0)
        if n["pad"] >= min(n["sx"], n["sy"]):  # else a window can lie wholly in the padding
            raise ModelFormatError(f"{where}: field 'pad' must be smaller than the window "
                                   f"({n['sx']}x{n['sy']}), got {n['pad']}")
    elif kind == "fc":
        n["num_neurons"] = _int(d, "num_neurons", where)
    elif kind == "maxout":
        n["group_size"] = _int(d, "group_size", where, default=2)
    elif kind == "dropout":
        n["drop_prob"] = _float(d, "drop_prob", where, default=0.5, lo=0.0, hi=1.0, hi_open=True)
    elif kind == "lrn":
        n["k"] = _float(d, "k", where, lo=0.0, lo_open=True)
        n["n"] = _int(d, "n", where)
        if n["n"] % 2 == 0:
            raise ModelFormatError(f"{where}: field 'n' must be odd, got {n['n']}")
        n["alpha"] = _float(d, "alpha", where, lo=0.0)
        n["beta"] = _float(d, "beta", where, lo=0.0)
    elif kind in ("softmax", "svm"):
        n["num_classes"] = _int(d, "num_classes", where, minimum=2)
    elif kind == "regression":
        n["num_neurons"] = _int(d, "num_neurons", where)
    if kind in ("conv", "fc"):
        n["l1_decay_mul"] = _float(d, "l1_decay_mul", where, default=0.0, lo=0.0)
        n["l2_decay_mul"] = _float(d, "l2_decay_mul", where, default=1.0, lo=0.0)
        n["bias_pref"] = _float(d, "bias_pref", where, default=0.0)
    return n


def normalize(defs: Sequence[Mapping[str, Any]]) -> list[LayerDef]:
    """Desugar, then validate every layer and fill in every default.

    The structure must be: one input layer first, one loss layer (softmax, svm or regression) last,
    neither anywhere else.
    """
    full = [_normalize_one(i, d) for i, d in enumerate(desugar(defs))]
    if not full or full[0]["type"] != "input":
        where = _where(0, full[0]["type"]) if full else "layer 0"
        raise ModelFormatError(f"{where}: the first layer must be of type 'input'")
    if full[-1]["type"] not in LOSS_TYPES:
        raise ModelFormatError(
            f"{_where(len(full) - 1, full[-1]['type'])}: the last layer must be a loss layer "
            f"({', '.join(LOSS_TYPES)})"
        )
    for i, d in enumerate(full[1:-1], start=1):
        if d["type"] == "input" or d["type"] in LOSS_TYPES:
            raise ModelFormatError(f"{_where(i, d['type'])}: may only appear "
                                   f"{'first' if d['type'] == 'input' else 'last'}")
    return full
