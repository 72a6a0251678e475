"""Classifying image files with a closure's net, the images prepared as the data server does."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..dataserver import _ingest
from ..datasets import pixels_to_input
from ..errors import MlitbError
from ..nn import Net


class ImageError(MlitbError):
    """An image given for prediction could not be read or decoded."""


@dataclass(frozen=True)
class Prediction:
    """The net's outputs for one image: ``top`` holds (label, value) pairs, best first.

    Values are probabilities for a softmax net, scores for an svm net; a regression net has no
    labels, so ``top`` is empty and ``outputs`` holds its values."""

    path: str
    top: tuple[tuple[str, float], ...]
    outputs: tuple[float, ...]


def _not_an_image(name: str, data: bytes, formats: tuple[str, ...]) -> ImageError | None:
    """An ``ImageError`` naming ``name`` when Pillow recognises none of ``formats`` in ``data``
    (a text file, say), saying what the file looks like instead; None for an image."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=formats):
            return None
    except UnidentifiedImageError:
        pass
    except Exception:  # noqa: BLE001 (a damaged image: the decoder says what is wrong)
        return None
    return ImageError(f"{name} is not an image ({_ingest.what_it_looks_like(data)}; "
                      f"{', '.join(formats)} work)")


def load_images(paths: Sequence[str | os.PathLike[str]],
                input_shape: tuple[int, int, int]) -> npt.NDArray[np.uint8]:
    """Image files -> uint8 ``(N, C, H, W)``, converted exactly as the data server converts
    uploads (grayscale as Pillow's ``L`` or RGB; scaled to cover and center-cropped)."""
    shape = _ingest.InputShape.from_array_shape(input_shape)
    limits = _ingest.DEFAULT_LIMITS
    out = np.empty((len(paths), *input_shape), dtype=np.uint8)
    for i, path in enumerate(paths):
        name = os.fspath(path)
        try:
            size = Path(path).stat().st_size
            if size > limits.max_file_bytes:
                raise ImageError(f"{name}: {size} bytes, over the limit of "
                                 f"{limits.max_file_bytes}")
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ImageError(f"{name}: cannot be read ({exc.strerror or exc})") from None
        problem = _not_an_image(name, data, _ingest.IMAGE_FORMATS)
        if problem is not None:
            raise problem
        try:
            _ingest._decode_into(out[i], data, name, shape, limits)
        except MlitbError as exc:
            raise ImageError(str(exc)) from None
    return out


def predict_images(net: Net, paths: Sequence[str | os.PathLike[str]],
                   top: int = 3) -> list[Prediction]:
    """The ``top`` best labels of each image (fewer if the net has fewer classes)."""
    images = load_images(paths, net.input_shape)
    outputs = net.predict(pixels_to_input(images))
    results = []
    for path, row in zip(paths, outputs):
        best: tuple[tuple[str, float], ...] = ()
        if net.is_classifier:
            order = np.argsort(-row, kind="stable")[:max(top, 0)]
            best = tuple((net.labels[k], float(row[k])) for k in order)
        results.append(Prediction(os.fspath(path), best, tuple(float(v) for v in row)))
    return results
