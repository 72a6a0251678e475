"""Data allocation for one project: which trainer computes on which data ids (paper §3.3.1.1–2).

The data server registers data ids (ints) with the project; trainers join and leave at any time.
For every id the allocator records the trainer it is *allocated* to (or none: "to be allocated",
kept in the *pool*) and the set of trainers that have it *cached* (as they report it). It is a
plain object without I/O or clocks: the master's event loop calls it and broadcasts what changed.

How the master uses it, once per iteration (docs/architecture.md, "One iteration of a project")::

    alloc.add_data(new_ids)          # step 1: ids registered since the last iteration
    alloc.join(worker)               # step 2: each new trainer
    alloc.leave(worker)              # step 3: each trainer that vanished or was removed
    alloc.mark_cached(worker, ids)   # whenever a trainer reports what it has cached
    for worker, (added, removed) in alloc.take_changes().items():
        ...                          # step 5: one allocation message per trainer

Every mutating call rebalances at once, so the state is always valid; ``take_changes()`` returns the
net per-trainer difference between what each trainer was last told and what it holds now.

Policy
------
* **Targets.** With ``N`` ids and ``K`` trainers every trainer's target is ``N // K``; the
  ``N % K`` trainers that currently hold the most ids (earlier joiners first among equals) get one
  more. Choosing the largest holders for the extra ids makes the number of moved ids minimal.
* **Joining** (``join``): the joiner takes ids from the pool first. If the pool cannot fill every
  target, the *pie-cutter* takes from each current holder only its excess over its new target, so
  a trainer never receives and gives up ids in the same call and no id moves between old holders.
  A holder gives up ids it has not cached first, so its cached data stays useful.
* **Leaving** (``leave``): the leaver's ids go back to the pool and are re-allocated at once if
  trainers remain; an id goes first to a trainer that has it cached and is still below its target,
  then the rest fill the remaining deficits. Remaining trainers only receive ids. With no trainers
  left, every id waits in the pool.
* **New data** (``add_data``): new ids go to the trainers with the smallest shares first (they
  have the largest deficits); no existing allocation changes.
* **Duplicates**: an id registered twice (in one upload or across uploads) is ignored, because a
  data server that re-registers after reconnecting is not an error; ``add_data`` returns how many
  ids were new.
* **Caches** (``mark_cached``/``mark_uncached``): a trainer may report any known id as cached,
  allocated to it or not: a cache outlives an allocation (a holder that lost ids to the pie-cutter
  still holds their bytes), which is what makes it a preferred recipient if those ids come free
  again. Unknown ids are ignored and returned, so the master can log the misbehaving sender.
  Reports do not move any allocation. A leaving trainer's cache entries are forgotten.

Invariants (checked by ``check_invariants()``; every public call preserves them)
-------------------------------------------------------------------------------
1. Every known id is either in the pool or allocated to exactly one live trainer, and the
   id → trainer index agrees with each trainer's allocation set.
2. No id is allocated to a trainer that left (trainers that left are forgotten entirely).
3. If at least one trainer is live, the pool is empty.
4. Shares are balanced: max share − min share ≤ 1 (so each share is ``N // K`` or ``N // K + 1``).
5. Consequently, when there are at least as many ids as trainers, every trainer's share is
   non-empty (checked explicitly too).
6. Cache records name only live trainers and known ids; the id → cachers index agrees with each
   trainer's cache set; each trainer's "allocated but not cached" set is exactly its allocation
   minus its cache.
7. Pending changes exist only for live trainers; a trainer's pending ``added`` ids are allocated to
   it, its pending ``removed`` ids are not, and the two never overlap.

Cost: ``join`` and ``leave`` cost O(K log K) to rank the trainers plus O(1) per moved id (and a
leave O(1) per id the leaver held or cached); ``add_data`` is O(new ids + K log K). Nothing walks
all ids except ``check_invariants()``.

Determinism: for the same sequence of calls the result is the same (trainer order is join order;
id sets are sets of ints, whose iteration order does not depend on hash randomisation).
"""

from __future__ import annotations

import operator
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Generic, NamedTuple, TypeVar

from ..errors import MlitbError

W = TypeVar("W", bound=Hashable)
"""The type of a worker's identity (the master's choice: a string id, a connection object…)."""

