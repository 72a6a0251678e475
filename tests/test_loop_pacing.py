"""When the next iteration starts (mlitb/master/_loop.py): at once when every result is in and
the model stepped, so trainers do not idle through the margin their budgets keep; at T when
nothing was computed, so a project whose trainers have nothing to do does not spin."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio
from helpers.master import make_project, running_master
from test_hostile_master import next_work, operator, result, trainers_with_work

T = 10.0
"""Long enough that waiting for T even once would blow the test's deadline."""


@pytest.mark.trio
async def test_every_result_in_early_starts_the_next_iteration_before_t():
    with trio.fail_after(T * 0.8):  # five iterations in less than one T
        async with running_master() as (master, port), AsyncExitStack() as stack:
            await make_project(port, t=T)
            op = await operator(stack, port)
            [(tr, work)] = await trainers_with_work(stack, port, op, 1)
            for _ in range(5):
                await tr.send(result(work, 0.01, samples=2))
                _, work = await next_work(tr)
            assert master.projects["p"].parameter_version >= 5


@pytest.mark.trio
async def test_a_round_with_nothing_computed_waits_for_t():
    with trio.fail_after(30):
        async with running_master() as (master, port), AsyncExitStack() as stack:
            await make_project(port, t=T)
            op = await operator(stack, port)
            [(tr, work)] = await trainers_with_work(stack, port, op, 1)
            await tr.send(result(work, 0.0, samples=0))
            with trio.move_on_after(1.5) as waited:
                await next_work(tr)
            assert waited.cancelled_caught, "the next iteration started without waiting for T"
            assert master.projects["p"].parameter_version == 0
