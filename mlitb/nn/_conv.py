"""Convolution and max-pooling.

Layers pass activations of shape ``(C, N, H, W)`` (see ``_layers.py``), but a convolution keeps its
data *channels last* in memory, ``(N, H, W, C)``, and returns its output as a transposed view of
that. Measured on the CIFAR-10 demo net (docs/performance.md), channels last wins twice:

- im2col copies runs of ``kx * C`` contiguous floats instead of runs of one image row, and the
  GEMMs take the orientation OpenBLAS runs fastest for these skinny products: ``cols (N*H'*W', K)``
  times the small weight matrix, rather than the weights times ``cols`` transposed.
- the input gradient of a stride-1 convolution is itself a convolution (of the padded output
  gradient with the flipped kernels), so it is one more im2col and GEMM; col2im's 25 strided adds
  over runs of ``C`` floats cost more than that.

Whatever order the input arrives in, copying it into the zero-padded channels-last buffer puts it
right; the next layers (relu, pool) keep the memory order of what they are given.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._layers import F32, Layer, Shape

# OpenBLAS's AVX-512 kernels (numpy's BLAS on this machine) multiply small matrices, m*n*k <= 1e6,
# without first copying ("packing") them into blocks. In these tall, skinny products the packing
# costs nearly as much as the arithmetic, so a stack of small products, which np.matmul loops over
# in C, is 12-30% faster than one big product (docs/performance.md). Other kernels have no such
# path, and there the stack is up to 20% slower: so stack only where it pays.
_SMALL_GEMM = 1_000_000
_SMALL_GEMM_CORES = {"skylakex", "cooperlake", "sapphirerapids"}


@functools.cache
def _blas_has_small_gemm() -> bool:
    """Whether numpy's BLAS is OpenBLAS running AVX-512 kernels, as threadpoolctl (which
    scikit-learn brings) tells; without threadpoolctl, assume not."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return False
    return any(info.get("internal_api") == "openblas"
               and str(info.get("architecture", "")).lower() in _SMALL_GEMM_CORES
               for info in threadpool_info())


def _rows_per_piece(k: int, n: int) -> int:
    """Rows of each piece of an (M, k) @ (k, n) product: a power of two, at most 128, small enough
    for the small-matrix kernels."""
    rows = 128
    while rows > 8 and rows * k * n > _SMALL_GEMM:
        rows //= 2
    return rows


