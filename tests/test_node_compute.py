"""Budgeted gradient computation and evaluation: fake clocks, reproducibility, exact sums."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlitb.datasets import DIGITS_SPEC, digits
from mlitb.nn import BatchStats, Net
from mlitb.training import CacheView, DataCache
from mlitb.training._compute import (
    MAX_BATCH,
    Pacer,
    Passes,
    compute_gradient,
    deterministic_order,
    evaluate,
)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    train, _, _ = digits()
    pixels = np.ascontiguousarray(train.images[:300].transpose(0, 3, 1, 2))
    return pixels, train.labels[:300]


def make_cache(data: tuple[np.ndarray, np.ndarray], ids: np.ndarray | None = None) -> DataCache:
    pixels, labels = data
    ids = np.arange(len(labels)) if ids is None else ids
    cache = DataCache((1, 8, 8))
    cache.allocate(added=ids)
    cache.add(ids, labels[ids], pixels[ids])
    return cache


class FakeClock:
    """Time advances only when the net computes: ``per_sample`` seconds per sample."""

    def __init__(self, net: Net, per_sample: float) -> None:
        self.now = 100.0
        self.calls = 0
        original = net.accumulate_gradient

        def accumulate(x: np.ndarray, y: np.ndarray) -> BatchStats:
            self.now += per_sample * len(x)
            self.calls += 1
            return original(x, y)

        net.accumulate_gradient = accumulate  # type: ignore[method-assign]

    def __call__(self) -> float:
        return self.now


def test_empty_cache_gives_zero_samples_and_zero_vector() -> None:
    net = Net(DIGITS_SPEC, seed=0)
    net.grads[:] = 1.0  # stale gradients must not leak into the result
    view = DataCache((1, 8, 8)).snapshot()
    for kwargs in ({"seconds": 1.0}, {"samples": 10}):
        result = compute_gradient(net, view, **kwargs)  # type: ignore[arg-type]
        assert result.samples == 0 and result.correct == 0 and result.loss_sum == 0.0
        assert result.vector.shape == (net.num_params,) and not result.vector.any()
        assert result.loss is None


@pytest.mark.parametrize("per_sample", [1e-4, 1e-3, 0.02])
@pytest.mark.parametrize("budget", [0.005, 0.1, 2.0])
def test_time_budget_is_respected(data: tuple[np.ndarray, np.ndarray], per_sample: float,
                                  budget: float) -> None:
    net = Net(DIGITS_SPEC, seed=0)
    clock = FakeClock(net, per_sample)
    pacer = Pacer()
    cache = make_cache(data)
    for _ in range(3):  # the pacer learns the rate on the first order and keeps it
        result = compute_gradient(net, cache.snapshot(), seconds=budget, clock=clock,
                                  pacer=pacer, rng=np.random.default_rng(0))
        assert result.samples >= 1
        # At most the first batch (8 samples, before the rate is known) may overshoot.
        assert result.compute_seconds <= max(budget, 8 * per_sample) + 1e-9
        assert result.samples <= budget / per_sample + 8
    # Once the rate is known, the budget is used nearly completely.
    if budget / per_sample >= 8:
        assert result.compute_seconds >= budget - MAX_BATCH * per_sample
        assert result.compute_seconds <= budget + 1e-9


def test_one_sample_at_least_when_the_budget_is_tiny(
        data: tuple[np.ndarray, np.ndarray]) -> None:
    net = Net(DIGITS_SPEC, seed=0)
    clock = FakeClock(net, 0.01)
    pacer = Pacer(rate=100.0)
    result = compute_gradient(net, make_cache(data).snapshot(), seconds=0.001, clock=clock,
                              pacer=pacer)
    assert result.samples == 1


def test_should_stop_ends_early(data: tuple[np.ndarray, np.ndarray]) -> None:
    net = Net(DIGITS_SPEC, seed=0)
    clock = FakeClock(net, 1e-3)
    result = compute_gradient(net, make_cache(data).snapshot(), seconds=10.0, clock=clock,
                              should_stop=lambda: clock.calls >= 3)
    assert clock.calls == 3 and result.samples > 0


def test_deterministic_mode_is_reproducible_bit_for_bit(
        data: tuple[np.ndarray, np.ndarray]) -> None:
    ids = np.arange(300)
    a = make_cache(data, ids)
    # The same ids arriving in another order, with some extra inactive ones.
    b = DataCache((1, 8, 8))
    b.allocate(added=ids)
    pixels, labels = data
    shuffled = np.random.default_rng(5).permutation(300)
    for part in np.array_split(shuffled, 7):
        b.add(part, labels[part], pixels[part])
    results = []
    for cache in (a, b, a):
        net = Net(DIGITS_SPEC, seed=1)
        results.append(compute_gradient(net, cache.snapshot(), samples=450, seed=3,
                                        iteration=17))
    for r in results[1:]:
        assert r.samples == 450
        assert r.vector.tobytes() == results[0].vector.tobytes()
        assert (r.loss_sum, r.correct) == (results[0].loss_sum, results[0].correct)
    other = compute_gradient(Net(DIGITS_SPEC, seed=1), a.snapshot(), samples=450, seed=3,
                             iteration=18)
    assert other.vector.tobytes() != results[0].vector.tobytes()


def test_deterministic_order_covers_every_id_each_pass(
        data: tuple[np.ndarray, np.ndarray]) -> None:
    view = make_cache(data).snapshot()
    order = deterministic_order(view, 700, seed=0, iteration=0)
    assert order.size == 700
    ids = view.ids[order]
    assert sorted(ids[:300].tolist()) == list(range(300))
    assert sorted(ids[300:600].tolist()) == list(range(300))


def test_gradient_sum_equals_direct_accumulation(data: tuple[np.ndarray, np.ndarray]) -> None:
    view = make_cache(data).snapshot()
    net = Net(DIGITS_SPEC, seed=2)
    result = compute_gradient(net, view, samples=100, seed=9, iteration=4)
    order = deterministic_order(view, 100, seed=9, iteration=4)
    x, y = view.batch(order)
    direct = Net(DIGITS_SPEC, seed=2)
    direct.zero_grads()
    stats = direct.accumulate_gradient(x, y)
    assert result.samples == stats.count == 100
    assert result.correct == stats.correct
    assert result.loss_sum == pytest.approx(stats.loss, rel=1e-6)
    np.testing.assert_allclose(result.vector, direct.grads, rtol=1e-5, atol=1e-6)


def test_time_mode_sum_equals_direct_accumulation(data: tuple[np.ndarray, np.ndarray]) -> None:
    """A time budget draws batches from the rng: replaying its draws gives the same sum."""
    view = make_cache(data).snapshot()
    net = Net(DIGITS_SPEC, seed=2)
    clock = FakeClock(net, 1e-3)
    seen: list[np.ndarray] = []
    original = view.batch

    def recording(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append(rows.copy())
        return original(rows)

    object.__setattr__(view, "batch", recording)
    result = compute_gradient(net, view, seconds=0.5, clock=clock, rng=np.random.default_rng(1))
    rows = np.concatenate(seen)
    assert result.samples == rows.size > 300  # more than one pass over the cache
    direct = Net(DIGITS_SPEC, seed=2)
    direct.zero_grads()
    stats = direct.accumulate_gradient(*original(rows))
    np.testing.assert_allclose(result.vector, direct.grads, rtol=1e-4, atol=1e-5)
    assert result.loss_sum == pytest.approx(stats.loss, rel=1e-5)


def _view(rows: np.ndarray) -> CacheView:
    n = int(rows.max()) + 1 if rows.size else 0
    return CacheView(images=np.zeros((n, 1, 1, 1), np.uint8), labels=np.zeros(n, np.int64),
                     ids=np.arange(n, dtype=np.int64), rows=np.asarray(rows, dtype=np.intp))


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 60), takes=st.lists(st.integers(1, 40), min_size=1, max_size=12),
       seed=st.integers(0, 2**32 - 1))
def test_passes_take_every_row_once_per_pass_across_calls(size: int, takes: list[int],
                                                          seed: int) -> None:
    view = _view(np.arange(size) * 3)  # rows need not be 0..n-1
    passes = Passes(np.random.default_rng(seed))
    drawn = np.concatenate([passes.take(view, n) for n in takes])
    assert drawn.size == sum(takes)
    for start in range(0, drawn.size - size + 1, size):  # each whole pass: every row once
        assert sorted(drawn[start:start + size]) == sorted(view.rows)
    tail = drawn[drawn.size - drawn.size % size:]
    assert len(set(tail)) == tail.size  # the pass under way repeats nothing


@settings(max_examples=60, deadline=None)
@given(first=st.integers(2, 50), drop=st.integers(0, 49), grow=st.integers(0, 30),
       taken=st.integers(1, 49), seed=st.integers(0, 2**32 - 1))
def test_passes_follow_a_changing_cache(first: int, drop: int, grow: int, taken: int,
                                        seed: int) -> None:
    """Rows that leave are never drawn again; rows that arrive join the pass under way; no row
    repeats before every usable row of the pass was drawn."""
    taken = min(taken, first - 1)
    passes = Passes(np.random.default_rng(seed))
    before = passes.take(_view(np.arange(first)), taken)
    kept = np.arange(min(drop, first - 1), first)  # the allocation moved: rows 0..drop-1 left
    now = np.concatenate([kept, np.arange(100, 100 + grow)])  # and the cache grew
    rest = set(now) - set(before)
    after = passes.take(_view(now), len(rest))
    assert set(after) == rest and len(after) == len(rest)
    assert not set(after) & set(range(min(drop, first - 1)))


def test_passes_are_seeded() -> None:
    view = _view(np.arange(50))
    a, b = Passes(np.random.default_rng(4)), Passes(np.random.default_rng(4))
    assert all((a.take(view, 7) == b.take(view, 7)).all() for _ in range(10))


def test_time_budgets_continue_the_workers_pass(data: tuple[np.ndarray, np.ndarray]) -> None:
    """Two work orders of a worker with its ``Passes`` draw rows without replacement across
    them: the second starts where the first stopped (a fresh order would repeat rows)."""
    view = make_cache(data).snapshot()
    seen: list[np.ndarray] = []
    original = view.batch

    def recording(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append(rows.copy())
        return original(rows)

    object.__setattr__(view, "batch", recording)
    passes = Passes(np.random.default_rng(3))
    net = Net(DIGITS_SPEC, seed=2)
    for _ in range(2):
        compute_gradient(net, view, seconds=0.1, clock=FakeClock(net, 1e-3), passes=passes)
    rows = np.concatenate(seen)
    assert 150 < rows.size <= 300  # two budgets, less than a pass in all
    assert len(set(rows.tolist())) == rows.size


def test_result_does_not_alias_the_net_gradients(data: tuple[np.ndarray, np.ndarray]) -> None:
    net = Net(DIGITS_SPEC, seed=0)
    result = compute_gradient(net, make_cache(data).snapshot(), samples=10)
    copy = result.vector.copy()
    net.zero_grads()
    assert np.array_equal(result.vector, copy) and copy.any()


def test_diverged_net_reports_nothing(data: tuple[np.ndarray, np.ndarray]) -> None:
    net = Net(DIGITS_SPEC, seed=0)
    net.params[:] = np.nan
    result = compute_gradient(net, make_cache(data).snapshot(), samples=10)
    assert result.samples == 0 and not result.vector.any()


def test_evaluate_matches_net_evaluate(data: tuple[np.ndarray, np.ndarray]) -> None:
    pixels, labels = data
    cache = make_cache(data)
    cache.allocate(removed=range(100))  # only allocated ids count
    net = Net(DIGITS_SPEC, seed=0)
    result = evaluate(net, cache.snapshot(), chunk=64)
    x, y = cache.snapshot().batch(cache.snapshot().sorted_rows())
    stats = net.evaluate(x, y)
    assert result.samples == 200 == stats.count
    assert result.error == pytest.approx(1 - stats.correct / 200)
    assert result.loss == pytest.approx(stats.loss / 200, rel=1e-6)
