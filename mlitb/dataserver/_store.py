"""The embedded data store: one directory per project, append-only, committed by one rename.

Layout under ``root`` (docs/dataserver.md describes the same; ``_files`` reads and writes it)::

    .tmp/                 spooled uploads and deleted projects; emptied when a Store opens
    <project>/
      manifest.json       the commit point: shape, label names, id count, counts per split and label
      images.u8           raw uint8, C order, shape (count, channels, height, width)
      records.bin         one 37-byte record per id: label uint32 LE, split uint8, sha256 32 bytes

Ids are the row numbers 0..count-1, assigned in upload order. ``add`` appends to both data files
beyond the committed count, fsyncs them, then replaces manifest.json (write to a temp file +
``os.replace``). Bytes past ``count`` are uncommitted: a failed add truncates them at once and a
crashed one is truncated when the store is next opened, so readers only ever see committed data.
Committed bytes are never rewritten, which is what lets ``get`` read from memory maps without locks.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np
import numpy.typing as npt

from mlitb.protocol import MAX_NAME_LENGTH

from . import _files
from ._errors import (
    ProjectDeletedError,
    StoreError,
    UnknownIdsError,
    UnknownProjectError,
)
from ._files import RECORD
from ._ids import format_ids
from ._ingest import Decoded, InputShape
from ._plan import plan_upload

Split = Literal["train", "test"]
SPLITS: Final[tuple[Split, ...]] = get_args(Split)
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME_LENGTH - 1}}}")


@dataclass(frozen=True, eq=False)
class Registration:
    """What one committed upload added: what the data server registers with the master.

    ``labels[i]`` is the label of ``ids[i]``, an index into ``label_names``: the project's whole
    label list after the upload (old labels keep their index; new ones were appended)."""

    project: str
    split: Split
    ids: range
    labels: npt.NDArray[np.uint32]
    label_names: tuple[str, ...]


@dataclass(frozen=True)
class DatasetInfo:
    project: str
    shape: InputShape
    labels: tuple[str, ...]
    count: int
    counts: dict[str, dict[str, int]]
    """split -> label -> number of ids."""
    ids: dict[str, str]
    """split -> its ids in the range encoding of ``mlitb.dataserver.format_ids``."""

    def to_json(self) -> dict[str, Any]:
        s = self.shape
        return {"project": self.project, "labels": list(self.labels), "count": self.count,
                "shape": {"width": s.width, "height": s.height, "channels": s.channels},
                "train": sum(self.counts["train"].values()),
                "test": sum(self.counts["test"].values()),
                "counts": self.counts, "ids": self.ids}


@dataclass(frozen=True, eq=False)
class _Project:
    """A committed snapshot; ``add`` replaces it with a new one (readers keep theirs)."""

    manifest: dict[str, Any]
    shape: InputShape
    labels: tuple[str, ...]
    images: npt.NDArray[np.uint8]
    records: npt.NDArray[Any]

    @property
    def count(self) -> int:
        return len(self.records)


def check_project_name(project: str) -> None:
    if not isinstance(project, str) or not _NAME.fullmatch(project):
        raise StoreError(f"project name {project!r:.80}: must be 1-{MAX_NAME_LENGTH} characters "
                         "from A-Z a-z 0-9 _ . - starting with a letter or digit")


def check_addition(project: str, split: str, decoded: Decoded) -> None:
    """What every store refuses before looking at its data: a bad name or split, no images."""
    check_project_name(project)
    if split not in SPLITS:
        raise StoreError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if len(decoded) == 0:
        raise StoreError(f"project {project!r}: an upload needs at least one image")


class Store:
    """Datasets of many projects under ``root``; safe to share between threads."""

    identity: str | None = None
    """A directory is one data server's own store: no other data server shares it."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / ".tmp"
        self._fsync = fsync
        self._lock = threading.Lock()
        self._projects: dict[str, _Project] = {}
        self._generations: dict[str, int] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir()
        for directory in sorted(self.root.iterdir()):
            if directory.is_dir() and _NAME.fullmatch(directory.name):
                manifest = _files.recover(directory)
                if manifest is not None:
                    self._projects[directory.name] = _map(directory, manifest)

    # -- reading --------------------------------------------------------------------------------
    def projects(self) -> list[str]:
        return sorted(self._projects)

    def _project(self, project: str) -> _Project:
        check_project_name(project)
        state = self._projects.get(project)
        if state is None:
            raise UnknownProjectError(f"project {project!r}: no data has been uploaded")
        return state

    def shape(self, project: str) -> InputShape | None:
        """The project's input shape, or None before its first upload."""
        state = self._projects.get(project)
        return None if state is None else state.shape

    def get(self, project: str, ids: Sequence[int] | npt.NDArray[np.integer]
            ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint32]]:
        """Images ``(n, channels, height, width)`` and labels of ``ids``, in their order."""
        state = self._project(project)
        index = np.asarray(ids, dtype=np.int64).reshape(-1)
        unknown = index[(index < 0) | (index >= state.count)]
        if unknown.size:
            shown = tuple(int(i) for i in unknown[:10])
            raise UnknownIdsError(f"project {project!r} has ids 0-{state.count - 1}; "
                                  f"{unknown.size} unknown id(s): {format_ids(shown)}", shown)
        images = np.take(state.images, index, axis=0)
        labels = state.records["label"][index].astype(np.uint32)
        return images, labels

    def ids(self, project: str, split: Split | None = None) -> npt.NDArray[np.int64]:
        """All ids of the project, or of one split, in increasing order."""
        return _ids(self._project(project), split)

    def info(self, project: str) -> DatasetInfo:
        return _info(project, self._project(project))

    def manifest(self, project: str) -> dict[str, Any]:
        """``info`` plus, per id, its label index, split and the sha256 of its original file (the
        data manifest of a research closure)."""
        state = self._project(project)
        hashes = state.records["sha256"].tobytes().hex()
        return {**_info(project, state).to_json(), "label": state.records["label"].tolist(),
                "split": [SPLITS[s] for s in state.records["split"].tolist()],
                "sha256": [hashes[i:i + 64] for i in range(0, len(hashes), 64)]}

    # -- writing --------------------------------------------------------------------------------
    def labels_with(self, project: str, names: Sequence[str]) -> tuple[str, ...]:
        """The project's label list as ``add`` would make it for an upload naming ``names``
        (the stored labels, then the new ones in the upload's order)."""
        state = self._projects.get(project)
        labels: tuple[str, ...] = () if state is None else state.labels
        return labels + tuple(name for name in names if name not in labels)

    def generation(self, project: str) -> int:
        """How many times the project was deleted: ``add(generation=...)`` refuses an upload
        that began before a delete."""
        return self._generations.get(project, 0)

    def add(self, project: str, decoded: Decoded, split: Split = "train", *,
            labels: Sequence[str] | None = None, generation: int | None = None) -> Registration:
        """Append a decoded upload as new ids; all of it is committed, or none of it.

        ``labels``: the project's label list as its model numbers it (the master's
        ``plan_labels``): the stored labels must be a prefix of it and it must name every label
        of the upload; it becomes the stored list (before any new label of the upload), so a
        label's index here is its output's index in the model. Otherwise
        ``LabelConflictError`` and nothing is stored."""
        check_addition(project, split, decoded)
        n = len(decoded)
        with self._lock:
            if generation is not None and generation != self.generation(project):
                raise ProjectDeletedError(f"project {project!r} was deleted while this upload "
                                          "was being read; nothing was stored")
            old = self._projects.get(project)
            plan = plan_upload(project, old.manifest if old is not None else None, decoded,
                               split, labels)
            self._projects[project] = self._commit(project, old, decoded.images, plan.records,
                                                   plan.manifest)
        registered = plan.records["label"].copy()
        registered.flags.writeable = False
        return Registration(project=project, split=split,
                            ids=range(plan.first, plan.first + n),
                            labels=registered, label_names=plan.labels)

    def _commit(self, project: str, old: _Project | None, images: npt.NDArray[np.uint8],
                records: npt.NDArray[Any], manifest: dict[str, Any]) -> _Project:
        directory = self.root / project
        committed, row_bytes = 0 if old is None else old.count, int(np.prod(images.shape[1:]))
        try:
            directory.mkdir(exist_ok=True)
            _files.append(directory / _files.IMAGES, committed * row_bytes, images,
                          fsync=self._fsync)
            _files.append(directory / _files.RECORDS, committed * RECORD.itemsize, records,
                          fsync=self._fsync)
            _files.write_manifest(directory, manifest, fsync=self._fsync)
        except BaseException as error:
            _files.roll_back(directory, committed, row_bytes)
            if isinstance(error, OSError):
                raise StoreError(f"project {project!r}: could not store the upload: "
                                 f"{error}") from error
            raise
        return _map(directory, manifest)

    def delete(self, project: str) -> None:
        """Forget the project and remove its files (readers holding ids see them vanish)."""
        with self._lock:
            self._project(project)
            del self._projects[project]
            self._generations[project] = self.generation(project) + 1
            grave = self.tmp_dir / f"deleted-{project}-{uuid.uuid4().hex}"
            os.replace(self.root / project, grave)
        shutil.rmtree(grave, ignore_errors=True)


def _ids(state: _Project, split: Split | None) -> npt.NDArray[np.int64]:
    if split is None:
        return np.arange(state.count, dtype=np.int64)
    return np.flatnonzero(state.records["split"] == SPLITS.index(split)).astype(np.int64)


def _info(project: str, state: _Project) -> DatasetInfo:
    counts = {split: dict(c) for split, c in state.manifest["counts"].items()}
    return DatasetInfo(project=project, shape=state.shape, labels=state.labels,
                       count=state.count, counts=counts,
                       ids={split: format_ids(_ids(state, split)) for split in SPLITS})


def _map(directory: Path, manifest: dict[str, Any]) -> _Project:
    images, records = _files.map_arrays(directory, manifest)
    return _Project(manifest=manifest, shape=InputShape.from_array_shape(images.shape[1:]),
                    labels=tuple(manifest["labels"]), images=images, records=records)