__all__ = [
    "AllocationChange",
    "AllocationError",
    "Allocator",
    "AllocatorStatistics",
    "UnknownDataError",
    "UnknownWorkerError",
    "WorkerAlreadyJoinedError",
    "WorkerShare",
]


class AllocationError(MlitbError):
    """The allocator was asked something inconsistent with its state (see the subclasses)."""


class WorkerAlreadyJoinedError(AllocationError):
    """``join`` was called for a worker that is already a live trainer of this project."""


class UnknownWorkerError(AllocationError):
    """A worker that is not a live trainer was named (``leave``, ``mark_cached``, a query…)."""


class UnknownDataError(AllocationError):
    """A data id that was never registered with ``add_data`` was queried."""


class AllocationChange(NamedTuple):
    """What one trainer must be told: ids newly allocated to it and ids taken away from it."""

    added: frozenset[int]
    removed: frozenset[int]


@dataclass(frozen=True)
class WorkerShare:
    """One trainer's line in the status snapshot."""

    allocated: int
    """How many ids are allocated to the trainer."""
    cached: int
    """How many of its *allocated* ids it has reported cached (``cached == allocated``: ready)."""


@dataclass(frozen=True)
class AllocatorStatistics(Generic[W]):
    """A snapshot of the allocation, for the master's status message."""

    total: int
    """Number of known data ids."""
    unallocated: int
    """Ids in the pool (non-zero only while the project has no trainer)."""
    workers: Mapping[W, WorkerShare]
    """Per live trainer, in join order."""


@dataclass(eq=False)
class _Trainer:
    """The per-trainer state; every set holds data ids."""

    alloc: set[int] = field(default_factory=set)
    uncached: set[int] = field(default_factory=set)  # alloc minus cache
    cache: set[int] = field(default_factory=set)  # known ids it reported cached
    added: set[int] = field(default_factory=set)  # pending, since the last take_changes
    removed: set[int] = field(default_factory=set)


