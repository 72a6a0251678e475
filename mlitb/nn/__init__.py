"""The numpy network engine: ConvNetJS's layers, batched, over one flat float32 parameter vector."""

from __future__ import annotations

from ._convnetjs import from_convnetjs, to_convnetjs
from ._model_file import load_any, load_model, model_from_dict, model_to_dict, save_model
from ._net import DEFAULT_CHUNK, NEW_CLASS_BIAS, BatchStats, Net, layer_table
from ._spec import LAYER_TYPES, LOSS_TYPES, desugar, normalize

__all__ = [
    "DEFAULT_CHUNK",
    "LAYER_TYPES",
    "LOSS_TYPES",
    "NEW_CLASS_BIAS",
    "BatchStats",
    "Net",
    "desugar",
    "from_convnetjs",
    "layer_table",
    "load_any",
    "load_model",
    "model_from_dict",
    "model_to_dict",
    "normalize",
    "save_model",
    "to_convnetjs",
]
