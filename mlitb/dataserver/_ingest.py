"""Validate and decode an uploaded dataset archive: a zip file on disk in, uint8 arrays out.

Pure: no network, no store. The archive is checked in two passes, so nothing is decoded from an
archive that breaks a rule in its directory:

1. the central directory: size, entry count, names (no ``..``, absolute paths, backslashes, drive
   letters), entry types (no symlinks or devices, no encryption), declared sizes and ratios, and the
   layout (``label/file`` or ``wrapper/label/file``);
2. each image, read with a size cap (``zipfile`` never inflates past an entry's declared size and
   checks its CRC), hashed (sha256 of the original bytes), decoded by Pillow and converted to the
   project's input shape.

Any failure raises ``mlitb.errors.UploadError`` naming the offending entry. docs/dataserver.md
describes the rules for users.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from mlitb.errors import UploadError
from mlitb.protocol import MAX_LABEL_LENGTH, MAX_LABELS

IMAGE_FORMATS: Final = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
"""Pillow formats accepted in an upload (no EPS/PDF: those run external programs)."""
JUNK_NAMES: Final = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
"""File names skipped wherever they are, with ``__MACOSX/`` trees and ``._*`` AppleDouble files."""
MAX_SIDE: Final = 4096


@dataclass(frozen=True)
class InputShape:
    """A project's input: ``width`` x ``height`` pixels of ``channels`` (1 = grayscale, 3 = RGB)."""

    width: int
    height: int
    channels: int

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise UploadError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        for side, value in (("width", self.width), ("height", self.height)):
            if not 1 <= value <= MAX_SIDE:
                raise UploadError(f"{side} must be between 1 and {MAX_SIDE}, got {value}")

    @property
    def array_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)``: one image's array shape (channel-major, as the engine)."""
        return (self.channels, self.height, self.width)

    @classmethod
    def from_array_shape(cls, shape: tuple[int, ...]) -> InputShape:
        channels, height, width = shape
        return cls(width=width, height=height, channels=channels)


@dataclass(frozen=True)
class UploadLimits:
    """Bounds on an archive, every one checked before anything is decoded, and on how many
    uploads the data server holds at once."""

    max_archive_bytes: int = 1 << 30
    """Size of the zip file itself (the HTTP layer stops spooling past it: 413)."""
    max_entries: int = 60_000
    """Entries in the central directory, folders and junk included: the real need is CIFAR-10's
    50,000 training images (and their folders) in one zip; an operator raises it for larger
    archives or lowers it (docs/security.md). Checked before any entry is looked at."""
    max_file_bytes: int = 16 << 20
    """Uncompressed size of one entry."""
    max_total_bytes: int = 2 << 30
    """Uncompressed size of all entries together."""
    max_ratio: float = 100.0
    """Largest uncompressed/compressed ratio of the whole archive, and of any entry of at least
    ``ratio_floor_bytes`` (small entries may compress well without harm)."""
    ratio_floor_bytes: int = 1 << 20
    max_image_pixels: int = 1 << 24
    """Width x height of one image as its header declares it, checked before decoding."""
    max_decoded_bytes: int = 2 << 30
    """Size of the decoded array: images x channels x height x width."""
    max_pending: int = 8
    """Uploads and taught images the data server holds at once, from their first body byte
    to their answer (spooled or waiting for the one decode at a time): over it, 503. Each
    holds up to ``max_archive_bytes`` on disk (a taught image ``max_file_bytes`` in
    memory)."""
    max_pending_per_address: int = 4
    """As ``max_pending``, from one client address (an IPv6 /64): over it, 429."""

    def __post_init__(self) -> None:
        for name in ("max_archive_bytes", "max_entries", "max_pending",
                     "max_pending_per_address"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"UploadLimits.{name} must be an integer >= 1, got {value!r}")


DEFAULT_LIMITS: Final = UploadLimits()


@dataclass(frozen=True, eq=False)
class Decoded:
    """A decoded upload. ``labels[i]`` indexes ``label_names`` (sorted) for ``images[i]``."""

    images: npt.NDArray[np.uint8]
    """``(n, channels, height, width)`` uint8."""
    labels: npt.NDArray[np.uint32]
    label_names: tuple[str, ...]
    sha256: tuple[str, ...]
    """Hex sha256 of each image's original file bytes."""
    names: tuple[str, ...]
    """Each image's entry name in the archive."""

    def __len__(self) -> int:
        return len(self.names)

    def label_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.label_names))
        return {name: int(n) for name, n in zip(self.label_names, counts.tolist(), strict=True)}


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    label: str


# -- pass 1: the central directory --------------------------------------------------------------
def nfc(text: str) -> str:
    """Unicode NFC: one spelling of a name however the archiver wrote it (``café`` in NFC and in
    NFD is one label)."""
    return unicodedata.normalize("NFC", text)