class Allocator(Generic[W]):
    """Balanced allocation of one project's data ids over its live trainers (see the module doc)."""

    def __init__(self) -> None:
        self._owner: dict[int, W | None] = {}  # every known id -> its trainer, None when pooled
        self._pool: set[int] = set()  # ids allocated to nobody
        self._trainers: dict[W, _Trainer] = {}  # live trainers in join order
        self._cached_by: dict[int, dict[W, None]] = {}  # id -> trainers caching it (ordered set)

    # ------------------------------------------------------------------ mutations

    def add_data(self, ids: Iterable[int]) -> int:
        """Register data ids (one upload); allocate them at once; return how many were new.

        Ids already known (or repeated within ``ids``) are ignored. Any integer-like value is
        accepted (``operator.index``: numpy integers become ``int``); others raise ``TypeError``.
        """
        new = 0
        for x in ids:
            i = operator.index(x)
            if i not in self._owner:
                self._owner[i] = None
                self._pool.add(i)
                new += 1
        if new:
            self._rebalance()
        return new

    def join(self, worker: W) -> None:
        """Make ``worker`` a trainer and give it a balanced share (pool first, then pie-cutter).

        Raises ``WorkerAlreadyJoinedError`` if it is already a live trainer.
        """
        if worker in self._trainers:
            raise WorkerAlreadyJoinedError(f"worker {worker!r} has already joined")
        self._trainers[worker] = _Trainer()
        self._rebalance()

    def leave(self, worker: W) -> None:
        """Remove a trainer (disconnected or removed); re-allocate its ids, cachers first.

        Its pending changes and cache records are dropped: ``take_changes()`` will not name it,
        even if it joined in the same iteration. Raises ``UnknownWorkerError`` if it is not live.
        """
        t = self._trainer(worker)
        del self._trainers[worker]
        for i in t.alloc:
            self._owner[i] = None
        self._pool |= t.alloc
        for i in t.cache:
            cachers = self._cached_by[i]
            del cachers[worker]
            if not cachers:
                del self._cached_by[i]
        self._rebalance()

    def mark_cached(self, worker: W, ids: Iterable[int]) -> frozenset[int]:
        """Record that ``worker`` has these ids in its cache; return the unknown ids it named.

        Known ids are recorded whether or not they are allocated to the worker (see the module
        doc); unknown ids are ignored. Allocations do not change. Raises ``UnknownWorkerError`` if
        the worker is not a live trainer.
        """
        t = self._trainer(worker)
        unknown: set[int] = set()
        for x in ids:
            i = operator.index(x)
            if i not in self._owner:
                unknown.add(i)
            elif i not in t.cache:
                t.cache.add(i)
                self._cached_by.setdefault(i, {})[worker] = None
                t.uncached.discard(i)
        return frozenset(unknown)

    def mark_uncached(self, worker: W, ids: Iterable[int]) -> frozenset[int]:
        """Record that ``worker`` dropped these ids from its cache; return the unknown ids named.

        Ids it never reported cached are ignored. Raises ``UnknownWorkerError`` as ``mark_cached``.
        """
        t = self._trainer(worker)
        unknown: set[int] = set()
        for x in ids:
            i = operator.index(x)
            if i not in self._owner:
                unknown.add(i)
            elif i in t.cache:
                t.cache.discard(i)
                cachers = self._cached_by[i]
                del cachers[worker]
                if not cachers:
                    del self._cached_by[i]
                if i in t.alloc:
                    t.uncached.add(i)
        return frozenset(unknown)

    def take_changes(self) -> dict[W, AllocationChange]:
        """Return and reset the net allocation changes per live trainer since the last call.

        Applying ``allocation = (allocation - removed) | added`` to what each trainer was told so
        far (an empty set when it joined) gives exactly ``allocation_of(trainer)``. Trainers whose
        allocation did not change are omitted (a joiner that got nothing is not named); trainers
        that left are never named.
        """
        out: dict[W, AllocationChange] = {}
        for w, t in self._trainers.items():
            if t.added or t.removed:
                out[w] = AllocationChange(frozenset(t.added), frozenset(t.removed))
                t.added = set()
                t.removed = set()
        return out

    # ------------------------------------------------------------------ queries

    def __contains__(self, worker: object) -> bool:
        """Whether ``worker`` is a live trainer."""
        return worker in self._trainers

    def workers(self) -> tuple[W, ...]:
        """The live trainers, in join order."""
        return tuple(self._trainers)

    @property
    def total(self) -> int:
        """Number of known data ids."""
        return len(self._owner)

    @property
    def unallocated(self) -> int:
        """Number of ids allocated to nobody (non-zero only while there is no trainer)."""
        return len(self._pool)

    def allocation_of(self, worker: W) -> frozenset[int]:
        """The ids allocated to a live trainer. Raises ``UnknownWorkerError`` otherwise."""
        return frozenset(self._trainer(worker).alloc)

    def allocated_to(self, data_id: int) -> W | None:
        """The trainer an id is allocated to, or None if it waits in the pool.

        Raises ``UnknownDataError`` for an id never registered.
        """
        try:
            return self._owner[data_id]
        except KeyError:
            raise UnknownDataError(f"data id {data_id!r} is not registered") from None

    def cached_by(self, data_id: int) -> frozenset[W]:
        """The live trainers that reported an id cached. Raises ``UnknownDataError`` if unknown."""
        if data_id not in self._owner:
            raise UnknownDataError(f"data id {data_id!r} is not registered")
        return frozenset(self._cached_by.get(data_id, ()))

    def statistics(self) -> AllocatorStatistics[W]:
        """A snapshot for the status message: totals and each trainer's allocated/cached counts."""
        return AllocatorStatistics(
            total=len(self._owner),
            unallocated=len(self._pool),
            workers={
                w: WorkerShare(allocated=len(t.alloc), cached=len(t.alloc) - len(t.uncached))
                for w, t in self._trainers.items()
            },
        )

    def check_invariants(self) -> None:
        """Check every invariant of the module doc in O(ids + cache records); for tests.

        Raises ``AssertionError`` naming the first violation (explicitly, so ``-O`` keeps it).
        """

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise AssertionError(msg)

        seen: dict[int, W] = {}
        for w, t in self._trainers.items():
            for i in t.alloc:
                need(i not in seen, f"id {i} allocated to both {seen.get(i)!r} and {w!r}")
                seen[i] = w
                need(i in self._owner, f"id {i} allocated to {w!r} is unknown")
                need(self._owner.get(i) == w, f"owner index of {i} is not {w!r}")
            need(t.uncached == t.alloc - t.cache, f"uncached set of {w!r} is stale")
            need(t.cache <= self._owner.keys(), f"{w!r} caches unknown ids")
            for i in t.cache:
                need(w in self._cached_by.get(i, {}), f"cachers index of {i} lacks {w!r}")
            need(not (t.added & t.removed), f"pending added/removed of {w!r} overlap")
            need(t.added <= t.alloc, f"pending added ids of {w!r} are not allocated to it")
            need(not (t.removed & t.alloc), f"pending removed ids of {w!r} are still allocated")
        for i, owner in self._owner.items():
            if owner is None:
                need(i in self._pool, f"id {i} has no owner but is not in the pool")
            else:
                need(owner in self._trainers, f"id {i} allocated to departed worker {owner!r}")
                need(seen.get(i) == owner, f"id {i}: owner index and allocation sets disagree")
        need(self._pool <= self._owner.keys(), "pool holds unknown ids")
        need(not (self._pool & seen.keys()), "pooled ids are also allocated")
        need(len(self._pool) + len(seen) == len(self._owner), "ids lost between pool and shares")
        for i, cachers in self._cached_by.items():
            need(bool(cachers), f"empty cachers entry for {i}")
            for w in cachers:
                need(w in self._trainers, f"id {i} cached by departed worker {w!r}")
                need(i in self._trainers[w].cache, f"cache set of {w!r} lacks {i}")
        if self._trainers:
            need(not self._pool, f"{len(self._pool)} ids unallocated while trainers are live")
            sizes = [len(t.alloc) for t in self._trainers.values()]
            need(max(sizes) - min(sizes) <= 1, f"shares unbalanced: {min(sizes)}..{max(sizes)}")
            if len(self._owner) >= len(self._trainers):
                need(min(sizes) > 0, "a trainer has an empty share though ids suffice")

    # ------------------------------------------------------------------ internals

    def _trainer(self, worker: W) -> _Trainer:
        try:
            return self._trainers[worker]
        except KeyError:
            raise UnknownWorkerError(f"worker {worker!r} is not a trainer of this project") from None

    def _assign(self, i: int, worker: W, t: _Trainer) -> None:
        self._owner[i] = worker
        self._pool.discard(i)
        t.alloc.add(i)
        if i not in t.cache:
            t.uncached.add(i)
        if i in t.removed:
            t.removed.discard(i)
        else:
            t.added.add(i)

    def _unassign(self, i: int, t: _Trainer) -> None:
        self._owner[i] = None
        self._pool.add(i)
        t.alloc.discard(i)
        t.uncached.discard(i)
        if i in t.added:
            t.added.discard(i)
        else:
            t.removed.add(i)

    def _give_up(self, t: _Trainer, n: int) -> None:
        """Move ``n`` of a trainer's ids to the pool, ids it has not cached first."""
        picked = list(islice(t.uncached, n))
        for i in picked:
            self._unassign(i, t)
        if len(picked) < n:  # every remaining id is cached: give up cached ones too
            for i in list(islice(t.alloc, n - len(picked))):
                self._unassign(i, t)

    def _rebalance(self) -> None:
        """Bring every trainer to its target, moving as few ids as possible (see the module doc)."""
        if not self._trainers:
            return
        q, r = divmod(len(self._owner), len(self._trainers))
        # Largest holders get the r extra ids; sorted() is stable, so join order breaks ties.
        ranked = sorted(self._trainers.items(), key=lambda wt: len(wt[1].alloc), reverse=True)
        deficits: dict[W, int] = {}
        for rank, (w, t) in enumerate(ranked):
            target = q + 1 if rank < r else q
            have = len(t.alloc)
            if have > target:
                self._give_up(t, have - target)  # the pie-cutter's slice
            elif have < target:
                deficits[w] = target - have
        if not deficits:
            return
        # First pass: an id goes to a trainer that has it cached and still has room.
        if self._cached_by:
            for i in list(self._pool):
                cachers = self._cached_by.get(i)
                if not cachers:
                    continue
                for w in cachers:
                    d = deficits.get(w)
                    if d:
                        self._assign(i, w, self._trainers[w])
                        if d == 1:
                            del deficits[w]
                        else:
                            deficits[w] = d - 1
                        break
                if not deficits:
                    break
        # Second pass: fill the remaining deficits from whatever is left (exactly enough).
        for w, d in deficits.items():
            t = self._trainers[w]
            for i in list(islice(self._pool, d)):
                self._assign(i, w, t)
