"""Tests of the master's data allocator (mlitb/training/_allocator.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mlitb.errors import MlitbError
from mlitb.training._allocator import (
    AllocationChange,
    AllocationError,
    Allocator,
    UnknownDataError,
    UnknownWorkerError,
    WorkerAlreadyJoinedError,
)


def apply(mirror: dict[str, set[int]], changes: dict[str, AllocationChange]) -> None:
    for w, (added, removed) in changes.items():
        mirror[w] = (mirror[w] - removed) | added


# ---------------------------------------------------------------------------------------- units


def test_errors_are_mlitb_errors() -> None:
    for cls in (WorkerAlreadyJoinedError, UnknownWorkerError, UnknownDataError):
        assert issubclass(cls, AllocationError)
        assert issubclass(cls, MlitbError)
        assert cls.__doc__


def test_empty_allocator() -> None:
    a: Allocator[str] = Allocator()
    a.check_invariants()
    assert a.take_changes() == {}
    s = a.statistics()
    assert (s.total, s.unallocated, dict(s.workers)) == (0, 0, {})
    a.join("w")
    assert a.take_changes() == {}  # a joiner that got nothing is not named
    assert a.allocation_of("w") == frozenset()
    a.check_invariants()


def test_data_waits_in_pool_without_trainers() -> None:
    a: Allocator[str] = Allocator()
    assert a.add_data(range(10)) == 10
    assert a.unallocated == 10 and a.total == 10
    assert a.allocated_to(3) is None
    a.check_invariants()
    a.join("w")
    assert a.allocation_of("w") == frozenset(range(10))
    assert a.unallocated == 0
    assert a.take_changes() == {"w": (frozenset(range(10)), frozenset())}
    assert a.take_changes() == {}


def test_duplicates_are_ignored() -> None:
    a: Allocator[str] = Allocator()
    assert a.add_data([1, 2, 2, 3]) == 3
    assert a.add_data([3, 4]) == 1
    assert a.add_data([]) == 0
    assert a.total == 4
    assert a.add_data(np.arange(3, 7)) == 2  # numpy ints are accepted and stored as int
    assert all(type(i) is int for i in a._owner)
    with pytest.raises(TypeError):
        a.add_data([1.5])  # type: ignore[list-item]


def test_worker_errors() -> None:
    a: Allocator[str] = Allocator()
    a.join("w")
    with pytest.raises(WorkerAlreadyJoinedError, match="'w'"):
        a.join("w")
    for call in (
        lambda: a.leave("x"),
        lambda: a.mark_cached("x", [1]),
        lambda: a.mark_uncached("x", [1]),
        lambda: a.allocation_of("x"),
    ):
        with pytest.raises(UnknownWorkerError, match="'x'"):
            call()
    a.leave("w")
    with pytest.raises(UnknownWorkerError):
        a.leave("w")  # leaving twice
    with pytest.raises(UnknownDataError):
        a.allocated_to(5)
    with pytest.raises(UnknownDataError):
        a.cached_by(5)


def test_new_data_goes_to_smallest_shares_first() -> None:
    a: Allocator[str] = Allocator()
    a.add_data(range(5))
    for w in "abc":
        a.join(w)
    sizes = {w: len(a.allocation_of(w)) for w in "abc"}
    assert sorted(sizes.values()) == [1, 2, 2]
    small = min(sizes, key=lambda w: sizes[w])
    before = {w: a.allocation_of(w) for w in "abc"}
    a.take_changes()
    a.add_data([100])
    assert a.allocated_to(100) == small
    assert a.take_changes() == {small: (frozenset({100}), frozenset())}
    a.add_data([101, 102, 103])  # 9 ids over 3 trainers: 3 each
    assert all(len(a.allocation_of(w)) == 3 for w in "abc")
    for w in "abc":  # new data never moves existing allocations
        assert before[w] <= a.allocation_of(w)
    a.check_invariants()


def test_pie_cutter_moves_the_minimum() -> None:
    a: Allocator[str] = Allocator()
    a.add_data(range(90))
    for w in "abc":
        a.join(w)
    before = {w: a.allocation_of(w) for w in "abc"}
    assert all(len(s) == 30 for s in before.values())
    a.take_changes()
    a.join("d")
    got = a.allocation_of("d")
    assert len(got) in (22, 23)
    losses = sorted(len(before[w] - a.allocation_of(w)) for w in "abc")
    assert all(n in (7, 8) for n in losses) and sum(losses) == len(got)
    for w in "abc":
        assert a.allocation_of(w) <= before[w]  # no id moved between old holders
    changes = a.take_changes()
    assert changes["d"] == (got, frozenset())
    for w in "abc":
        assert changes[w] == (frozenset(), before[w] - a.allocation_of(w))
    a.check_invariants()


def test_pie_cutter_gives_up_uncached_ids_first() -> None:
    a: Allocator[str] = Allocator()
    a.add_data(range(20))
    a.join("a")
    cached = sorted(a.allocation_of("a"))[:12]
    a.mark_cached("a", cached)
    a.join("b")  # a keeps 10; it should keep 10 of the 12 it has cached
    assert a.allocation_of("a") <= frozenset(cached)
    assert a.statistics().workers["a"].cached == 10
    a.check_invariants()


def test_leave_prefers_cached_holders() -> None:
    a: Allocator[str] = Allocator()
    a.add_data(range(30))
    for w in "abc":
        a.join(w)
    c_ids = sorted(a.allocation_of("c"))
    assert len(c_ids) == 10
    a.mark_cached("b", c_ids[:4])  # b has 4 of c's ids cached, a has 3 others
    a.mark_cached("a", c_ids[4:7])
    a.take_changes()
    a.leave("c")  # 30 ids over 2 trainers: each gets 5 of c's 10
    assert set(c_ids[:4]) <= a.allocation_of("b")
    assert set(c_ids[4:7]) <= a.allocation_of("a")
    assert len(a.allocation_of("a")) == len(a.allocation_of("b")) == 15
    changes = a.take_changes()
    assert set(changes) == {"a", "b"}
    assert changes["a"].added | changes["b"].added == set(c_ids)
    assert not changes["a"].removed and not changes["b"].removed
    a.check_invariants()


def test_leave_cache_preference_yields_to_balance() -> None:
    a: Allocator[str] = Allocator()
    a.add_data(range(30))
    for w in "abc":
        a.join(w)
    c_ids = a.allocation_of("c")
    a.mark_cached("a", c_ids)  # a has all 10 cached, but may take only 5
    a.leave("c")
    assert len(a.allocation_of("a")) == len(a.allocation_of("b")) == 15
    assert len(a.allocation_of("a") & c_ids) == 5
    assert a.cached_by(next(iter(c_ids))) == frozenset({"a"})
    a.check_invariants()


def test_leave_with_several_cachers() -> None:
    # 4 trainers x 10 ids; d leaves; its 10 ids are split 4/3/3 and each one a cacher can take
    # goes to a cacher.
    a: Allocator[str] = Allocator()
    a.add_data(range(40))
    for w in "abcd":
        a.join(w)
    d_ids = sorted(a.allocation_of("d"))
    a.mark_cached("a", d_ids[0:2])
    a.mark_cached("b", d_ids[0:5])  # overlaps a's
    a.mark_cached("c", d_ids[9:10])
    a.leave("d")
    got = {w: a.allocation_of(w) & set(d_ids) for w in "abc"}
    assert sorted(len(g) for g in got.values()) == [3, 3, 4]
    assert d_ids[9] in got["c"]
    cached_hits = sum(len(got[w] & a._trainers[w].cache) for w in "abc")
    assert cached_hits == 6  # ids 0..4 (a or b) and 9 (c): every cached id found a cacher
    a.check_invariants()


def test_last_trainer_leaving_returns_everything_to_pool() -> None:
    a: Allocator[str] = Allocator()
    a.add_data(range(7))
    a.join("a")
    a.mark_cached("a", range(7))
    a.leave("a")
    assert a.unallocated == 7
    assert a.cached_by(0) == frozenset()
    assert a.take_changes() == {}
    a.check_invariants()


def test_joined_and_left_within_an_iteration_is_not_named() -> None:
    a: Allocator[str] = Allocator()
    a.add_data(range(10))
    a.join("a")
    a.take_changes()
    a.join("b")
    a.leave("b")
    assert a.take_changes() == {}  # a got back exactly what it gave; b is gone
    assert a.allocation_of("a") == frozenset(range(10))
    a.join("b")
    a.leave("a")
    changes = a.take_changes()
    assert set(changes) == {"b"}
    assert changes["b"] == (frozenset(range(10)), frozenset())


def test_rejoin_starts_from_an_empty_mirror() -> None:
    a: Allocator[str] = Allocator()
    a.add_data(range(4))
    a.join("a")
    a.join("b")
    a.take_changes()
    a.leave("b")
    a.join("b")  # same name, new connection: its delta is relative to nothing
    changes = a.take_changes()
    assert changes["b"].removed == frozenset()
    assert changes["b"].added == a.allocation_of("b")


def test_mark_cached_semantics() -> None:
    a: Allocator[str] = Allocator()
    a.add_data(range(4))
    a.join("a")
    a.join("b")
    other = next(iter(a.allocation_of("b")))
    assert a.mark_cached("a", [other, 99, 100]) == frozenset({99, 100})  # unknown: ignored
    assert a.cached_by(other) == frozenset({"a"})  # cached though not allocated to a
    assert a.statistics().workers["a"].cached == 0  # counts only allocated ids
    mine = sorted(a.allocation_of("a"))
    a.mark_cached("a", mine)
    a.mark_cached("a", mine)  # idempotent
    assert a.statistics().workers["a"].cached == 2
    assert a.take_changes() == {"a": (frozenset(mine), frozenset()),
                                "b": (a.allocation_of("b"), frozenset())}
    a.mark_cached("b", [other])
    assert a.take_changes() == {}  # cache reports never move allocations
    assert a.mark_uncached("a", [other, mine[0], 77]) == frozenset({77})
    assert a.cached_by(other) == frozenset({"b"})
    assert a.statistics().workers["a"].cached == 1
    a.check_invariants()


def test_statistics_snapshot() -> None:
    a: Allocator[str] = Allocator()
    a.add_data(range(11))
    a.join("x")
    a.join("y")
    a.mark_cached("y", list(a.allocation_of("y"))[:3])
    s = a.statistics()
    assert s.total == 11 and s.unallocated == 0
    assert list(s.workers) == ["x", "y"] == list(a.workers())
    assert sorted(ws.allocated for ws in s.workers.values()) == [5, 6]
    assert s.workers["y"].cached == 3 and s.workers["x"].cached == 0
    assert "x" in a and "z" not in a


def test_check_invariants_detects_corruption() -> None:
    a: Allocator[str] = Allocator()
    a.add_data(range(6))
    a.join("a")
    a.join("b")
    i = next(iter(a.allocation_of("a")))
    a._trainers["a"].alloc.discard(i)  # corrupt on purpose
    with pytest.raises(AssertionError):
        a.check_invariants()


def test_works_with_any_hashable_worker() -> None:
    a: Allocator[tuple[str, int]] = Allocator()
    a.add_data(range(3))
    a.join(("node", 1))
    assert a.allocated_to(0) == ("node", 1)


def test_scale() -> None:
    """50,000 ids, 500 joins, 100 leaves, with cache reports and a late upload."""
    rng = random.Random(0)
    a: Allocator[int] = Allocator()
    a.add_data(range(45_000))
    for w in range(500):
        a.join(w)
        if w % 50 == 0:
            a.take_changes()
    a.add_data(range(45_000, 50_000))
    for w in range(500):
        a.mark_cached(w, a.allocation_of(w))
    a.take_changes()
    leavers = rng.sample(range(500), 100)
    for w in leavers:
        held = a.allocation_of(w)
        a.leave(w)
        # every freed id went to a trainer; live trainers only grew
        assert all(a.allocated_to(i) is not None for i in held)
    a.check_invariants()
    sizes = [ws.allocated for ws in a.statistics().workers.values()]
    assert len(sizes) == 400 and min(sizes) == max(sizes) == 125
    changes = a.take_changes()
    assert all(not ch.removed for ch in changes.values())


# ------------------------------------------------------------------------------ stateful model

NAMES = [f"w{i}" for i in range(5)]
ID_MAX = 80


class AllocatorMachine(RuleBasedStateMachine):
    """Random joins, leaves, uploads and cache reports against a simple model of the allocator.

    The model keeps the known ids, each live worker's cache and the mirror of what each worker
    was told through ``take_changes``; after every step all invariants hold and moves are minimal
    (joins only take from old holders, leaves and uploads only give to live trainers).
    """

    def __init__(self) -> None:
        super().__init__()
        self.a: Allocator[str] = Allocator()
        self.ids: set[int] = set()
        self.cache: dict[str, set[int]] = {}
        self.mirror: dict[str, set[int]] = {}

    def snapshot(self) -> dict[str, frozenset[int]]:
        return {w: self.a.allocation_of(w) for w in self.a.workers()}

    @rule(w=st.sampled_from(NAMES))
    def join(self, w: str) -> None:
        if w in self.cache:
            with pytest.raises(WorkerAlreadyJoinedError):
                self.a.join(w)
            return
        before = self.snapshot()
        pooled = self.a.unallocated
        self.a.join(w)
        self.cache[w] = set()
        self.mirror[w] = set()
        for v, old in before.items():  # pie-cutter: old holders only give up ids
            assert self.a.allocation_of(v) <= old
        moved = sum(len(old - self.a.allocation_of(v)) for v, old in before.items())
        assert moved + pooled == len(self.a.allocation_of(w))  # all went to the joiner
        # the joiner gets the smaller balanced share: the extra ids stay with old holders
        assert len(self.a.allocation_of(w)) == self.a.total // len(self.cache)
        for v, old in before.items():  # a holder gives up cached ids only when it must
            if (old - self.a.allocation_of(v)) & self.cache[v]:
                assert self.a.allocation_of(v) <= self.cache[v]

    @rule(w=st.sampled_from(NAMES))
    def leave(self, w: str) -> None:
        if w not in self.cache:
            with pytest.raises(UnknownWorkerError):
                self.a.leave(w)
            return
        before = self.snapshot()
        self.a.leave(w)
        del self.cache[w]
        del self.mirror[w]
        freed = before.pop(w)
        for v, old in before.items():  # remaining trainers only receive
            assert old <= self.a.allocation_of(v)
        if before:
            assert all(self.a.allocated_to(i) is not None for i in freed)
        else:
            assert all(self.a.allocated_to(i) is None for i in freed)
        # A freed id goes to a non-cacher only if each of its cachers was filled by ids it had
        # cached itself (or needed nothing): cached holders are preferred as far as balance allows.
        for i in freed:
            got = self.a.allocated_to(i)
            cachers = self.a.cached_by(i)
            if got is not None and cachers and got not in cachers:
                for c in cachers:
                    assert self.a.allocation_of(c) - before[c] <= self.cache[c]

    @rule(ids=st.lists(st.integers(0, ID_MAX), max_size=30))
    def add_data(self, ids: list[int]) -> None:
        before = self.snapshot()
        new = set(ids) - self.ids
        assert self.a.add_data(ids) == len(new)
        self.ids |= new
        for v, old in before.items():
            assert old <= self.a.allocation_of(v)

    @rule(w=st.sampled_from(NAMES), ids=st.lists(st.integers(0, ID_MAX + 5), max_size=20),
          drop=st.booleans())
    def report_cache(self, w: str, ids: list[int], drop: bool) -> None:
        op = self.a.mark_uncached if drop else self.a.mark_cached
        if w not in self.cache:
            with pytest.raises(UnknownWorkerError):
                op(w, ids)
            return
        before = self.snapshot()
        unknown = op(w, ids)
        assert unknown == set(ids) - self.ids
        known = set(ids) & self.ids
        if drop:
            self.cache[w] -= known
        else:
            self.cache[w] |= known
        assert self.snapshot() == before

    @precondition(lambda self: len(self.cache) >= 2)
    @rule(data=st.data())
    def cache_from_other(self, data: st.DataObject) -> None:
        """A trainer caches some of another's ids (as after a pie-cut), so leaves meet cachers."""
        live = sorted(self.cache)
        w = data.draw(st.sampled_from(live))
        v = data.draw(st.sampled_from([x for x in live if x != w]))
        if not self.a.allocation_of(v):
            return
        ids = data.draw(st.lists(st.sampled_from(sorted(self.a.allocation_of(v))), max_size=10))
        assert self.a.mark_cached(w, ids) == frozenset()
        self.cache[w] |= set(ids)

    @rule()
    def take_changes(self) -> None:
        changes = self.a.take_changes()
        assert set(changes) <= set(self.mirror)
        for w, (added, removed) in changes.items():
            assert added or removed
            assert not (added & removed)
            assert not (added & self.mirror[w])
            assert removed <= self.mirror[w]
        apply(self.mirror, changes)
        for w in self.mirror:
            assert self.mirror[w] == self.a.allocation_of(w)
        assert self.a.take_changes() == {}

    @invariant()
    def consistent(self) -> None:
        self.a.check_invariants()
        assert self.a.total == len(self.ids)
        assert set(self.a.workers()) == set(self.cache)
        for i in self.ids:
            assert self.a.cached_by(i) == {w for w, c in self.cache.items() if i in c}
        for w, ws in self.a.statistics().workers.items():
            assert ws.cached == len(self.a.allocation_of(w) & self.cache[w])


AllocatorMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
TestAllocatorMachine = AllocatorMachine.TestCase
