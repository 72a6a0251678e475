"""The layers: each a small class with ``forward`` and ``backward`` over a batch.

Activations travel as arrays of shape ``(C, N, H, W)``, in whatever memory order the layer that made
them found fastest: a convolution's output is channels last in memory (see ``_conv.py``), and the
elementwise layers keep the order they are given. A layer with parameters holds views
into the net's one flat parameter vector and one flat gradient vector, bound by ``bind``; ``backward``
*adds* into its gradient views, so gradients sum over samples and over calls until the net zeroes them.

Semantics follow ConvNetJS 0.3, with two documented corrections (docs/formats.md): dropout scales by
``1 - drop_prob`` at test time, and LRN's backward pass is the true derivative.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Shape = tuple[int, int, int]  # (depth, sy, sx) == (C, H, W)
F32 = np.float32


class Buffers:
    """A layer's arrays, reused from one call to the next instead of allocated afresh.

    Fresh arrays of half a megabyte cost page faults on every chunk (measured: 500 faults and 3-4%
    of a training step of the demo net). A layer's forward output and input gradient may live
    here too: the next layer reads them at once, and ``Net`` copies what it returns. So a caller
    of ``Layer.forward``/``backward`` that keeps a result across calls must copy it.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, tuple[object, np.ndarray]] = {}

    def get(self, name: str, shape: tuple[int, ...], like: np.ndarray | None = None) -> np.ndarray:
        """A float32 array of ``shape``; with ``like``, laid out in memory as ``like`` is."""
        key = (shape, None if like is None else like.strides)
        made = self._arrays.get(name)
        if made is not None and made[0] == key:
            return made[1]
        a = np.empty(shape, dtype=F32) if like is None else np.empty_like(like, dtype=F32)
        self._arrays[name] = (key, a)
        return a

    def __getstate__(self) -> dict[str, Any]:
        return {"_arrays": {}}  # scratch: not worth copying or pickling

    def ones(self, n: int) -> np.ndarray:
        made = self._arrays.get("ones")
        if made is not None and made[0] == n:
            return made[1]
        a = np.ones(n, dtype=F32)
        self._arrays["ones"] = (n, a)
        return a