def _matmul_tall(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = a @ b`` for a tall, C-contiguous ``a`` (M, K) and a small ``b`` (K, N)."""
    (m, k), n = a.shape, b.shape[1]
    if not _blas_has_small_gemm():
        return np.matmul(a, b, out=out)
    rows = _rows_per_piece(k, n)
    full = m - m % rows
    np.matmul(a[:full].reshape(-1, rows, k), b, out=out[:full].reshape(-1, rows, n))
    if full < m:
        np.matmul(a[full:], b, out=out[full:])
    return out


def _matmul_tall_t(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a.T @ b`` for tall, C-contiguous ``a`` (M, F) and ``b`` (M, K): a sum of small products."""
    (m, f), k = a.shape, b.shape[1]
    if not _blas_has_small_gemm():
        product: np.ndarray = a.T @ b
        return product
    rows = _rows_per_piece(k, f)
    full = m - m % rows
    pieces = np.matmul(a[:full].reshape(-1, rows, f).transpose(0, 2, 1),
                       b[:full].reshape(-1, rows, k))
    total: np.ndarray = pieces.sum(axis=0)
    if full < m:
        total += a[full:].T @ b[full:]
    return total


def _out_size(size: int, k: int, stride: int, pad: int) -> int:
    # ConvNetJS: Math.floor((in + 2 * pad - k) / stride + 1)
    return (size + 2 * pad - k) // stride + 1


class _Im2col:
    """im2col for one input size: rows ``(n, oy, ox)``, columns ``(ky, kx, c)``.

    The input is copied into the middle of a zero-bordered channels-last buffer ``(N, Hp, Wp, C)``,
    then the columns matrix is one copy out of a strided view ``(N, oh, ow, ky, kx, C)`` of it:
    for each window row, ``kx * C`` floats lie side by side, so numpy copies long runs. The
    buffers and the views are made once per chunk size (the border stays zero, and making the
    strided view costs more than a small copy).
    """

    def __init__(self, n: int, h: int, w: int, c: int, ky: int, kx: int, stride: int,
                 pad_y: int, pad_x: int) -> None:
        oh = _out_size(h, ky, stride, pad_y)
        ow = _out_size(w, kx, stride, pad_x)
        self.xp = np.zeros((n, h + 2 * pad_y, w + 2 * pad_x, c), dtype=F32)
        self.middle = self.xp[:, pad_y:pad_y + h, pad_x:pad_x + w]
        sn, sh, sw, sc = self.xp.strides
        self.windows = as_strided(self.xp, shape=(n, oh, ow, ky, kx, c),
                                  strides=(sn, sh * stride, sw * stride, sh, sw, sc),
                                  writeable=False)
        self.cols = np.empty((n * oh * ow, ky * kx * c), dtype=F32)
        self.cols6 = self.cols.reshape(n, oh, ow, ky, kx, c)

    def __call__(self, x_nhwc: np.ndarray) -> np.ndarray:
        self.middle[...] = x_nhwc
        np.copyto(self.cols6, self.windows)
        return self.cols


class _Im2colCache:
    """The ``_Im2col`` of each recent chunk size (a batch's last chunk is often smaller)."""

    def __init__(self, **geometry: Any) -> None:
        self.geometry = geometry
        self.made: dict[tuple[int, ...], _Im2col] = {}

    def __call__(self, x_nhwc: np.ndarray) -> np.ndarray:
        shape = x_nhwc.shape
        im2col = self.made.get(shape)
        if im2col is None:
            if len(self.made) >= 2:  # a batch's chunks and its last, smaller one
                self.made.pop(next(iter(self.made)))
            n, h, w, c = shape
            im2col = self.made[shape] = _Im2col(n, h, w, c, **self.geometry)
        return im2col(x_nhwc)

    def __getstate__(self) -> dict[str, Any]:
        # A copy or pickle would turn the views into separate arrays: make them afresh instead.
        return {"geometry": self.geometry, "made": {}}


class ConvLayer(Layer):
    type = "conv"

    def __init__(self, definition: dict[str, Any], in_shape: Shape) -> None:
        super().__init__(definition, in_shape)
        d = definition
        _, h, w = in_shape
        self.ky, self.kx, self.stride, self.pad = d["sy"], d["sx"], d["stride"], d["pad"]
        oh = _out_size(h, self.ky, self.stride, self.pad)
        ow = _out_size(w, self.kx, self.stride, self.pad)
        if oh < 1 or ow < 1:
            raise ValueError(f"a {self.kx}x{self.ky} filter does not fit an input of {w}x{h} "
                             f"with pad {self.pad}")
        self.out_shape = (d["filters"], oh, ow)
        # The input gradient as a convolution of the output gradient needs stride 1 and a
        # padding of k - 1 - pad >= 0 on each side; otherwise col2im scatters it back.
        self.dx_by_conv = self.stride == 1 and self.pad <= min(self.ky, self.kx) - 1
        self.im2col = _Im2colCache(ky=self.ky, kx=self.kx, stride=self.stride, pad_y=self.pad,
                                   pad_x=self.pad)
        self.im2col_dy = _Im2colCache(ky=self.ky, kx=self.kx, stride=1,
                                      pad_y=self.ky - 1 - self.pad, pad_x=self.kx - 1 - self.pad)

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

    def _weights_kf(self) -> np.ndarray:
        """The weights (F, C, ky, kx) as (ky*kx*C, F): rows in the column order of ``_Im2col``."""
        w = self.params[0]
        return w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0])  # a small copy

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        n = x.shape[1]
        f, oh, ow = self.out_shape
        self.n = n
        self.cols = self.im2col(x.transpose(1, 2, 3, 0))
        # (N*oh*ow, K) @ (K, F): the fast orientation for a tall, skinny product.
        y = _matmul_tall(self.cols, self._weights_kf(), out=self.buffers.get("y", (n * oh * ow, f)))
        y += self.params[1]
        return y.reshape(n, oh, ow, f).transpose(3, 0, 1, 2)

    def backward_params(self, dy: np.ndarray) -> None:
        f = self.out_shape[0]
        dw, db = self.grads
        dy2 = dy.transpose(1, 2, 3, 0).reshape(-1, f)  # a view if dy is channels last
        # (F, N*oh*ow) @ (N*oh*ow, K), then back to the (F, C, ky, kx) layout of the flat vector.
        dw += _matmul_tall_t(dy2, self.cols).reshape(f, self.ky, self.kx, -1).transpose(0, 3, 1, 2)
        # The column sums as a product with ones: numpy's sum down the rows of a narrow matrix
        # was 17x slower than this GEMV (0.13 ms vs 8 us for conv 1 of the demo net).
        db += self.buffers.ones(dy2.shape[0]) @ dy2

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.backward_params(dy)
        if self.dx_by_conv:
            return self._input_grad_by_conv(dy.transpose(1, 2, 3, 0))
        return self._input_grad_by_col2im(dy.transpose(1, 2, 3, 0).reshape(-1, self.out_shape[0]))

    def _input_grad_by_conv(self, dy_nhwc: np.ndarray) -> np.ndarray:
        # dx[n, y, x, c] = sum over (i, j, f) of dyp[n, y + i, x + j, f] * w[f, c, ky-1-i, kx-1-j]
        # with dy zero-padded by k - 1 - pad: a stride-1 convolution with the flipped kernels.
        c, h, w_ = self.in_shape
        n = self.n
        dcols = self.im2col_dy(dy_nhwc)
        w_flipped = self.params[0][:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(-1, c)
        # (N*H*W, ky*kx*F) @ (ky*kx*F, C)
        dx = _matmul_tall(dcols, w_flipped, out=self.buffers.get("dx", (n * h * w_, c)))
        return dx.reshape(n, h, w_, c).transpose(3, 0, 1, 2)

    def _input_grad_by_col2im(self, dy2: np.ndarray) -> np.ndarray:
        c, h, w_ = self.in_shape
        _, oh, ow = self.out_shape
        n, p, s = self.n, self.pad, self.stride
        dcols = (dy2 @ self._weights_kf().T).reshape(n, oh, ow, self.ky, self.kx, c)
        dxp = np.zeros((n, h + 2 * p, w_ + 2 * p, c), dtype=F32)
        for i in range(self.ky):
            for j in range(self.kx):
                dxp[:, i:i + s * oh:s, j:j + s * ow:s] += dcols[:, :, :, i, j]
        return dxp[:, p:p + h, p:p + w_].transpose(3, 0, 1, 2)


def _pool_windows(xp: np.ndarray, ky: int, kx: int, stride: int, oh: int, ow: int) -> np.ndarray:
    """View of shape (C, ky, kx, N, oh, ow) over padded input ``xp`` (C, N, Hp, Wp)."""
    sc, sn, sh, sw = xp.strides
    return as_strided(xp, shape=(xp.shape[0], ky, kx, xp.shape[1], oh, ow),
                      strides=(sc, sh, sw, sn, sh * stride, sw * stride), writeable=False)


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
        c, n, h, w = x.shape
        _, oh, ow = self.out_shape
        p = self.pad
        xp = np.full((c, n, h + 2 * p, w + 2 * p), -np.inf, dtype=F32)
        xp[:, :, p:p + h, p:p + w] = x
        win = _pool_windows(xp, self.ky, self.kx, self.stride, oh, ow)  # (C, ky, kx, N, oh, ow)
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
        # is ConvNetJS's first maximum in x-outer, y-inner order. The masks are float32 1/0, so
        # the backward pass is a multiply and a subtract, with no bool-to-float conversions.
        buf = self.buffers
        top, bottom = x[:, :, 0::2], x[:, :, 1::2]
        self.take_top = np.greater_equal(top, bottom, out=buf.get("take_top", top.shape, top))
        colmax = np.maximum(top, bottom, out=buf.get("colmax", top.shape, top))
        left, right = colmax[..., 0::2], colmax[..., 1::2]
        self.take_left = np.greater_equal(left, right,
                                          out=buf.get("take_left", left.shape, left))
        self.x = x  # for its memory order (channels last after a conv), which dx copies
        y: np.ndarray = np.maximum(left, right, out=buf.get("y", left.shape, left))
        return y

    def _backward_pairwise(self, dy: np.ndarray) -> np.ndarray:
        buf = self.buffers
        dcol = buf.get("dcol", self.take_top.shape, self.take_top)
        left = np.multiply(dy, self.take_left, out=dcol[..., 0::2])
        np.subtract(dy, left, out=dcol[..., 1::2])
        dx = buf.get("dx", self.x.shape, self.x)
        top = np.multiply(dcol, self.take_top, out=dx[:, :, 0::2])
        np.subtract(dcol, top, out=dx[:, :, 1::2])
        return dx
