"""Trio in guest mode on Textual's asyncio loop: one thread, two event loops.

Textual runs on asyncio; the master's client (trio-websocket) needs trio. ``TrioGuest`` starts a
trio run as a *guest* of the running asyncio loop (``trio.lowlevel.start_guest_run``), so trio
tasks and Textual handlers interleave on the same thread: trio code may call
``app.post_message`` directly, and Textual code hands work to trio with ``start_soon`` (which goes
through the trio token). ``stop`` cancels the trio run and *awaits* its end: a guest run left
behind keeps trio's thread state set, and a later ``trio.run`` in the same process would fail.

Never ``call_from_thread`` from trio code here: there is no other thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import trio


class TrioGuest:
    """One trio guest run with a nursery that lives until ``stop``."""

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._done: asyncio.Future[outcome.Outcome[None]] | None = None
        self._ready: asyncio.Event | None = None
        self.on_crash: Callable[[BaseException], None] | None = None
        """Called (on the asyncio loop) if the trio run ends with an unexpected error."""

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.done()

    def start(self, main: Callable[[], Awaitable[None]] | None = None) -> None:
        """Start the guest run on the running asyncio loop; ``main`` runs in its nursery."""
        if self._done is not None:
            raise RuntimeError("this trio guest run was started already")
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._ready = asyncio.Event()

        async def root() -> None:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._token = trio.lowlevel.current_trio_token()
                self._ready.set()  # type: ignore[union-attr]
                if main is not None:
                    nursery.start_soon(main)
                await trio.sleep_forever()

        def done(result: outcome.Outcome[None]) -> None:
            self._nursery = None
            self._token = None
            if self._done is not None and not self._done.done():
                self._done.set_result(result)
            if isinstance(result, outcome.Error) and self.on_crash is not None:
                self.on_crash(result.error)

        trio.lowlevel.start_guest_run(
            root, run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon, done_callback=done)

    async def wait_started(self) -> None:
        """Wait until the trio nursery exists (a few loop passes after ``start``)."""
        if self._ready is not None:
            await self._ready.wait()

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` as a trio task in the guest nursery (from asyncio code)."""
        if self._token is None or self._nursery is None:
            raise RuntimeError("the trio guest run is not running")
        nursery = self._nursery
        self._token.run_sync_soon(lambda: nursery.start_soon(fn, *args))

    async def stop(self) -> None:
        """Cancel everything in the guest run and wait until trio has finished."""
        if self._done is None:
            return
        if not self._done.done():
            await self.wait_started()
            nursery, token = self._nursery, self._token
            if nursery is not None and token is not None:
                try:
                    token.run_sync_soon(nursery.cancel_scope.cancel)
                except trio.RunFinishedError:
                    pass
        await asyncio.shield(self._done)
