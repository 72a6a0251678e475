"""The numpy network engine: ConvNetJS's layers, batched, over one flat float32 parameter vector."""

from __future__ import annotations

from ._net import DEFAULT_CHUNK, NEW_CLASS_BIAS, BatchStats, Net
from ._spec import LAYER_TYPES, LOSS_TYPES, desugar, normalize

__all__ = [
    "DEFAULT_CHUNK",
    "LAYER_TYPES",
    "LOSS_TYPES",
    "NEW_CLASS_BIAS",
    "BatchStats",
    "Net",
    "desugar",
    "normalize",
]
