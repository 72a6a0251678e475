"""Convolution and max-pooling over channel-major activations ``(C, N, H, W)``.

Convolution is im2col + one GEMM: the columns matrix has rows ``(c, ky, kx)`` and columns
``(n, oy, ox)``, so ``W (F, C*ky*kx) @ cols`` is already the next layer's ``(F, N, H', W')``.
im2col is one copy out of a strided view; col2im is one strided add per kernel offset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._layers import F32, Layer, Shape


def _out_size(size: int, k: int, stride: int, pad: int) -> int:
    # ConvNetJS: Math.floor((in + 2 * pad - k) / stride + 1)
    return (size + 2 * pad - k) // stride + 1


def _pad(x: np.ndarray, pad: int, value: float = 0.0) -> np.ndarray:
    if pad == 0:
        return x
    c, n, h, w = x.shape
    xp = np.full((c, n, h + 2 * pad, w + 2 * pad), value, dtype=x.dtype)
    xp[:, :, pad:pad + h, pad:pad + w] = x
    return xp


def _windows(xp: np.ndarray, ky: int, kx: int, stride: int, oh: int, ow: int) -> np.ndarray:
    """View of shape (C, ky, kx, N, oh, ow) over padded input ``xp`` (C, N, Hp, Wp)."""
    sc, sn, sh, sw = xp.strides
    return as_strided(xp, shape=(xp.shape[0], ky, kx, xp.shape[1], oh, ow),
                      strides=(sc, sh, sw, sn, sh * stride, sw * stride), writeable=False)


class ConvLayer(Layer):
    type = "conv"

    def __init__(self, definition: dict[str, Any], in_shape: Shape) -> None:
        super().__init__(definition, in_shape)
        d = definition
        c, h, w = in_shape
        self.ky, self.kx, self.stride, self.pad = d["sy"], d["sx"], d["stride"], d["pad"]
        oh = _out_size(h, self.ky, self.stride, self.pad)
        ow = _out_size(w, self.kx, self.stride, self.pad)
        if oh < 1 or ow < 1:
            raise ValueError(f"a {self.kx}x{self.ky} filter does not fit an input of {w}x{h} "
                             f"with pad {self.pad}")
        self.out_shape = (d["filters"], oh, ow)

    def param_shapes(self) -> list[tuple[int, ...]]:
        f = self.out_shape[0]
        return [(f, self.in_shape[0], self.ky, self.kx), (f,)]

    def decay_muls(self) -> list[tuple[float, float]]:
        d = self.definition
        return [(d["l1_decay_mul"], d["l2_decay_mul"]), (0.0, 0.0)]

    def init_params(self, rng: np.random.Generator) -> None:
        w, b = self.params
        w[...] = rng.standard_normal(w.shape) * np.sqrt(1.0 / (self.ky * self.kx * self.in_shape[0]))
        b[...] = self.definition["bias_pref"]

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        c, n = x.shape[:2]
        f, oh, ow = self.out_shape
        self.x_shape = x.shape
        xp = _pad(x, self.pad)
        cols = np.empty((c, self.ky, self.kx, n, oh, ow), dtype=F32)
        np.copyto(cols, _windows(xp, self.ky, self.kx, self.stride, oh, ow))
        self.cols = cols.reshape(c * self.ky * self.kx, n * oh * ow)
        w, b = self.params
        y = w.reshape(f, -1) @ self.cols
        y += b[:, None]
        return y.reshape(f, n, oh, ow)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        c, n, h, w_ = self.x_shape
        f, oh, ow = self.out_shape
        w, _ = self.params
        dw, db = self.grads
        dy2 = dy.reshape(f, n * oh * ow)
        dw.reshape(f, -1)[...] += dy2 @ self.cols.T
        db += dy2.sum(axis=1)
        dcols = (w.reshape(f, -1).T @ dy2).reshape(c, self.ky, self.kx, n, oh, ow)
        p, s = self.pad, self.stride
        dxp = np.zeros((c, n, h + 2 * p, w_ + 2 * p), dtype=F32)
        for i in range(self.ky):
            for j in range(self.kx):
                dxp[:, :, i:i + s * oh:s, j:j + s * ow:s] += dcols[:, i, j]
        return dxp[:, :, p:p + h, p:p + w_] if p else dxp


class PoolLayer(Layer):
    """Max pooling. Padding never wins (ConvNetJS skips out-of-bounds cells); on ties the first
    maximum in ConvNetJS's scan order (x outer, y inner) takes the gradient."""

    type = "pool"

    def __init__(self, definition: dict[str, Any], in_shape: Shape) -> None:
        super().__init__(definition, in_shape)
        d = definition
        c, h, w = in_shape
        self.ky, self.kx, self.stride, self.pad = d["sy"], d["sx"], d["stride"], d["pad"]
        oh = _out_size(h, self.ky, self.stride, self.pad)
        ow = _out_size(w, self.kx, self.stride, self.pad)
        if oh < 1 or ow < 1:
            raise ValueError(f"a {self.kx}x{self.ky} pool does not fit an input of {w}x{h} "
                             f"with pad {self.pad}")
        self.out_shape = (c, oh, ow)
        # The common 2x2/2 case over even sizes: two pairwise maxima, no index arrays.
        self.pairwise = (self.ky == self.kx == self.stride == 2 and self.pad == 0
                         and h % 2 == 0 and w % 2 == 0)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self.x_shape = x.shape
        if self.pairwise:
            return self._forward_pairwise(x)
        c, n = x.shape[:2]
        _, oh, ow = self.out_shape
        xp = _pad(x, self.pad, value=-np.inf)
        win = _windows(xp, self.ky, self.kx, self.stride, oh, ow)  # (C, ky, kx, N, oh, ow)
        # Scan order x outer, y inner, as ConvNetJS: flatten (kx, ky).
        flat = win.transpose(0, 3, 4, 5, 2, 1).reshape(c, n, oh, ow, self.kx * self.ky)
        self.arg = flat.argmax(axis=-1)
        return np.take_along_axis(flat, self.arg[..., None], axis=-1)[..., 0]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self.pairwise:
            return self._backward_pairwise(dy)
        c, n, h, w = self.x_shape
        _, oh, ow = self.out_shape
        p, s = self.pad, self.stride
        ix, iy = np.divmod(self.arg, self.ky)
        rows = iy + s * np.arange(oh)[:, None]
        cols = ix + s * np.arange(ow)[None, :]
        dxp = np.zeros((c, n, h + 2 * p, w + 2 * p), dtype=F32)
        ci = np.arange(c)[:, None, None, None]
        ni = np.arange(n)[None, :, None, None]
        np.add.at(dxp, (ci, ni, rows, cols), dy)
        return dxp[:, :, p:p + h, p:p + w] if p else dxp

    def _forward_pairwise(self, x: np.ndarray) -> np.ndarray:
        # Reduce y first (ties keep the upper cell), then x (ties keep the left cell): the winner
        # is ConvNetJS's first maximum in x-outer, y-inner order.
        top, bottom = x[:, :, 0::2], x[:, :, 1::2]
        self.take_top = top >= bottom
        colmax = np.maximum(top, bottom)
        left, right = colmax[..., 0::2], colmax[..., 1::2]
        self.take_left = left >= right
        return np.maximum(left, right)

    def _backward_pairwise(self, dy: np.ndarray) -> np.ndarray:
        c, n, h, w = self.x_shape
        dcol = np.empty((c, n, h // 2, w), dtype=F32)
        dcol[..., 0::2] = dy * self.take_left
        dcol[..., 1::2] = dy * ~self.take_left
        dx = np.empty(self.x_shape, dtype=F32)
        dx[:, :, 0::2] = dcol * self.take_top
        dx[:, :, 1::2] = dcol * ~self.take_top
        return dx
