"""Write arrays as an upload archive (the demo zips scikit-learn's digits with it; tests too)."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image


def write_archive(path: str | os.PathLike[str],
                  samples: Iterable[tuple[str, npt.NDArray[np.uint8]]], *,
                  image_format: str = "PNG", wrapper: str | None = None) -> Path:
    """Zip ``(label, image)`` pairs as ``[wrapper/]label/00000.png``, one folder per label.

    Images are uint8 ``(height, width)`` grayscale or ``(height, width, 3)`` RGB. PNG (the default)
    is lossless, so decoding the archive at the same size gives the same pixels back.
    """
    prefix = f"{wrapper}/" if wrapper else ""
    suffix = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "GIF": "gif"}.get(image_format, "img")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for i, (label, pixels) in enumerate(samples):
            buffer = io.BytesIO()
            Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format=image_format)
            archive.writestr(f"{prefix}{label}/{i:05d}.{suffix}", buffer.getvalue())
    return Path(path)
