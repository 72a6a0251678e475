"""What an upload adds to a project, computed the same way for every store: the checks (shape,
id range, label list, label limit), the new records and the new manifest. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mlitb.protocol import MAX_LABELS, MAX_U32

from ._errors import LabelConflictError, ShapeMismatchError, StoreError
from ._files import FORMAT, RECORD
from ._ingest import Decoded, InputShape

SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True, eq=False)
class Plan:
    """An upload's new rows: ids ``first`` … ``first + len(records) - 1``."""

    first: int
    records: npt.NDArray[Any]
    manifest: dict[str, Any]
    """The project's manifest once the upload is committed (docs/dataserver.md)."""
    labels: tuple[str, ...]


def describe(shape: InputShape) -> str:
    return f"{shape.width}x{shape.height}x{shape.channels} (width x height x channels)"


def manifest_shape(manifest: dict[str, Any]) -> InputShape:
    return InputShape.from_array_shape(tuple(int(d) for d in manifest["shape"]))


def plan_upload(project: str, old: dict[str, Any] | None, decoded: Decoded, split: str,
                labels: Sequence[str] | None) -> Plan:
    """Check ``decoded`` against the committed manifest ``old`` (None: a new project) and
    compute what committing it writes. ``labels``: the model's label list (see ``Store.add``).
    Raises ``ShapeMismatchError``, ``LabelConflictError`` or ``StoreError``; nothing is
    written by anyone before these checks pass."""
    n = len(decoded)
    shape = InputShape.from_array_shape(decoded.images.shape[1:])
    if old is not None and manifest_shape(old) != shape:
        raise ShapeMismatchError(
            f"project {project!r} stores {describe(manifest_shape(old))} images; this upload "
            f"is {describe(shape)}")
    first = 0 if old is None else int(old["count"])
    if first + n - 1 > MAX_U32:
        raise StoreError(f"project {project!r}: {n} more ids would pass the largest id")
    stored: tuple[str, ...] = () if old is None else tuple(old["labels"])
    if labels is not None:
        planned = tuple(labels)
        if planned[:len(stored)] != stored or len(set(planned)) != len(planned):
            raise LabelConflictError(
                f"project {project!r}: the stored labels {list(stored[:8])} are not "
                f"the model's {list(planned[:8])} in the same order; nothing was stored")
        stored = planned
    names = stored + tuple(name for name in decoded.label_names if name not in stored)
    if len(names) > MAX_LABELS:
        raise StoreError(f"project {project!r}: {len(names)} labels, over the limit "
                         f"of {MAX_LABELS}")
    position = {name: i for i, name in enumerate(names)}
    remap = np.array([position[name] for name in decoded.label_names], dtype=np.uint32)
    records = np.empty(n, dtype=RECORD)
    records["label"] = remap[decoded.labels]
    records["split"] = SPLITS.index(split)
    records["sha256"] = np.frombuffer(
        bytes.fromhex("".join(decoded.sha256)), dtype=np.uint8).reshape(n, 32)
    counts = {s: dict(old["counts"][s]) if old else {} for s in SPLITS}
    for name, k in decoded.label_counts().items():
        counts[split][name] = counts[split].get(name, 0) + k
    manifest = {"format": FORMAT, "version": 1, "project": project,
                "shape": list(shape.array_shape), "labels": list(names),
                "count": first + n, "counts": counts}
    return Plan(first=first, records=records, manifest=manifest, labels=names)