class Layer:
    """Base class. Subclasses set ``out_shape`` in ``__init__`` and override what they need."""

    type: str = ""

    def __init__(self, definition: dict[str, Any], in_shape: Shape) -> None:
        self.definition = definition
        self.in_shape = in_shape
        self.out_shape = in_shape
        self.buffers = Buffers()

    # -- parameters -------------------------------------------------------------------------
    def param_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of this layer's parameter arrays, in their order in the flat vector."""
        return []

    def decay_muls(self) -> list[tuple[float, float]]:
        """(l1, l2) decay multipliers of each parameter array."""
        return []

    def bind(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        """Take views into the net's flat parameter and gradient vectors."""
        self.params, self.grads = params, grads

    def init_params(self, rng: np.random.Generator) -> None:
        """Fill this layer's parameters with ConvNetJS's initial values."""

    # -- computation ------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """The input gradient, given the output gradient; adds parameter gradients into ``grads``."""
        raise NotImplementedError

    def backward_params(self, dy: np.ndarray) -> None:
        """Only add the parameter gradients: the net's first layer with parameters does this, as
        nobody reads the gradient of its input (for the demo net, about 10% of a step)."""
        self.backward(dy)


class InputLayer(Layer):
    type = "input"

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy


class FullyConnectedLayer(Layer):
    """``y = W x + b`` with W of shape (num_neurons, C*H*W) over inputs in (C, H, W) order."""

    type = "fc"

    def __init__(self, definition: dict[str, Any], in_shape: Shape) -> None:
        super().__init__(definition, in_shape)
        self.num_inputs = int(np.prod(in_shape))
        self.out_shape = (definition["num_neurons"], 1, 1)

    def param_shapes(self) -> list[tuple[int, ...]]:
        return [(self.out_shape[0], self.num_inputs), (self.out_shape[0],)]

    def decay_muls(self) -> list[tuple[float, float]]:
        d = self.definition
        return [(d["l1_decay_mul"], d["l2_decay_mul"]), (0.0, 0.0)]

    def init_params(self, rng: np.random.Generator) -> None:
        w, b = self.params
        w[...] = rng.standard_normal(w.shape) * np.sqrt(1.0 / self.num_inputs)
        b[...] = self.definition["bias_pref"]

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        c, n, h, w = self.x_shape = x.shape
        # Sample-major (N, C*H*W), so the product is (N, in) @ (in, out) like a conv's.
        self.x2 = x.transpose(1, 0, 2, 3).reshape(n, c * h * w)
        wt, b = self.params
        y: np.ndarray = self.x2 @ wt.T
        y += b
        return y.T.reshape(self.out_shape[0], n, 1, 1)

    def backward_params(self, dy: np.ndarray) -> None:
        dw, db = self.grads
        dy2 = dy.reshape(dy.shape[0], dy.shape[1])
        dw += dy2 @ self.x2
        db += dy2.sum(axis=1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.backward_params(dy)
        c, n, h, w = self.x_shape
        dx2: np.ndarray = dy.reshape(dy.shape[0], n).T @ self.params[0]  # (N, C*H*W)
        return dx2.reshape(n, c, h, w).transpose(1, 0, 2, 3)


class ReluLayer(Layer):
    type = "relu"
    y: np.ndarray

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self.y = np.maximum(x, 0, out=self.buffers.get("y", x.shape, like=x))
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        # ConvNetJS: no gradient where the output is <= 0
        dx: np.ndarray = np.multiply(dy, self.y > 0,
                                     out=self.buffers.get("dx", dy.shape, like=dy))
        return dx


class SigmoidLayer(Layer):
    type = "sigmoid"
    y: np.ndarray

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self.y = (1.0 / (1.0 + np.exp(-x))).astype(F32, copy=False)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self.y * (1 - self.y)


class TanhLayer(Layer):
    type = "tanh"
    y: np.ndarray

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self.y = np.tanh(x)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * (1 - self.y * self.y)


class MaxoutLayer(Layer):
    """Max over consecutive groups of ``group_size`` channels; leftover channels are dropped."""

    type = "maxout"

    def __init__(self, definition: dict[str, Any], in_shape: Shape) -> None:
        super().__init__(definition, in_shape)
        self.group = definition["group_size"]
        self.out_shape = (in_shape[0] // self.group, in_shape[1], in_shape[2])

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        c_out, g = self.out_shape[0], self.group
        self.x_shape = x.shape
        groups = x[: c_out * g].reshape(c_out, g, *x.shape[1:])
        self.switch = groups.argmax(axis=1)  # first maximum, as ConvNetJS
        return np.take_along_axis(groups, self.switch[:, None], axis=1)[:, 0]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        c_out, g = self.out_shape[0], self.group
        dx = np.zeros(self.x_shape, dtype=F32)
        dgroups = dx[: c_out * g].reshape(c_out, g, *self.x_shape[1:])
        np.put_along_axis(dgroups, self.switch[:, None], dy[:, None], axis=1)
        return dx


class DropoutLayer(Layer):
    """Zeroes each input with probability ``drop_prob`` while training; scales by
    ``1 - drop_prob`` otherwise, so the expected activation is the same in both modes."""

    type = "dropout"
    keep: np.ndarray | None

    def __init__(self, definition: dict[str, Any], in_shape: Shape) -> None:
        super().__init__(definition, in_shape)
        self.p = definition["drop_prob"]
        self.rng = np.random.default_rng()

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if not training:
            self.keep = None
            return (x * F32(1.0 - self.p)).astype(F32, copy=False)
        self.keep = (self.rng.random(x.shape, dtype=F32) >= self.p).astype(F32)
        return x * self.keep

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self.keep is None:
            return dy * F32(1.0 - self.p)
        return dy * self.keep


def _window_sum(a: np.ndarray, half: int) -> np.ndarray:
    """Sum over channels j in [i - half, i + half] (clipped to the edges) for each channel i.

    One shifted add per neighbour, in float32 as ConvNetJS's loop: a running sum and differences
    of it would need float64 to stay accurate.
    """
    out = a.copy()
    for shift in range(1, half + 1):
        out[shift:] += a[:-shift]
        out[:-shift] += a[shift:]
    return out


class LocalResponseNormalizationLayer(Layer):
    """``y_i = x_i / (k + alpha/n * sum_{j near i} x_j^2) ** beta`` across channels."""

    type = "lrn"
    x: np.ndarray
    s: np.ndarray
    s_pow: np.ndarray

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        d = self.definition
        self.x = x
        self.s = F32(d["k"]) + F32(d["alpha"] / d["n"]) * _window_sum(x * x, d["n"] // 2)
        self.s_pow = self.s ** F32(d["beta"])
        return x / self.s_pow

    def backward(self, dy: np.ndarray) -> np.ndarray:
        d = self.definition
        t = dy * self.x / (self.s_pow * self.s)  # dy_i * x_i * S_i^(-beta-1)
        coeff = F32(2.0 * d["alpha"] * d["beta"] / d["n"])
        return dy / self.s_pow - coeff * self.x * _window_sum(t, d["n"] // 2)


class LossLayer(Layer):
    """A loss layer's input is (K, N, 1, 1); its outputs and targets are per sample, (N, K)."""

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self.x = x.reshape(x.shape[0], x.shape[1])
        return self.x

    def loss(self, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Summed loss of the last forward batch against targets ``y``, and its input gradient."""
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:  # gradients come from ``loss`` instead
        raise TypeError("a loss layer starts the backward pass through loss(y)")


class SoftmaxLayer(LossLayer):
    type = "softmax"
    p: np.ndarray

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        z = x.reshape(x.shape[0], x.shape[1])
        e = np.exp(z - z.max(axis=0, keepdims=True))
        self.p = e / e.sum(axis=0, keepdims=True)
        return self.p

    def loss(self, y: np.ndarray) -> tuple[float, np.ndarray]:
        n = self.p.shape[1]
        cols = np.arange(n)
        loss = -np.log(np.maximum(self.p[y, cols], np.finfo(F32).tiny), dtype=np.float64).sum()
        dx = self.p.copy()
        dx[y, cols] -= 1
        return float(loss), dx


class SVMLayer(LossLayer):
    """Multiclass hinge loss with margin 1 (Weston-Watkins), as ConvNetJS."""

    type = "svm"

    def loss(self, y: np.ndarray) -> tuple[float, np.ndarray]:
        n = self.x.shape[1]
        cols = np.arange(n)
        margins = self.x - self.x[y, cols] + 1
        margins[y, cols] = 0
        violated = (margins > 0).astype(F32)
        dx = violated.copy()
        dx[y, cols] -= violated.sum(axis=0)
        return float(margins[margins > 0].sum(dtype=np.float64)), dx


class RegressionLayer(LossLayer):
    """``0.5 * (x - y)^2`` summed over outputs."""

    type = "regression"

    def loss(self, y: np.ndarray) -> tuple[float, np.ndarray]:
        dx = (self.x - y.T).astype(F32, copy=False)
        return float(0.5 * np.square(dx, dtype=np.float64).sum()), dx
