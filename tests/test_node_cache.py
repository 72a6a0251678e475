"""The node's data cache: allocation bookkeeping, growth, eviction, and snapshots that stay put."""

from __future__ import annotations

import numpy as np
import pytest

from mlitb.datasets import pixels_to_input as to_float
from mlitb.datasets import to_input
from mlitb.training import DataCache

SHAPE = (3, 4, 5)


def pixels_of(ids: list[int] | np.ndarray) -> np.ndarray:
    """Deterministic pixels: every byte of vector ``i`` is ``i % 251``."""
    ids = np.asarray(ids)
    return np.broadcast_to((ids % 251).astype(np.uint8)[:, None, None, None],
                           (ids.size, *SHAPE)).copy()


def fill(cache: DataCache, ids: list[int]) -> np.ndarray:
    return cache.add(ids, [i % 10 for i in ids], pixels_of(ids))


def test_allocation_and_usable_rows() -> None:
    cache = DataCache(SHAPE)
    need = cache.allocate(added=[1, 2, 3, 4])
    assert need.tolist() == [1, 2, 3, 4]
    assert (cache.allocated, cache.usable, len(cache)) == (4, 0, 0)
    assert fill(cache, [2, 4, 9]).tolist() == [2, 4, 9]  # 9: cached but not allocated
    assert (cache.allocated, cache.usable, len(cache), cache.inactive) == (4, 2, 3, 1)
    assert cache.missing().tolist() == [1, 3]
    view = cache.snapshot()
    assert sorted(view.ids[view.rows].tolist()) == [2, 4]
    # Already cached ids are skipped, duplicates in one batch too.
    assert fill(cache, [2, 3, 3]).tolist() == [3]
    assert cache.usable == 3


def test_removed_ids_stay_cached_and_come_back_without_download() -> None:
    cache = DataCache(SHAPE)
    cache.allocate(added=range(10))
    fill(cache, list(range(10)))
    cache.allocate(removed=[0, 1, 2])
    assert (cache.allocated, cache.usable, len(cache)) == (7, 7, 10)
    need = cache.allocate(added=[1, 20])
    assert need.tolist() == [20]  # 1 is cached already
    assert cache.usable == 8


def test_growth_keeps_data_and_labels() -> None:
    cache = DataCache(SHAPE, capacity=1)
    ids = list(range(1000))
    cache.allocate(added=ids)
    for start in range(0, 1000, 37):
        fill(cache, ids[start:start + 37])
    assert len(cache) == 1000 and cache.capacity >= 1000
    view = cache.snapshot()
    rows = view.sorted_rows()
    assert view.ids[rows].tolist() == ids
    x, y = view.batch(rows)
    assert y.tolist() == [i % 10 for i in ids]
    assert np.array_equal(x, to_float(pixels_of(ids)))


def test_reserve_avoids_regrowth() -> None:
    cache = DataCache(SHAPE)
    cache.reserve(50_000)
    images = cache.snapshot().images
    cache.allocate(added=range(50_000))
    fill(cache, list(range(50_000)))
    assert cache.snapshot().images is images


def test_evict_and_evict_inactive() -> None:
    cache = DataCache(SHAPE)
    cache.allocate(added=range(6))
    fill(cache, list(range(6)))
    assert cache.evict([1, 7]).tolist() == [1]
    assert 1 not in cache and len(cache) == 5
    assert cache.missing().tolist() == [1]
    cache.allocate(removed=[0, 2, 3])
    assert cache.evict_inactive(keep_at_most=1).tolist() == [0, 2]  # oldest first
    assert sorted(cache.cached_ids().tolist()) == [3, 4, 5]
    assert cache.evict_inactive(keep_at_most=1).size == 0
    view = cache.snapshot()
    x, y = view.batch(view.sorted_rows())
    assert y.tolist() == [4, 5]
    assert np.array_equal(x, to_float(pixels_of([4, 5])))
    assert sorted(cache.clear().tolist()) == [3, 4, 5] and len(cache) == 0


def test_snapshot_is_unchanged_by_later_mutations() -> None:
    cache = DataCache(SHAPE, capacity=4)
    cache.allocate(added=range(100))
    fill(cache, [0, 1, 2, 3])
    view = cache.snapshot()
    before = view.batch(view.rows)
    fill(cache, list(range(4, 100)))  # grows into new arrays
    cache.evict([0, 2])               # compacts into new arrays
    cache.allocate(removed=[1])       # deactivates
    after = view.batch(view.rows)
    assert len(view) == 4
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert view.ids[view.rows].tolist() == [0, 1, 2, 3]


def test_clear_allocation_keeps_data() -> None:
    cache = DataCache(SHAPE)
    cache.allocate(added=[5, 6])
    fill(cache, [5, 6])
    cache.clear_allocation()
    assert (cache.allocated, cache.usable, len(cache)) == (0, 0, 2)
    assert cache.allocate(added=[5]).size == 0 and cache.usable == 1


def test_scaling_matches_datasets_to_input() -> None:
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, size=(7, 4, 5, 3), dtype=np.uint8)
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    assert np.array_equal(to_float(nchw), to_input(nhwc))


def test_bad_input_is_refused() -> None:
    cache = DataCache(SHAPE)
    with pytest.raises(ValueError, match="pixels"):
        cache.add([1], [0], np.zeros((1, 3, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="labels"):
        cache.add([1], [0, 1], pixels_of([1]))
    with pytest.raises(ValueError, match="shape"):
        DataCache((0, 1, 1))


def test_cifar_sized_cache() -> None:
    """50,000 CIFAR-shaped vectors, as a trainer caches them, in batches."""
    cache = DataCache((3, 32, 32))
    ids = np.arange(50_000)
    cache.allocate(added=ids)
    cache.reserve(50_000)
    batch = np.zeros((2048, 3, 32, 32), dtype=np.uint8)
    for start in range(0, 50_000, 2048):
        part = ids[start:start + 2048]
        cache.add(part, part % 10, batch[:part.size])
    assert cache.usable == 50_000 and cache.missing().size == 0
    assert cache.snapshot().images.nbytes >= 50_000 * 3072
