"""The event loop of one project as a trio task (docs/architecture.md, "One iteration of a
project").

Each iteration: admit joiners, flush allocation changes, plan budgeted work orders, broadcast one
parameters frame and the orders, wait for the results (or the deadline), reduce, autosave every
N iterations, and start the next one: at once when every result came in and the model stepped,
else when the iteration's T is up.

An error inside one iteration stays in its project: a refused step (``StepRefused``: the reduced
step was not finite) skips the step with an ``error`` event; anything else (a bug, a value no check
caught) is logged with its traceback and pauses the project with the reason in an ``error`` event.
The master and its other projects go on (docs/security.md).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import TYPE_CHECKING

import trio

from ..protocol import (
    MAX_IDS_PER_MESSAGE,
    Allocation,
    Work,
    encode_parameters,
    parameters_encoding,
)
from ..training import Project
from ._connection import Connection

if TYPE_CHECKING:
    from ._server import Master

log = logging.getLogger("mlitb.master")


async def run_project_loop(master: Master, name: str, scope: trio.CancelScope) -> None:
    """The event loop of one project (docs/architecture.md), until ``scope`` is cancelled."""
    with scope:
        project = master.projects[name]
        while True:
            try:
                await run_iteration(master, name, project)
            except Exception as exc:  # noqa: BLE001 (contained: the master must not go down)
                log.exception("project %s: error in its event loop", name)
                project.current = None
                project.paused = True
                master.log_event("error", f"project {name} paused: its event loop failed with "
                              f"{type(exc).__name__}: {exc} (resume it to try again)", name)
                master.save_soon(name)


async def run_iteration(master: Master, name: str, project: Project) -> None:
    """One pass of the loop: an iteration, or a wait while paused or without trainers."""
    wakeup = master.next_wakeup(name)
    start = master.now()
    joined = project.admit_pending()
    for w in joined:
        master.log_event("joined", f"worker {w} admitted to project {name}'s data "
                      "allocation", name, w)
    flush_allocations(master, project)
    if project.paused or not project.ready_trainers():
        with trio.move_on_after(project.iteration_time):
            await wakeup.wait()
        return
    it = project.plan_iteration(start)
    # Encoded once per round, in the project's wire kind; the model itself stays float32.
    frame = encode_parameters(project.net.params,
                              parameter_version=project.parameter_version,
                              iteration=project.iteration,
                              encoding=parameters_encoding(project.training.wire))
    for w, order in it.orders.items():
        conn = master.connections[w]
        conn.send(frame)
        conn.send(Work(iteration=project.iteration,
                       parameter_version=project.parameter_version,
                       seconds=order.seconds, samples=order.samples,
                       learning_rate=order.learning_rate))
    for w in project.of_role("tracker") + project.of_role("stats"):
        master.connections[w].send(frame)
    it.sent_at = master.now()
    # Deterministic mode waits for every result (a worker that leaves drops its
    # order); otherwise late workers do not hold the iteration hostage.
    with trio.move_on_at(math.inf if project.deterministic else it.deadline):
        while not it.complete():
            await wakeup.wait()
            wakeup = master.next_wakeup(name)
    every_result_in = it.complete()
    reduce_start = master.now()
    summary = project.finish_iteration(reduce_start)
    project.timing = dataclasses.replace(project.timing,
                                         reduce=master.now() - reduce_start)
    if project.refused is not None:
        master.log_event("error", f"project {name}: iteration {it.number}'s step was refused: "
                      f"{project.refused}", name)
    report_checks(master, name, project, it.number)
    if summary.workers < len(it.orders):
        log.info("%s: %d of %d results by the deadline", name, summary.workers,
                 len(it.orders))
    if master.files is not None and project.iteration % master.autosave_every == 0:
        # Between iterations, and before the next starts: a kill loses at most
        # autosave_every iterations.
        await master.save_project(name)
    if every_result_in and summary.stepped:
        # The budgets leave a margin for latency and jitter; when every result is in early,
        # the next iteration starts now instead of at T, so the trainers do not sit idle
        # through it (an iteration lasts at most T; ~10% more compute at T = 1 s, more at
        # shorter T). A round with nothing computed still waits for T: no busy loop.
        await trio.lowlevel.checkpoint()
        return
    await trio.sleep_until(start + project.iteration_time)


def report_checks(master: Master, name: str, project: Project, number: int) -> None:
    """The robust reducers' verdicts: refused results are logged; trainers refused
    ``max_strikes`` rounds in a row (already removed from the project) are told why with a bye
    (``too_many_errors``, close 4005) and an ``removed`` event says why."""
    summary = project.checks
    if summary is not None and (summary.refused or summary.clipped or summary.capped):
        log.info("%s: iteration %d: %d result(s) refused, %d clipped, %d capped", name,
                 number, len(summary.refused), len(summary.clipped), len(summary.capped))
    for w, why in project.dropped:
        master.log_event("removed", f"worker {w} dropped from project {name}: {why}", name, w)
        conn = master.connections.get(w)
        if conn is not None:
            conn.say_bye("too_many_errors", f"dropped: {why}"[:120])
            master.forget(conn, log_event=False)
    project.dropped = []


def flush_allocations(master: Master, project: Project) -> None:
    """Send each trainer what changed in its share since the last flush."""
    for w, change in project.allocator.take_changes().items():
        conn = master.connections.get(w)
        if conn is not None:
            total = len(project.allocator.allocation_of(w))
            send_ids(conn, sorted(change.added), sorted(change.removed), total)


def send_ids(conn: Connection, added: list[int], removed: list[int], total: int) -> None:
    """Allocation messages, split to respect the protocol's id limit."""
    step = MAX_IDS_PER_MESSAGE
    for i in range(0, max(len(added), len(removed), 1), step // 2):
        conn.send(Allocation(added=tuple(added[i:i + step // 2]),
                             removed=tuple(removed[i:i + step // 2]), total=total))
