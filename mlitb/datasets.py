"""Datasets that ship with the installed packages, for the demo and tests (no network)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The CIFAR-10 demo net of the paper and of ConvNetJS (22,466 parameters).
CIFAR10_SPEC: list[dict[str, object]] = [
    {"type": "input", "out_sx": 32, "out_sy": 32, "out_depth": 3},
    {"type": "conv", "sx": 5, "filters": 16, "stride": 1, "pad": 2, "activation": "relu"},
    {"type": "pool", "sx": 2, "stride": 2},
    {"type": "conv", "sx": 5, "filters": 20, "stride": 1, "pad": 2, "activation": "relu"},
    {"type": "pool", "sx": 2, "stride": 2},
    {"type": "conv", "sx": 5, "filters": 20, "stride": 1, "pad": 2, "activation": "relu"},
    {"type": "pool", "sx": 2, "stride": 2},
    {"type": "softmax", "num_classes": 10},
]

# The CIFAR-10 net `mlitb demo` and `mlitb bench train` use (73,242 parameters, ~2.2M
# multiply-adds per sample against the paper net's ~3.9M): a strided 5x5 first layer and a pool
# bring the image to 8x8 at once, then 3x3 convs widen to 48 and 96 filters as the maps shrink,
# and the last one feeds the softmax's fc layer without a pool. It needs about as many samples
# for 70% test accuracy as the paper's net needs for 62-65%, and costs half as much per sample
# in the numpy engine: the search that found it is in docs/performance.md (2026-12-03).
CIFAR10_FAST_SPEC: list[dict[str, object]] = [
    {"type": "input", "out_sx": 32, "out_sy": 32, "out_depth": 3},
    {"type": "conv", "sx": 5, "filters": 32, "stride": 2, "pad": 2, "activation": "relu"},
    {"type": "pool", "sx": 2, "stride": 2},
    {"type": "conv", "sx": 3, "filters": 48, "stride": 1, "pad": 1, "activation": "relu"},
    {"type": "pool", "sx": 2, "stride": 2},
    {"type": "conv", "sx": 3, "filters": 96, "stride": 1, "pad": 1, "activation": "relu"},
    {"type": "softmax", "num_classes": 10},
]

CIFAR10_NETS: dict[str, list[dict[str, object]]] = {
    "fast": CIFAR10_FAST_SPEC, "paper": CIFAR10_SPEC}
"""The CIFAR-10 nets by name: ``fast`` (the demo's) and ``paper`` (MLitB's and ConvNetJS's)."""

# A small conv net for the 8x8 digits: conv 3x3x8 relu, pool 2, fc 32 relu, softmax 10.
DIGITS_SPEC: list[dict[str, object]] = [
    {"type": "input", "out_sx": 8, "out_sy": 8, "out_depth": 1},
    {"type": "conv", "sx": 3, "filters": 8, "stride": 1, "pad": 1, "activation": "relu"},
    {"type": "pool", "sx": 2, "stride": 2},
    {"type": "fc", "num_neurons": 32, "activation": "relu"},
    {"type": "softmax", "num_classes": 10},
]


@dataclass(frozen=True)
class Split:
    """Images as uint8 ``(N, H, W, C)`` (the data server's storage form) and class indices."""

    images: np.ndarray
    labels: np.ndarray


def digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split, list[str]]:
    """scikit-learn's handwritten digits (1,797 8x8 images, bundled in its wheel), split per class
    into train and test with a fixed seed. Pixel values 0..16 are scaled to 0..255."""
    from sklearn.datasets import load_digits  # imported late: scikit-learn is slow to import

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(labels), dtype=bool)
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        test_mask[idx[: int(round(len(idx) * test_fraction))]] = True
    names = [str(k) for k in range(10)]
    return (Split(images[~test_mask], labels[~test_mask]),
            Split(images[test_mask], labels[test_mask]), names)


def pixels_to_input(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` pixels -> float32 net input in [-0.5, 0.5], as ConvNetJS's demos
    scale them. Every worker (nodes, the browser, closures' predict) uses this scaling."""
    return (images.astype(np.float32) / np.float32(255.0)) - np.float32(0.5)


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` images (as Pillow gives them) -> float32 ``(N, C, H, W)`` input."""
    return pixels_to_input(images.transpose(0, 3, 1, 2))
