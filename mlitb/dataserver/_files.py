"""The store's files on disk: appending, committing, rolling back and recovering a dataset.

One directory per project (see ``_store``): ``images.u8`` and ``records.bin`` only grow, and
``manifest.json`` — replaced atomically — says how many rows of them are committed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ._errors import StoreError

MANIFEST: Final = "manifest.json"
IMAGES: Final = "images.u8"
RECORDS: Final = "records.bin"
FORMAT: Final = "mlitb-dataset"
RECORD: Final = np.dtype([("label", "<u4"), ("split", "u1"), ("sha256", "u1", (32,))])
"""One id's record: label index (uint32 LE), split (0 train, 1 test), sha256 of its file."""
log = logging.getLogger(__name__)


def append(path: Path, offset: int, array: npt.NDArray[Any], *, fsync: bool) -> None:
    """Write ``array``'s bytes at ``offset`` (the committed size), cutting anything past it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+b") as file:
        file.truncate(offset)
        file.seek(offset)
        file.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
        file.flush()
        if fsync:
            os.fsync(file.fileno())


def write_manifest(directory: Path, manifest: dict[str, Any], *, fsync: bool) -> None:
    """The commit: write a temp file, then ``os.replace`` it over manifest.json."""
    temporary = directory / (MANIFEST + ".tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(manifest, file, separators=(",", ":"))
        file.flush()
        if fsync:
            os.fsync(file.fileno())
    os.replace(temporary, directory / MANIFEST)
    if fsync:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def roll_back(directory: Path, committed: int, row_bytes: int) -> None:
    """Best effort after a failed add; whatever is left, ``recover`` cleans up on the next open."""
    try:
        (directory / (MANIFEST + ".tmp")).unlink(missing_ok=True)
        if committed == 0 and not (directory / MANIFEST).exists():
            shutil.rmtree(directory, ignore_errors=True)
            return
        for name, size in ((IMAGES, committed * row_bytes), (RECORDS, committed * RECORD.itemsize)):
            if (directory / name).exists():
                os.truncate(directory / name, size)
    except OSError as error:
        log.warning("rolling back %s failed (the next open cleans up): %s", directory, error)


def recover(directory: Path) -> dict[str, Any] | None:
    """The committed manifest of a project directory, after cutting off what a crashed add left;
    None (and the directory removed) if its first add never committed."""
    (directory / (MANIFEST + ".tmp")).unlink(missing_ok=True)
    if not (directory / MANIFEST).exists():
        for name in (IMAGES, RECORDS):
            (directory / name).unlink(missing_ok=True)
        try:
            directory.rmdir()
        except OSError:
            log.warning("%s has no %s and holds other files; skipped", directory, MANIFEST)
        return None
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT or manifest.get("version") != 1:
            raise StoreError(f"{directory / MANIFEST}: not a version 1 {FORMAT} manifest")
        count, shape = int(manifest["count"]), tuple(manifest["shape"])
        for name, size in ((IMAGES, count * int(np.prod(shape))),
                           (RECORDS, count * RECORD.itemsize)):
            actual = (directory / name).stat().st_size
            if actual < size:
                raise StoreError(f"{directory / name}: {actual} bytes, the manifest needs "
                                 f"{size}; the store is damaged")
            if actual > size:
                os.truncate(directory / name, size)
        return manifest
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StoreError(f"{directory}: cannot open the dataset: {error}") from error


def map_arrays(directory: Path, manifest: dict[str, Any]
               ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[Any]]:
    """Read-only memory maps of the committed images ``(count, C, H, W)`` and records."""
    count, shape = int(manifest["count"]), tuple(int(d) for d in manifest["shape"])
    images = np.memmap(directory / IMAGES, dtype=np.uint8, mode="r", shape=(count, *shape))
    records = np.memmap(directory / RECORDS, dtype=RECORD, mode="r", shape=(count,))
    return np.asarray(images), np.asarray(records)
