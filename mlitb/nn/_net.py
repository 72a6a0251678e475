"""The network: layers built from a spec, sharing one flat float32 parameter vector.

Public arrays are sample-major: inputs ``(N, C, H, W)`` (``C`` = the input layer's ``out_depth``),
outputs ``(N, K)``. Inside, activations are channel-major ``(C, N, H, W)`` (see ``_layers.py``).

Training code never sees layers: it calls ``accumulate_gradient(x, y)`` as often as its budget
allows, reads ``grads`` (a *sum* over every sample seen since ``zero_grads()``) and the returned
loss and accuracy counts, and sends them on. The master applies an optimizer to ``params``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ModelFormatError
from . import _spec
from ._conv import ConvLayer, PoolLayer
from ._layers import (
    F32,
    DropoutLayer,
    FullyConnectedLayer,
    InputLayer,
    Layer,
    LocalResponseNormalizationLayer,
    LossLayer,
    MaxoutLayer,
    RegressionLayer,
    ReluLayer,
    Shape,
    SigmoidLayer,
    SoftmaxLayer,
    SVMLayer,
    TanhLayer,
)

LAYER_CLASSES: dict[str, type[Layer]] = {
    cls.type: cls
    for cls in (InputLayer, ConvLayer, PoolLayer, FullyConnectedLayer, ReluLayer, SigmoidLayer,
                TanhLayer, MaxoutLayer, DropoutLayer, LocalResponseNormalizationLayer,
                SoftmaxLayer, SVMLayer, RegressionLayer)
}

# Splitting a batch into chunks of a few images keeps every layer's working set in cache, while
# each chunk pays the per-call overhead of every numpy operation once. Measured on the demo net
# (docs/performance.md), at batch 32 and 128: chunks of 8 are 2-5% faster than 16, 4 about 5%
# slower, 32 about 30% slower.
DEFAULT_CHUNK = 8
# A class added by add_class starts this improbable, so existing predictions keep their order.
NEW_CLASS_BIAS = -10.0


@dataclass(frozen=True)
class BatchStats:
    """What a batch contributed: summed loss, correct predictions and sample count."""

    loss: float
    correct: int
    count: int


class Net:
    """A feed-forward network built from makeLayers-style definitions."""

    def __init__(self, layer_defs: Sequence[Mapping[str, Any]], *, seed: int | None = None,
                 labels: Sequence[str] | None = None, params: np.ndarray | None = None) -> None:
        self.definitions = _spec.normalize(layer_defs)
        self.layers = self._build(self.definitions)
        self._plan = self._execution_order(self.layers)
        self.loss_layer: LossLayer = self.layers[-1]  # type: ignore[assignment]
        self._layout = [(layer, shape) for layer in self.layers for shape in layer.param_shapes()]
        self.num_params = sum(int(np.prod(s)) for _, s in self._layout)
        self._params = np.zeros(self.num_params, dtype=F32)
        self._grads = np.zeros(self.num_params, dtype=F32)
        self._bind()
        self.rng = np.random.default_rng(seed)
        for layer in self.layers:
            if isinstance(layer, DropoutLayer):
                layer.rng = self.rng
        if params is None:
            for layer in self.layers:
                layer.init_params(self.rng)
        else:
            self.params = params
        self.labels = self._check_labels(labels)

    # -- construction -----------------------------------------------------------------------
    @staticmethod
    def _build(defs: list[dict[str, Any]]) -> list[Layer]:
        first = defs[0]
        shape: Shape = (first["out_depth"], first["out_sy"], first["out_sx"])
        layers: list[Layer] = []
        for i, d in enumerate(defs):
            try:
                layer = LAYER_CLASSES[d["type"]](d, shape)
            except ValueError as exc:
                raise ModelFormatError(f"layer {i} ({d['type']}): {exc}") from None
            if layer.out_shape[0] < 1:
                raise ModelFormatError(f"layer {i} ({d['type']}): produces no output channels "
                                       f"from an input of depth {shape[0]}")
            layers.append(layer)
            shape = layer.out_shape
        loss = layers[-1]
        if loss.type in ("softmax", "svm") and shape[0] != defs[-1]["num_classes"]:
            raise ModelFormatError(f"layer {len(defs) - 1} ({loss.type}): field 'num_classes' "
                                   f"is {defs[-1]['num_classes']} but its input has {shape[0]}")
        if loss.type == "regression" and shape[0] != defs[-1]["num_neurons"]:
            raise ModelFormatError(f"layer {len(defs) - 1} (regression): field 'num_neurons' "
                                   f"is {defs[-1]['num_neurons']} but its input has {shape[0]}")
        return layers

    @staticmethod
    def _execution_order(layers: list[Layer]) -> list[Layer]:
        """The layers in the order they run: a relu just before a max pool runs just after it.

        The two commute: the max of relus is the relu of the max, and the cell that wins the max
        gets the gradient in both orders (or, if it is <= 0, no cell does). Pooling first leaves
        the relu a quarter of the values (demo net: 4% of a training step). With padding as wide
        as the window, a window could hold only padding: those pools keep their order.
        """
        order = list(layers)
        for i in range(len(order) - 1):
            relu, pool = order[i], order[i + 1]
            if (isinstance(relu, ReluLayer) and isinstance(pool, PoolLayer)
                    and pool.pad < min(pool.kx, pool.ky)):
                order[i], order[i + 1] = pool, relu
        return order

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A deep copy or pickle turns the layers' views of the flat vectors into separate arrays.
        self.__dict__.update(state)
        self._bind()

    def _bind(self) -> None:
        offset = 0
        per_layer: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for layer, shape in self._layout:
            size = int(np.prod(shape))
            p, g = per_layer.setdefault(id(layer), ([], []))
            p.append(self._params[offset:offset + size].reshape(shape))
            g.append(self._grads[offset:offset + size].reshape(shape))
            offset += size
        for layer in self.layers:
            layer.bind(*per_layer.get(id(layer), ([], [])))

    def _check_labels(self, labels: Sequence[str] | None) -> list[str]:
        k = self.num_outputs
        if labels is None:
            return [str(i) for i in range(k)] if self.is_classifier else []
        labels = list(labels)
        if not self.is_classifier:
            raise ModelFormatError("labels: a regression net has no class labels")
        if len(labels) != k or not all(isinstance(s, str) for s in labels):
            raise ModelFormatError(f"labels: need {k} strings, one per class, got {labels!r}")
        if len(set(labels)) != k:
            raise ModelFormatError("labels: each class needs a distinct label")
        return labels

    # -- shape facts ------------------------------------------------------------------------
    @property
    def input_shape(self) -> Shape:
        """(C, H, W) of one input sample."""
        return self.layers[0].out_shape

    @property
    def num_outputs(self) -> int:
        return self.layers[-1].out_shape[0]

    @property
    def is_classifier(self) -> bool:
        return self.loss_layer.type in ("softmax", "svm")

    def layer_table(self) -> list[dict[str, Any]]:
        """Each layer's type, output shape (C, H, W) and parameter count, in order: what
        ``closure inspect`` shows."""
        return _table(self.layers)

    # -- the flat vectors -------------------------------------------------------------------
    @property
    def params(self) -> np.ndarray:
        """All parameters, one contiguous float32 vector that the layers view (no copy)."""
        return self._params

    @params.setter
    def params(self, value: np.ndarray) -> None:
        """Adopt ``value`` without copying if it is a writeable, contiguous float32 vector of the
        right length; otherwise copy it in."""
        arr = np.asarray(value)
        if arr.shape != (self.num_params,):
            raise ModelFormatError(f"parameters: expected {self.num_params} values, "
                                   f"got shape {arr.shape}")
        if arr.dtype == F32 and arr.flags.c_contiguous and arr.flags.writeable:
            self._params = arr
            self._bind()
        else:
            np.copyto(self._params, arr, casting="same_kind")

    @property
    def grads(self) -> np.ndarray:
        """Summed gradients since ``zero_grads()``, laid out as ``params``."""
        return self._grads

    def zero_grads(self) -> None:
        self._grads.fill(0)

    def decay_multipliers(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-parameter (l1, l2) decay multipliers, laid out as ``params``."""
        l1 = np.zeros(self.num_params, dtype=F32)
        l2 = np.zeros(self.num_params, dtype=F32)
        offset = 0
        for layer in self.layers:
            for shape, (m1, m2) in zip(layer.param_shapes(), layer.decay_muls()):
                size = int(np.prod(shape))
                l1[offset:offset + size] = m1
                l2[offset:offset + size] = m2
                offset += size
        return l1, l2

    # -- computation ------------------------------------------------------------------------
    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ValueError(f"input must have shape (N, {', '.join(map(str, self.input_shape))}),"
                             f" got {x.shape}")
        return x.astype(F32, copy=False)

    def _forward_cn(self, x: np.ndarray, training: bool) -> np.ndarray:
        a = x.transpose(1, 0, 2, 3)  # (N, C, H, W) -> (C, N, H, W); the first layer copies
        for layer in self._plan:
            a = layer.forward(a, training)
        return a  # (K, N)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Outputs ``(N, K)``: class probabilities (softmax), scores (svm) or values (regression)."""
        x = self._check_input(x)
        return np.array(self._forward_cn(x, training).T, order="C")  # a copy: layers reuse arrays

    def predict(self, x: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
        """Outputs ``(N, K)`` in test mode, computed a chunk at a time (larger chunks fall out of
        the cache: 256 was 2.2x slower than 8 or 16 on the demo net)."""
        x = self._check_input(x)
        out = np.empty((x.shape[0], self.num_outputs), dtype=F32)
        for i in range(0, x.shape[0], chunk):
            out[i:i + chunk] = self._forward_cn(x[i:i + chunk], False).T
        return out

    def _check_targets(self, y: np.ndarray, n: int) -> np.ndarray:
        y = np.asarray(y)
        if self.is_classifier:
            if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"targets must be {n} integer class indices, got {y.dtype} "
                                 f"{y.shape}")
            if n and (y.min() < 0 or y.max() >= self.num_outputs):
                raise ValueError(f"class indices must lie in [0, {self.num_outputs})")
            return y.astype(np.intp, copy=False)
        if y.shape != (n, self.num_outputs):
            raise ValueError(f"targets must have shape ({n}, {self.num_outputs}), got {y.shape}")
        return y.astype(F32, copy=False)

    def accumulate_gradient(self, x: np.ndarray, y: np.ndarray, training: bool = True,
                            chunk: int = DEFAULT_CHUNK) -> BatchStats:
        """Add the gradient of the summed loss over the batch into ``grads``."""
        x = self._check_input(x)
        y = self._check_targets(y, x.shape[0])
        loss, correct = 0.0, 0
        # The backward pass runs from the loss layer down to the first layer with parameters
        # (there is one: desugaring puts an fc layer before every loss layer).
        first = next(i for i, layer in enumerate(self._plan) if layer.param_shapes())
        trained = self._plan[first:-1]
        for i in range(0, x.shape[0], chunk):
            xs, ys = x[i:i + chunk], y[i:i + chunk]
            out = self._forward_cn(xs, training)
            part, d = self.loss_layer.loss(ys)
            loss += part
            if self.is_classifier:
                correct += int((out.argmax(axis=0) == ys).sum())
            d = d.reshape(d.shape[0], d.shape[1], 1, 1)
            for layer in reversed(trained[1:]):
                d = layer.backward(d)
            # The first layer with parameters: nobody needs the gradient of its input.
            trained[0].backward_params(d)
        return BatchStats(loss=loss, correct=correct, count=int(x.shape[0]))

    def evaluate(self, x: np.ndarray, y: np.ndarray, chunk: int = DEFAULT_CHUNK) -> BatchStats:
        """Loss and correct count in test mode, without touching ``grads``."""
        x = self._check_input(x)
        y = self._check_targets(y, x.shape[0])
        loss, correct = 0.0, 0
        for i in range(0, x.shape[0], chunk):
            out = self._forward_cn(x[i:i + chunk], False)
            loss += self.loss_layer.loss(y[i:i + chunk])[0]
            if self.is_classifier:
                correct += int((out.argmax(axis=0) == y[i:i + chunk]).sum())
        return BatchStats(loss=loss, correct=correct, count=int(x.shape[0]))

    # -- growing ----------------------------------------------------------------------------
    def add_class(self, label: str | None = None) -> np.ndarray:
        """Grow the output layer by one class, keeping every existing weight.

        The new neuron has zero weights and a bias of ``NEW_CLASS_BIAS``, so before training the
        old classes keep their relative probabilities and the predicted class. Returns, for each
        old parameter, its index in the new vector, so optimizer state can follow it.
        """
        if not self.is_classifier:
            raise ModelFormatError("add_class: only softmax and svm nets have classes")
        label = str(len(self.labels)) if label is None else label
        if label in self.labels:
            raise ModelFormatError(f"add_class: label {label!r} exists already")
        fc_index = len(self.definitions) - 2
        defs = [dict(d) for d in self.definitions]
        defs[fc_index]["num_neurons"] += 1
        defs[-1]["num_classes"] += 1
        grown = Net(defs, labels=[*self.labels, label])
        new_fc = grown.layers[fc_index]
        # Every array keeps its leading entries: the output fc gains one weight row (K, in) ->
        # (K+1, in) and one bias at the end, so an old array's values start where the new one does.
        index_map = np.empty(self.num_params, dtype=np.intp)
        o = n = 0
        for (_, old_shape), (_, new_shape) in zip(self._layout, grown._layout):
            size = int(np.prod(old_shape))
            index_map[o:o + size] = np.arange(n, n + size)
            o, n = o + size, n + int(np.prod(new_shape))
        grown._params[index_map] = self._params
        w, b = new_fc.params
        w[-1] = 0.0
        b[-1] = NEW_CLASS_BIAS
        self.definitions, self.layers, self._plan = grown.definitions, grown.layers, grown._plan
        self.loss_layer, self._layout = grown.loss_layer, grown._layout
        self.num_params, self.labels = grown.num_params, grown.labels
        self._params, self._grads = grown._params, grown._grads
        for layer in self.layers:
            if isinstance(layer, DropoutLayer):
                layer.rng = self.rng
        return index_map

    def spec(self) -> list[dict[str, Any]]:
        """The full (desugared, explicit) layer definitions; ``Net(net.spec())`` rebuilds it."""
        return [dict(d) for d in self.definitions]


def layer_table(layer_defs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``Net(layer_defs).layer_table()`` without allocating the parameters (a spec typed by
    hand may ask for billions): the engine's own checks, raising ``ModelFormatError``."""
    return _table(Net._build(_spec.normalize(layer_defs)))


def _table(layers: Sequence[Layer]) -> list[dict[str, Any]]:
    return [{"type": layer.type, "out_shape": list(layer.out_shape),
             "parameters": sum(int(np.prod(s)) for s in layer.param_shapes())}
            for layer in layers]
