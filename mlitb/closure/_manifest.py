"""The data manifest of a closure: content hashes of the training and test data, not the data.

Each sample is the SHA-256 of its original image file's bytes (as uploaded, before decoding) and
its label name, computed exactly as the data server does on upload (``mlitb.dataserver``'s ingest:
one folder per label, ``label/file`` or ``wrapper/label/file``, junk such as ``__MACOSX/`` skipped).
So a manifest can be built from the data server's store (``manifest_from_store``) or from an
upload zip (``manifest_from_zip``), and the two compare equal for the same files.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..dataserver import _ingest
from ..errors import ClosureError, MlitbError

SplitName = Literal["train", "test"]


@dataclass(frozen=True)
class SplitManifest:
    """The samples of one split: ``sha256[i]`` (hex) of sample i and its label name ``labels[i]``."""

    sha256: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.sha256) != len(self.labels):
            raise ClosureError(f"a split manifest needs one label per hash, got "
                               f"{len(self.sha256)} hashes and {len(self.labels)} labels")

    @property
    def count(self) -> int:
        return len(self.sha256)

    def counts(self) -> dict[str, int]:
        """Samples per label name, in order of first appearance (labels with none left out)."""
        return dict(Counter(self.labels))

    def digest(self) -> str:
        """SHA-256 over the sorted lines ``"<sha256> <label>\\n"`` (UTF-8): equal for two splits
        holding the same samples in any order."""
        h = hashlib.sha256()
        for line in sorted(f"{s} {label}\n" for s, label in zip(self.sha256, self.labels)):
            h.update(line.encode("utf-8"))
        return h.hexdigest()

    def pairs(self) -> Counter[tuple[str, str]]:
        return Counter(zip(self.sha256, self.labels))

    def __add__(self, other: SplitManifest) -> SplitManifest:
        return SplitManifest(self.sha256 + other.sha256, self.labels + other.labels)


@dataclass(frozen=True)
class DataManifest:
    """A project's data: the label names (in the data server's order) and the two splits."""

    labels: tuple[str, ...]
    train: SplitManifest = field(default_factory=SplitManifest)
    test: SplitManifest = field(default_factory=SplitManifest)

    def __post_init__(self) -> None:
        if len(set(self.labels)) != len(self.labels):
            raise ClosureError("data.labels: label names must be distinct")
        known = set(self.labels)
        for split in ("train", "test"):
            unknown = set(getattr(self, split).labels) - known
            if unknown:
                raise ClosureError(f"data.{split}: label {min(unknown)!r} is not in "
                                   "data.labels")

    def split(self, name: SplitName) -> SplitManifest:
        return self.train if name == "train" else self.test


def manifest_from_store(store_manifest: Mapping[str, Any]) -> DataManifest:
    """A manifest from the data server's ``Store.manifest(project)`` (per id: ``label`` index,
    ``split`` and ``sha256``; ``labels``: the names)."""
    try:
        labels = tuple(str(x) for x in store_manifest["labels"])
        label, split, sha = (store_manifest[k] for k in ("label", "split", "sha256"))
        if not len(label) == len(split) == len(sha):
            raise ClosureError("the store's manifest lists differ in length")
        out: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "test": ([], [])}
        for index, part, digest in zip(label, split, sha):
            hashes, names = out[part]
            hashes.append(digest)
            names.append(labels[index])
    except (KeyError, IndexError, TypeError) as exc:
        raise ClosureError(f"not a data server manifest: {type(exc).__name__}: {exc}") from None
    return DataManifest(labels, *(SplitManifest(tuple(h), tuple(n)) for h, n in out.values()))


def split_from_zip(path: str | os.PathLike[str]) -> SplitManifest:
    """The samples of an upload-format zip, hashed as the data server hashes them on upload.

    Raises ``UploadError`` for an archive the data server would refuse for its layout or size
    (the images are hashed, not decoded), ``OSError`` if it cannot be read.
    """
    limits = _ingest.DEFAULT_LIMITS
    archive_bytes = Path(path).stat().st_size
    hashes: list[str] = []
    labels: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for entry in _ingest.plan_archive(zf, archive_bytes, limits):
                h = hashlib.sha256()
                with zf.open(entry.info) as member:
                    for chunk in iter(lambda: member.read(1 << 20), b""):
                        h.update(chunk)
                hashes.append(h.hexdigest())
                labels.append(entry.label)
    except MlitbError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
            ValueError) as exc:
        raise ClosureError(f"{os.fspath(path)}: not a valid zip archive: "
                           f"{type(exc).__name__}: {exc}") from None
    return SplitManifest(tuple(hashes), tuple(labels))


def manifest_from_zip(path: str | os.PathLike[str], split: SplitName = "train") -> DataManifest:
    """A manifest holding an upload-format zip as one split (labels sorted, as the data server
    names them for a first upload)."""
    samples = split_from_zip(path)
    labels = tuple(sorted(set(samples.labels)))
    if split == "train":
        return DataManifest(labels, train=samples)
    return DataManifest(labels, test=samples)


@dataclass(frozen=True)
class ManifestMatch:
    """How a zip matched a closure's manifest: the split (``train``, ``test`` or ``all`` for both
    together) and the number of samples."""

    split: str
    count: int


def _example(items: Iterable[tuple[str, str]]) -> str:
    h, label = next(iter(items))
    return f"e.g. {h[:12]}... labelled {label!r}"


def _difference(expected: SplitManifest, actual: SplitManifest, what: str) -> str | None:
    """Why ``actual`` (from the zip) differs from ``expected`` (the manifest), or None."""
    if expected.digest() == actual.digest():
        return None
    want, have = expected.pairs(), actual.pairs()
    missing, extra = want - have, have - want
    problems = []
    relabelled = {h for h, _ in missing} & {h for h, _ in extra}
    if relabelled:
        h = min(relabelled)
        was = next(label for x, label in missing if x == h)
        now = next(label for x, label in extra if x == h)
        problems.append(f"{len(relabelled)} image(s) carry another label (e.g. {h[:12]}... is "
                        f"{now!r} in the zip, {was!r} in the manifest)")
        missing = Counter({k: n for k, n in missing.items() if k[0] not in relabelled})
        extra = Counter({k: n for k, n in extra.items() if k[0] not in relabelled})
    if missing:
        problems.append(f"{sum(missing.values())} image(s) of the manifest are not in the zip "
                        f"({_example(missing)})")
    if extra:
        problems.append(f"{sum(extra.values())} image(s) in the zip are not in the manifest "
                        f"({_example(extra)})")
    return (f"the zip's {actual.count} images do not match the {what} "
            f"({expected.count} images): " + "; ".join(problems))


def compare_split(expected: SplitManifest, actual: SplitManifest, what: str = "manifest") -> None:
    """Raise ClosureError describing how ``actual`` differs from ``expected`` (same multiset of
    ``(sha256, label)`` pairs required; order does not matter)."""
    problem = _difference(expected, actual, what)
    if problem:
        raise ClosureError(problem)


def match_manifest(manifest: DataManifest, samples: SplitManifest,
                   split: Literal["train", "test", "all"] | None = None) -> ManifestMatch:
    """Check ``samples`` against the manifest's ``split`` (``all``: train and test together);
    with ``split=None``, against whichever of train, test or all it matches. Raises ClosureError
    naming the differences (against the closest candidate when no split was given)."""
    candidates: Sequence[tuple[str, SplitManifest, str]] = [
        ("train", manifest.train, "training data"),
        ("test", manifest.test, "test data"),
        ("all", manifest.train + manifest.test, "training and test data together")]
    if split is not None:
        candidates = [c for c in candidates if c[0] == split]
        if not candidates:
            raise ClosureError(f"split must be train, test or all, got {split!r}")
    for name, expected, what in candidates:
        if _difference(expected, samples, what) is None:
            return ManifestMatch(name, samples.count)
    have = samples.pairs()
    name, expected, what = max(candidates, key=lambda c: (sum((c[1].pairs() & have).values()),
                                                          c[0] == "train"))
    compare_split(expected, samples, what)
    raise AssertionError("unreachable")  # pragma: no cover