def _check_name(info: zipfile.ZipInfo) -> list[str]:
    """The entry's path components (NFC); raise for anything that could escape or confuse the
    layout."""
    if "\0" in info.orig_filename:  # zipfile cuts the name at a NUL: look at the raw one
        raise UploadError(f"{info.orig_filename!r}: a NUL character is not allowed in entry "
                          "names")
    name = nfc(info.filename)
    if "\\" in name:
        raise UploadError(f"{name!r}: backslashes are not allowed in entry names")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UploadError(f"{name!r}: absolute paths are not allowed")
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UploadError(f"{name!r}: empty, '.' or '..' path components are not allowed")
    if any(not part.isprintable() for part in parts):
        raise UploadError(f"{name!r}: control characters are not allowed in entry names")
    mode = info.external_attr >> 16  # Unix mode; its file type bits are 0 when not recorded
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise UploadError(f"{name!r}: is {kind}; only folders and image files are allowed")
    if info.flag_bits & 0x1:
        raise UploadError(f"{name!r}: is encrypted; upload an archive without a password")
    return parts


def _is_junk(parts: list[str]) -> bool:
    return "__MACOSX" in parts or parts[-1] in JUNK_NAMES or parts[-1].startswith("._")


def _layout(files: list[tuple[zipfile.ZipInfo, list[str]]]) -> list[_Entry]:
    """Accept ``label/file`` for every file, or ``wrapper/label/file`` under one wrapper."""
    depths = {len(parts) for _, parts in files}
    for info, parts in files:
        if len(parts) == 1:
            raise UploadError(f"{info.filename!r}: is not inside a label folder (the archive "
                              "needs one folder per label, e.g. cat/0001.jpg)")
        if len(parts) > 3:
            raise UploadError(f"{info.filename!r}: is nested too deep; use label/file or "
                              "wrapper/label/file")
    if depths == {3}:
        wrappers = sorted({parts[0] for _, parts in files})
        if len(wrappers) > 1:
            raise UploadError(f"several top-level folders hold label folders "
                              f"({', '.join(wrappers[:3])}): use one wrapper folder, or put the "
                              "label folders at the top")
    elif depths != {2}:
        shallow = next(info.filename for info, parts in files if len(parts) == 2)
        deep = next(info.filename for info, parts in files if len(parts) == 3)
        raise UploadError(f"{shallow!r} and {deep!r}: the archive mixes label/file with "
                          "wrapper/label/file; put every image in a label folder, all at one depth")
    entries = [_Entry(info, parts[-2]) for info, parts in files]
    for entry in entries:
        if len(entry.label) > MAX_LABEL_LENGTH:
            raise UploadError(f"{entry.info.filename!r}: label {entry.label[:20]!r}... is longer "
                              f"than {MAX_LABEL_LENGTH} characters")
    return sorted(entries, key=lambda e: e.info.filename)


