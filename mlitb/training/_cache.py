"""A worker's in-memory data cache: uint8 images and label indices, keyed by data id.

The cache keeps what the worker has downloaded and knows which of those ids are *allocated* to it
(its share: training ids for a trainer, test ids for a stats worker). Computation uses only ids
that are both cached and allocated; ids that left the share stay cached (the master prefers
workers that cached an id when it re-allocates it) until ``evict_inactive`` drops them.

Rows are stored in arrival order in arrays that grow by doubling. The invariant that makes
``snapshot()`` safe to read from another thread without a lock: **a row below ``len(self)`` is
never written again**. Appends go past the count (into spare capacity, or into a new array when it
is full), and eviction builds new arrays instead of moving rows in place, so a snapshot taken
before a mutation keeps seeing exactly the data it was taken with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..datasets import pixels_to_input

Shape = tuple[int, int, int]
IdArray = npt.NDArray[np.int64]

_MIN_CAPACITY = 64


def as_ids(ids: Iterable[int] | npt.NDArray[np.integer]) -> IdArray:
    """Ids as a 1-D int64 array (a list, a tuple or any integer array)."""
    if isinstance(ids, np.ndarray):
        return ids.astype(np.int64, copy=False).reshape(-1)
    return np.fromiter(ids, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class CacheView:
    """An immutable view of the usable part of a cache at one moment.

    ``rows`` index ``images``/``labels`` and list the cached rows whose ids are allocated, in row
    order; ``ids[rows]`` are their data ids. Safe to read while the cache keeps changing.
    """

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    ids: IdArray
    rows: npt.NDArray[np.intp]

    def __len__(self) -> int:
        return int(self.rows.size)

    def batch(self, rows: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.float32],
                                                          npt.NDArray[np.int64]]:
        """Network inputs and class indices of the given rows (taken from ``self.rows``)."""
        return pixels_to_input(self.images[rows]), self.labels[rows]

    def sorted_rows(self) -> npt.NDArray[np.intp]:
        """The usable rows ordered by data id: an order that does not depend on arrival order."""
        return self.rows[np.argsort(self.ids[self.rows], kind="stable")]

    def subset(self, count: int) -> CacheView:
        """The view of the ``count`` usable rows with the smallest ids: the same subset for the
        same data, whenever it arrived (the data server numbers a shuffled upload, so the
        smallest ids are a sample of every class)."""
        return CacheView(images=self.images, labels=self.labels, ids=self.ids,
                         rows=self.sorted_rows()[:max(0, count)])


class DataCache:
    """Downloaded data vectors of one project (one input shape), and the worker's allocation."""

    def __init__(self, shape: Shape, *, capacity: int = 0) -> None:
        self.shape: Shape = tuple(int(d) for d in shape)  # type: ignore[assignment]
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"cache shape must be (depth, height, width), got {shape}")
        capacity = max(int(capacity), _MIN_CAPACITY)
        self._images = np.empty((capacity, *self.shape), dtype=np.uint8)
        self._labels = np.empty(capacity, dtype=np.int64)
        self._ids = np.empty(capacity, dtype=np.int64)
        self._active = np.zeros(capacity, dtype=bool)
        self._count = 0
        self._row: dict[int, int] = {}          # data id -> row
        self._allocated: set[int] = set()

    # -- facts --------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Ids cached (allocated or not)."""
        return self._count

    def __contains__(self, data_id: object) -> bool:
        return data_id in self._row

    @property
    def capacity(self) -> int:
        return int(self._images.shape[0])

    @property
    def vector_bytes(self) -> int:
        return int(np.prod(self.shape))

    @property
    def allocated(self) -> int:
        """Ids in the worker's share."""
        return len(self._allocated)

    @property
    def usable(self) -> int:
        """Ids both allocated and cached: what computation can use now."""
        return int(np.count_nonzero(self._active[:self._count]))

    @property
    def inactive(self) -> int:
        """Ids cached but no longer allocated."""
        return self._count - self.usable

    def cached_ids(self) -> IdArray:
        """Every cached id, in row order (a copy)."""
        return self._ids[:self._count].copy()

    def missing(self) -> IdArray:
        """Allocated ids not cached yet, sorted."""
        missing = [i for i in self._allocated if i not in self._row]
        return np.sort(np.asarray(missing, dtype=np.int64))

    def is_allocated(self, data_id: int) -> bool:
        return data_id in self._allocated

    # -- the allocation -----------------------------------------------------------------------
    def allocate(self, added: Iterable[int] | npt.NDArray[np.integer] = (),
                 removed: Iterable[int] | npt.NDArray[np.integer] = ()) -> IdArray:
        """Apply an ``allocation`` message; return the added ids that still need downloading."""
        removed_a, added_a = as_ids(removed), as_ids(added)
        for data_id in removed_a.tolist():
            self._allocated.discard(data_id)
            row = self._row.get(data_id)
            if row is not None:
                self._active[row] = False
        need: list[int] = []
        for data_id in added_a.tolist():
            self._allocated.add(data_id)
            row = self._row.get(data_id)
            if row is None:
                need.append(data_id)
            else:
                self._active[row] = True
        return np.asarray(need, dtype=np.int64)

    def clear_allocation(self) -> None:
        """Forget the allocation (a new connection gets a fresh one); keep the data."""
        self._allocated.clear()
        self._active[:self._count] = False

    def reserve(self, capacity: int) -> None:
        """Make room for ``capacity`` ids without regrowing (e.g. the allocation's ``total``)."""
        if capacity > self.capacity:
            self._grow(capacity)

    # -- data ---------------------------------------------------------------------------------
    def add(self, ids: Iterable[int] | npt.NDArray[np.integer],
            labels: npt.ArrayLike, pixels: npt.NDArray[np.uint8]) -> IdArray:
        """Store downloaded vectors (``pixels``: uint8 ``(n, depth, height, width)``); ids cached
        already are skipped. Returns the ids newly cached, in the order given."""
        ids_a = as_ids(ids)
        labels_a = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
        n = ids_a.size
        if pixels.dtype != np.uint8 or pixels.shape != (n, *self.shape):
            raise ValueError(f"pixels must be uint8 of shape {(n, *self.shape)}, got "
                             f"{pixels.dtype} {pixels.shape}")
        if labels_a.shape != (n,):
            raise ValueError(f"need {n} labels, got {labels_a.shape}")
        if labels_a.size and labels_a.min() < 0:
            raise ValueError("labels must be class indices >= 0")
        fresh = np.ones(n, dtype=bool)
        seen: set[int] = set()
        for k, data_id in enumerate(ids_a.tolist()):
            if data_id in self._row or data_id in seen:
                fresh[k] = False
            seen.add(data_id)
        new_ids = ids_a[fresh]
        m = new_ids.size
        if m == 0:
            return new_ids
        if self._count + m > self.capacity:
            self._grow(max(self._count + m, 2 * self.capacity))
        start, stop = self._count, self._count + m
        self._images[start:stop] = pixels[fresh]
        self._labels[start:stop] = labels_a[fresh]
        self._ids[start:stop] = new_ids
        active = np.fromiter((i in self._allocated for i in new_ids.tolist()), dtype=bool,
                             count=m)
        self._active[start:stop] = active
        for row, data_id in enumerate(new_ids.tolist(), start):
            self._row[data_id] = row
        self._count = stop  # last: rows below the count are complete
        return new_ids

    def evict(self, ids: Iterable[int] | npt.NDArray[np.integer]) -> IdArray:
        """Drop cached ids (allocated or not); returns those that were cached."""
        drop = [i for i in as_ids(ids).tolist() if i in self._row]
        if drop:
            keep = np.ones(self._count, dtype=bool)
            keep[[self._row[i] for i in drop]] = False
            self._compact(keep)
        return np.asarray(drop, dtype=np.int64)

    def evict_inactive(self, keep_at_most: int = 0) -> IdArray:
        """Drop cached ids that are no longer allocated, oldest first, until at most
        ``keep_at_most`` of them remain; returns the ids dropped."""
        inactive_rows = np.flatnonzero(~self._active[:self._count])
        excess = inactive_rows.size - max(keep_at_most, 0)
        if excess <= 0:
            return np.empty(0, dtype=np.int64)
        drop_rows = inactive_rows[:excess]
        dropped = self._ids[drop_rows].copy()
        keep = np.ones(self._count, dtype=bool)
        keep[drop_rows] = False
        self._compact(keep)
        return dropped

    def clear(self) -> IdArray:
        """Drop every cached id (e.g. the input shape changed); returns them."""
        dropped = self.cached_ids()
        self._compact(np.zeros(self._count, dtype=bool))
        return dropped

    def snapshot(self) -> CacheView:
        """The usable rows now; stays valid (and unchanged) whatever happens to the cache."""
        n = self._count
        return CacheView(images=self._images, labels=self._labels, ids=self._ids,
                         rows=np.flatnonzero(self._active[:n]))

    # -- storage ------------------------------------------------------------------------------
    def _grow(self, capacity: int) -> None:
        n = self._count
        images = np.empty((capacity, *self.shape), dtype=np.uint8)
        labels = np.empty(capacity, dtype=np.int64)
        ids = np.empty(capacity, dtype=np.int64)
        active = np.zeros(capacity, dtype=bool)
        images[:n], labels[:n], ids[:n], active[:n] = (
            self._images[:n], self._labels[:n], self._ids[:n], self._active[:n])
        self._images, self._labels, self._ids, self._active = images, labels, ids, active

    def _compact(self, keep: npt.NDArray[np.bool_]) -> None:
        """Keep the rows marked in ``keep`` (in order), in new arrays: snapshots stay intact."""
        n = self._count
        capacity = self.capacity
        m = int(np.count_nonzero(keep))
        images = np.empty((capacity, *self.shape), dtype=np.uint8)
        labels = np.empty(capacity, dtype=np.int64)
        ids = np.empty(capacity, dtype=np.int64)
        active = np.zeros(capacity, dtype=bool)
        images[:m] = self._images[:n][keep]
        labels[:m] = self._labels[:n][keep]
        ids[:m] = self._ids[:n][keep]
        active[:m] = self._active[:n][keep]
        self._images, self._labels, self._ids, self._active = images, labels, ids, active
        self._count = m
        self._row = {data_id: row for row, data_id in enumerate(ids[:m].tolist())}
