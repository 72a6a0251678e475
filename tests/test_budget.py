"""Tests of the master's latency and work-budget policy (mlitb/training/_budget.py)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlitb.errors import MlitbError
from mlitb.training import BudgetConfig, BudgetError, BudgetPolicy

T = 10.0
MARGIN = 0.05 + 0.05 * T  # default margin_seconds + margin_fraction * T


def feed(p: BudgetPolicy[str], w: str, latency: float, compute: float = 2.0,
         samples: int = 200, n: int = 1, start: float = 0.0, late: bool = False) -> None:
    """Observe ``n`` results of ``w`` with the given latency and compute time."""
    for k in range(n):
        sent = start + 100.0 * k
        p.observe(w, sent, sent + compute + latency, compute, samples, late=late)


def test_new_worker_gets_conservative_default() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    assert p.latency("new") is None and p.rate("new") is None
    # latency assumed to be half of T
    assert p.budget("new", T) == pytest.approx(T - 0.5 * T - MARGIN)
    assert p.budget_samples("new", T) == math.floor((T - 0.5 * T - MARGIN) * 10.0)
    assert p.statistics() == {}  # querying does not register a worker


def test_budget_is_t_minus_latency_minus_margin() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    feed(p, "w", latency=0.2)
    assert p.latency("w") == pytest.approx(0.2)
    assert p.margin(T) == pytest.approx(MARGIN)
    assert p.budget("w", T) == pytest.approx(T - 0.2 - MARGIN)
    assert p.budget("w", 2.0) == pytest.approx(2.0 - 0.2 - (0.05 + 0.1))


def test_latency_estimate_converges() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    feed(p, "w", latency=1.0, n=5)
    assert p.latency("w") == pytest.approx(1.0)
    errors = []
    for k in range(15):
        feed(p, "w", latency=0.2, start=1000.0 + 100 * k)
        lat = p.latency("w")
        assert lat is not None
        errors.append(lat - 0.2)
    assert errors[0] == pytest.approx(0.8)  # one new value: median of three ignores it
    assert all(b <= a for a, b in itertools.pairwise(errors))  # monotone approach
    assert errors[-1] < 1e-3
    assert p.budget("w", T) == pytest.approx(T - 0.2 - MARGIN, abs=1e-3)


def test_one_outlier_changes_nothing() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    feed(p, "w", latency=0.1, n=5)
    before = p.budget("w", T)
    p.observe("w", 1000.0, 1000.0 + 2.0 + 7.5, 2.0, 200)  # one 7.5 s hiccup
    assert p.latency("w") == pytest.approx(0.1)
    assert p.budget("w", T) == pytest.approx(before)
    p.observe("w", 2000.0, 2000.0 + 2.0 + 0.1, 0.002, 200)  # one absurd rate (100,000/s)
    assert p.rate("w") == pytest.approx(100.0)


def test_tiny_compute_time_is_floored_for_the_rate() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    p.observe("w", 0.0, 1.0, 5e-324, 7)
    assert p.rate("w") == pytest.approx(7000.0)
    assert p.budget_samples("w", T) == math.floor(p.budget("w", T) * 7000.0)


def test_lasting_change_is_followed() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    feed(p, "w", latency=0.1, n=5)
    feed(p, "w", latency=2.0, n=2, start=1000.0)
    lat = p.latency("w")
    assert lat is not None and lat > 0.5  # second slow result already moves it (0.1 + 0.4 * 1.9)


def test_first_observations_average_before_the_window_fills() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    feed(p, "w", latency=1.0)
    assert p.latency("w") == pytest.approx(1.0)
    feed(p, "w", latency=0.2, start=500.0)
    assert p.latency("w") == pytest.approx(0.6)  # mean of the two


def test_clamping() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    feed(p, "slow", latency=20.0)  # latency beyond T: still does a little
    assert p.budget("slow", T) == pytest.approx(0.05 * T)
    assert p.budget_samples("slow", T) == math.floor(0.5 * 100.0)
    q: BudgetPolicy[str] = BudgetPolicy(BudgetConfig(margin_seconds=0.0, margin_fraction=0.0))
    feed(q, "fast", latency=0.0)
    assert q.budget("fast", T) == pytest.approx(T)  # never more than T


def test_missed_deadline_shrinks_the_budget_and_recovers() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    feed(p, "w", latency=0.2, n=3)
    full = p.budget("w", T)
    p.missed_deadline("w")
    assert p.budget("w", T) == pytest.approx(full * 0.5)
    p.missed_deadline("w")
    assert p.budget("w", T) == pytest.approx(full * 0.25)
    feed(p, "w", latency=0.2, start=1000.0, late=True)  # the late result: measured, no relief
    assert p.budget("w", T) == pytest.approx(full * 0.25)
    feed(p, "w", latency=0.2, start=2000.0)  # on time again: x1.5 per result, up to 1
    assert p.budget("w", T) == pytest.approx(full * 0.375)
    feed(p, "w", latency=0.2, n=5, start=3000.0)
    assert p.budget("w", T) == pytest.approx(full)
    s = p.statistics()["w"]
    assert (s.missed, s.observations, s.penalty) == (2, 10, 1.0)


def test_repeated_misses_hit_the_floor() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    for _ in range(50):
        p.missed_deadline("gone")  # a stopped worker never answers
    assert p.budget("gone", T) == pytest.approx(0.05 * T)
    assert p.statistics()["gone"].penalty == pytest.approx(1 / 64)
    assert p.statistics()["gone"].latency_ms is None


def test_rate_and_budget_samples() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    feed(p, "w", latency=0.2, compute=4.0, samples=1000, n=3)  # 250 samples/s
    assert p.rate("w") == pytest.approx(250.0)
    assert p.budget_samples("w", T) == math.floor((T - 0.2 - MARGIN) * 250.0)
    feed(p, "phone", latency=3.0, compute=5.0, samples=1)  # 0.2 samples/s
    assert p.budget_samples("phone", T) == 1  # at least one


def test_samples_zero_leaves_rate_alone() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    feed(p, "w", latency=0.3, compute=0.0, samples=0)  # still caching its data
    assert p.rate("w") is None
    assert p.latency("w") == pytest.approx(0.3)
    assert p.statistics()["w"].samples_per_s is None


def test_compute_longer_than_round_trip_is_capped() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    p.observe("w", 0.0, 1.0, 3.0, 100)  # clock skew: reports 3 s in a 1 s round trip
    assert p.latency("w") == 0.0
    assert p.rate("w") == pytest.approx(100.0)


def test_forget_and_statistics() -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    feed(p, "a", latency=0.25, compute=2.0, samples=100)
    feed(p, "b", latency=0.5)
    s = p.statistics()
    assert list(s) == ["a", "b"]
    assert s["a"].latency_ms == pytest.approx(250.0)
    assert s["a"].samples_per_s == pytest.approx(50.0)
    p.forget("a")
    p.forget("a")  # idempotent
    p.forget("never-seen")
    assert list(p.statistics()) == ["b"]
    assert p.budget("a", T) == pytest.approx(T - 0.5 * T - MARGIN)  # back to the default


@pytest.mark.parametrize(
    "args",
    [
        (math.nan, 1.0, 0.5, 1),
        (0.0, math.inf, 0.5, 1),
        (0.0, 1.0, math.nan, 1),
        (2.0, 1.0, 0.5, 1),  # received before sent
        (0.0, 1.0, -0.5, 1),
        (0.0, 1.0, 0.5, -1),
        (0.0, 1.0, 0.5, 2**60),
    ],
)
def test_impossible_observations_raise(args: tuple[float, float, float, int]) -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    with pytest.raises(BudgetError):
        p.observe("w", *args)
    assert p.statistics() == {}  # nothing recorded


@pytest.mark.parametrize("t", [0.0, -1.0, math.nan, math.inf])
def test_bad_iteration_time_raises(t: float) -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    with pytest.raises(BudgetError):
        p.budget("w", t)
    with pytest.raises(BudgetError):
        p.budget_samples("w", t)


@pytest.mark.parametrize(
    "kw",
    [
        {"margin_seconds": -1.0}, {"margin_fraction": 1.0}, {"min_fraction": 0.0},
        {"min_fraction": 1.5}, {"initial_latency_fraction": 1.0}, {"initial_rate": 0.0},
        {"smoothing": 0.0}, {"miss_factor": 1.0}, {"recover_factor": 0.9},
        {"min_penalty": 0.0}, {"margin_seconds": math.nan},
    ],
)
def test_bad_config_raises(kw: dict[str, float]) -> None:
    with pytest.raises(BudgetError):
        BudgetConfig(**kw)
    assert issubclass(BudgetError, MlitbError)


# ------------------------------------------------------------------------------ properties

finite = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)
event = st.one_of(
    st.tuples(st.just("obs"), finite, finite, finite, st.integers(0, 10**6), st.booleans()),
    st.tuples(st.just("miss")),
)
configs = st.builds(
    BudgetConfig,
    margin_seconds=st.floats(0.0, 5.0),
    margin_fraction=st.floats(0.0, 0.9),
    min_fraction=st.floats(0.001, 1.0),
    initial_latency_fraction=st.floats(0.0, 0.99),
    smoothing=st.floats(0.01, 1.0),
    miss_factor=st.floats(0.01, 0.99),
    recover_factor=st.floats(1.0, 4.0),
    min_penalty=st.floats(0.001, 1.0),
)


@settings(max_examples=200, deadline=None)
@given(cfg=configs, events=st.lists(event, max_size=20),
       t=st.floats(min_value=0.01, max_value=60.0))
def test_budget_always_within_min_and_t(
    cfg: BudgetConfig, events: list[tuple[object, ...]], t: float
) -> None:
    p: BudgetPolicy[str] = BudgetPolicy(cfg)
    assert cfg.min_fraction * t <= p.budget("w", t) <= t
    for e in events:
        if e[0] == "miss":
            p.missed_deadline("w")
        else:
            _, sent, rtt, compute, samples, late = e
            assert isinstance(sent, float) and isinstance(rtt, float)
            assert isinstance(compute, float) and isinstance(samples, int)
            p.observe("w", sent, sent + rtt, compute, samples, late=bool(late))
        b = p.budget("w", t)
        assert cfg.min_fraction * t <= b <= t
        assert p.budget_samples("w", t) >= 1
        s = p.statistics()["w"]
        assert cfg.min_penalty <= s.penalty <= 1.0
        assert s.latency_ms is None or s.latency_ms >= 0.0


@settings(max_examples=100, deadline=None)
@given(lat=st.floats(0.0, 5.0), extra=st.floats(0.0, 5.0))
def test_higher_latency_never_gets_a_larger_budget(lat: float, extra: float) -> None:
    p: BudgetPolicy[str] = BudgetPolicy()
    feed(p, "a", latency=lat, n=3)
    feed(p, "b", latency=lat + extra, n=3)
    assert p.budget("b", T) <= p.budget("a", T) + 1e-12