def plan_archive(zf: zipfile.ZipFile, archive_bytes: int, limits: UploadLimits) -> list[_Entry]:
    """Check the central directory of an open archive; return its image entries in name order."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise UploadError(f"the archive has {len(infos)} entries, over the limit of "
                          f"{limits.max_entries}")
    files: list[tuple[zipfile.ZipInfo, list[str]]] = []
    seen: set[str] = set()
    total = 0
    for info in infos:
        parts = _check_name(info)
        name = "/".join(parts)
        if name in seen:
            raise UploadError(f"{info.filename!r}: appears twice in the archive (names are "
                              "compared in Unicode NFC)")
        seen.add(name)
        if info.is_dir() or _is_junk(parts):
            continue
        if info.file_size > limits.max_file_bytes:
            raise UploadError(f"{info.filename!r}: {info.file_size} bytes uncompressed, over the "
                              f"limit of {limits.max_file_bytes} per file")
        if (info.file_size >= limits.ratio_floor_bytes
                and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
            ratio = info.file_size / max(info.compress_size, 1)
            raise UploadError(f"{info.filename!r}: expands {ratio:.0f} times, over the limit of "
                              f"{limits.max_ratio:g} (a zip bomb?)")
        total += info.file_size
        files.append((info, parts))
    if total > limits.max_total_bytes:
        raise UploadError(f"the archive holds {total} bytes uncompressed, over the limit of "
                          f"{limits.max_total_bytes}")
    if total > limits.max_ratio * max(archive_bytes, 1):
        ratio = total / max(archive_bytes, 1)
        raise UploadError(f"the archive expands {ratio:.0f} times, over the limit of "
                          f"{limits.max_ratio:g} (a zip bomb?)")
    if not files:
        raise UploadError("the archive holds no files (only folders or system junk such as "
                          "__MACOSX/); it needs one folder per label with images inside")
    return _layout(files)


# -- pass 2: the images ---------------------------------------------------------------------------
def what_it_looks_like(data: bytes) -> str:
    """What a file no image decoder recognises holds instead, for the error message: Pillow's
    own ("cannot identify image file <_io.BytesIO object at 0x...>") names an object, not the
    file."""
    head = data[:4096]
    try:
        head.decode("utf-8")
        text = True
    except UnicodeDecodeError as exc:
        text = exc.start >= len(head) - 3  # only a character cut at the end of the sample
    return ("it is empty" if not data.strip() else "it holds text" if text else
            "its content matches no image format")


def _decode_into(out: npt.NDArray[np.uint8], data: bytes, name: str, shape: InputShape,
                 limits: UploadLimits) -> None:
    mode = "L" if shape.channels == 1 else "RGB"
    size = (shape.width, shape.height)
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            if image.width * image.height > limits.max_image_pixels:
                raise UploadError(f"{name!r}: {image.width}x{image.height} pixels, over the limit "
                                  f"of {limits.max_image_pixels} pixels per image")
            if image.size != size:
                image.draft(mode, size)  # JPEG only: decode at a reduced scale >= size
            image.load()
            converted = image if image.mode == mode else image.convert(mode)
            if converted.size != size:
                converted = ImageOps.fit(converted, size, method=Image.Resampling.BILINEAR)
            pixels = np.asarray(converted)
    except UploadError:
        raise
    except Image.DecompressionBombError as error:
        raise UploadError(f"{name!r}: {error}") from None
    except UnidentifiedImageError:
        raise UploadError(f"{name!r}: is not an image ({what_it_looks_like(data)}; "
                          f"{', '.join(IMAGE_FORMATS)} work)") from None
    except Exception as error:  # noqa: BLE001 (Pillow raises many kinds for bad files)
        kind = type(error).__name__
        raise UploadError(f"{name!r}: is not an image Pillow can decode "
                          f"({kind}: {error})") from None
    if shape.channels == 1:
        out[0] = pixels
    else:
        out[...] = pixels.transpose(2, 0, 1)


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: UploadLimits) -> bytes:
    try:
        with zf.open(info) as member:
            data = member.read(limits.max_file_bytes + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as error:
        raise UploadError(f"{info.filename!r}: cannot be read from the archive "
                          f"({type(error).__name__}: {error})") from None
    if len(data) > limits.max_file_bytes:  # only if zipfile ever stopped honouring file_size
        raise UploadError(f"{info.filename!r}: larger than {limits.max_file_bytes} bytes")
    return data


def decode_archive(path: str | os.PathLike[str], shape: InputShape,
                   limits: UploadLimits = DEFAULT_LIMITS) -> Decoded:
    """Validate the zip at ``path`` and decode every image to ``shape``.

    Images whose size differs from the shape are scaled to cover it (Pillow BILINEAR) and
    center-cropped (``ImageOps.fit``); JPEGs may first be decoded at a reduced scale (``draft``).
    Alpha is dropped; grayscale is Pillow's ``L`` (ITU-R 601-2 luma). ``label_names`` are sorted
    and images come in a fixed pseudo-random permutation of name order (seed 0), so the same
    archive always decodes the same way and labels are interleaved.
    """
    archive_bytes = Path(path).stat().st_size
    if archive_bytes > limits.max_archive_bytes:
        raise UploadError(f"the archive is {archive_bytes} bytes, over the limit of "
                          f"{limits.max_archive_bytes}")
    try:
        with zipfile.ZipFile(path) as zf:
            entries = plan_archive(zf, archive_bytes, limits)
            # A fixed shuffle of the name order: ids come out in this order, so any run of ids
            # mixes the labels and an allocator that hands out runs gives balanced shares.
            entries = [entries[i] for i in np.random.default_rng(0).permutation(len(entries))]
            per_image = int(np.prod(shape.array_shape))
            if len(entries) * per_image > limits.max_decoded_bytes:
                raise UploadError(f"{len(entries)} images of {shape.width}x{shape.height}x"
                                  f"{shape.channels} need {len(entries) * per_image} bytes, over "
                                  f"the limit of {limits.max_decoded_bytes}")
            label_names = tuple(sorted({e.label for e in entries}))
            if len(label_names) > MAX_LABELS:
                raise UploadError(f"{len(label_names)} label folders, over the limit of "
                                  f"{MAX_LABELS}")
            index = {name: i for i, name in enumerate(label_names)}
            images = np.empty((len(entries), *shape.array_shape), dtype=np.uint8)
            hashes: list[str] = []
            for i, entry in enumerate(entries):
                data = _read(zf, entry.info, limits)
                hashes.append(hashlib.sha256(data).hexdigest())
                _decode_into(images[i], data, entry.info.filename, shape, limits)
    except UploadError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
            ValueError, OSError) as error:
        raise UploadError(f"not a valid zip archive: {type(error).__name__}: {error}") from None
    labels = np.fromiter((index[e.label] for e in entries), dtype=np.uint32, count=len(entries))
    return Decoded(images=images, labels=labels, label_names=label_names, sha256=tuple(hashes),
                   names=tuple(e.info.filename for e in entries))
