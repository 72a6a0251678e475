"""Our own model file: one small JSON object with the network spec, labels and parameters.

::

    {"format": "mlitb-model", "version": 1,
     "layers": [...],            # Net.spec(): full, explicit layer definitions
     "labels": ["cat", ...],     # one per class; [] for a regression net
     "num_params": 1234,
     "parameters": "<base64>",   # the flat parameter vector as little-endian float32
     "sha256": "<hex>"}          # of the raw (decoded) parameter bytes

Fields other than these are ignored on reading, so a research closure can embed a model and add
its own. ``layers`` is read as ``Net`` reads definitions (makeLayers shorthands work too), and the
parameters must fit the net it builds. ``load_any`` also reads ConvNetJS's ``Net.toJSON()``
format. See docs/formats.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write
from ..errors import ModelFormatError
from ._convnetjs import from_convnetjs
from ._net import Net

FORMAT = "mlitb-model"
VERSION = 1
_LE_F32 = np.dtype("<f4")


def _check_finite(params: np.ndarray, net: Net) -> None:
    """Raise, naming the first parameter that is NaN or infinite and its layer."""
    bad = np.flatnonzero(~np.isfinite(params))
    if bad.size == 0:
        return
    index, offset = int(bad[0]), 0
    for i, layer in enumerate(net.layers):
        size = sum(int(np.prod(s)) for s in layer.param_shapes())
        if index < offset + size:
            raise ModelFormatError(f"layer {i} ({layer.type}): field 'parameters' holds "
                                   f"{bad.size} value(s) that are NaN or infinite, the first at "
                                   f"index {index}")
        offset += size


def model_to_dict(net: Net) -> dict[str, Any]:
    """The model as a JSON-ready dict in our format (raises ModelFormatError if a parameter is
    NaN or infinite, since such a file could not be loaded)."""
    _check_finite(net.params, net)
    raw = net.params.astype(_LE_F32, copy=False).tobytes()
    return {
        "format": FORMAT,
        "version": VERSION,
        "layers": net.spec(),
        "labels": list(net.labels),
        "num_params": net.num_params,
        "parameters": base64.b64encode(raw).decode("ascii"),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }


def _field(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in d:
        raise ModelFormatError(f"field '{key}' is missing")
    value = d[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ModelFormatError(f"field '{key}' must be {what}, got {value!r:.60}")
    return value


def model_from_dict(d: Mapping[str, Any]) -> Net:
    """A Net from a dict in our format, every field checked (ModelFormatError names the field,
    and the layer where there is one)."""
    if not isinstance(d, Mapping):
        raise ModelFormatError(f"a model must be a JSON object, got {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise ModelFormatError(f"field 'format' must be {FORMAT!r}, got {d.get('format')!r:.60}")
    version = _field(d, "version", int, "an integer")
    if version != VERSION:
        raise ModelFormatError(f"field 'version' is {version}; this mlitb reads version {VERSION}")
    layers = _field(d, "layers", list, "a list of layer definitions")
    labels = _field(d, "labels", list, "a list of strings")
    num_params = _field(d, "num_params", int, "an integer")
    text = _field(d, "parameters", str, "a base64 string")
    digest = _field(d, "sha256", str, "a hex string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ModelFormatError("field 'parameters' is not valid base64") from None
    if len(raw) != 4 * num_params:
        raise ModelFormatError(f"field 'parameters' holds {len(raw)} bytes, but 'num_params' "
                               f"{num_params} needs {4 * num_params}")
    if hashlib.sha256(raw).hexdigest() != digest.lower():
        raise ModelFormatError("field 'sha256' does not match the parameters")
    net = Net(layers, labels=labels or None)
    if net.is_classifier and not labels:
        raise ModelFormatError(f"field 'labels' must hold {net.num_outputs} class labels")
    if net.num_params != num_params:
        raise ModelFormatError(f"field 'num_params' is {num_params}, but the layers have "
                               f"{net.num_params} parameters")
    params = np.frombuffer(raw, dtype=_LE_F32).astype(np.float32)  # a fresh, writeable copy
    _check_finite(params, net)
    net.params = params
    return net


def save_model(net: Net, path: str | os.PathLike[str]) -> None:
    """Write the model to ``path`` atomically: a temporary file in the same directory, then
    ``os.replace``, so readers see the old file or the new one, never a part."""
    atomic_write(path, json.dumps(model_to_dict(net), indent=1))


def _read_json(path: str | os.PathLike[str]) -> Any:
    """Parsed JSON from a file; OSError (file missing, unreadable) passes through."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{os.fspath(path)}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{os.fspath(path)}: not valid JSON: {exc}") from None


def load_model(path: str | os.PathLike[str]) -> Net:
    """Read a model file in our format."""
    return model_from_dict(_read_json(path))


def load_any(source: str | os.PathLike[str] | Mapping[str, Any]) -> Net:
    """A Net from our format or ConvNetJS's, given a file path or an already parsed dict.

    A dict with a ``format`` field is ours; one with a ``layers`` field and no ``format`` is
    ConvNetJS's (its nets get the default labels "0", "1", ...).
    """
    d = source if isinstance(source, Mapping) else _read_json(source)
    if not isinstance(d, Mapping):
        raise ModelFormatError(f"a model must be a JSON object, got {type(d).__name__}")
    if "format" in d:
        return model_from_dict(d)
    if "layers" in d:
        return from_convnetjs(d)
    raise ModelFormatError("neither an mlitb model (no field 'format') nor a ConvNetJS net "
                           "(no field 'layers')")
