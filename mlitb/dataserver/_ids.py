"""A compact text encoding of data-id lists: ``"0-499,700,702"``.

Items are separated by commas; an item is an id (``700``) or an inclusive run (``0-499``, first <=
last). Ids are decimal integers from 0 to 2**32 - 1 with no sign, spaces or leading ``+``. Order is
kept (``"5,1-2"`` is ``[5, 1, 2]``) and an id may appear only once. The empty string is no ids.
Allocations are mostly runs, so a node's whole share usually fits in a short query string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from mlitb.protocol import MAX_U32

_ITEM = re.compile(r"(\d{1,10})(?:-(\d{1,10}))?")


def parse_ids(text: str, *, max_count: int) -> npt.NDArray[np.int64]:
    """Decode ``text`` into an int64 array, checking syntax, bounds, duplicates and ``max_count``
    (before expanding any run). Raises ``ValueError`` with a message naming the bad item."""
    text = text.strip()
    if not text:
        return np.empty(0, dtype=np.int64)
    runs: list[tuple[int, int]] = []
    total = 0
    for item in text.split(","):
        match = _ITEM.fullmatch(item.strip())
        if match is None:
            raise ValueError(f"ids: {item.strip()[:40]!r} is not an id or a run 'first-last'")
        first = int(match[1])
        last = first if match[2] is None else int(match[2])
        if last > MAX_U32:
            raise ValueError(f"ids: {item.strip()!r} is over the largest id {MAX_U32}")
        if last < first:
            raise ValueError(f"ids: run {item.strip()!r} ends before it starts")
        total += last - first + 1
        if total > max_count:
            raise ValueError(f"ids: more than {max_count} ids in one request; split it")
        runs.append((first, last))
    ids = np.concatenate([np.arange(a, b + 1, dtype=np.int64) for a, b in runs])
    if len(np.unique(ids)) != len(ids):
        values, counts = np.unique(ids, return_counts=True)
        raise ValueError(f"ids: id {int(values[counts > 1][0])} is listed more than once")
    return ids


def format_ids(ids: Iterable[int] | npt.NDArray[np.integer]) -> str:
    """Encode ids (in their order) with every run of consecutive ids as ``first-last``."""
    array = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
    if array.size == 0:
        return ""
    breaks = np.flatnonzero(np.diff(array) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [array.size])) - 1
    return ",".join(
        str(array[s]) if s == e else f"{array[s]}-{array[e]}"
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
    )
