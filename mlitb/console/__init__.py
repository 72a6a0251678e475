"""The Textual operator console: ``mlitb console [ws://HOST:8000] [--token TOKEN]``.

``ConsoleApp(backend)`` is the app; ``LiveBackend(url, token)`` connects it to a master (trio in
guest mode on Textual's asyncio loop), ``ReplayBackend(snapshots)`` plays recorded status
snapshots instead (tests, screenshots, offline demos).
"""

from __future__ import annotations

from ._app import ConsoleApp
from ._app_messages import LinkState
from ._backend import Backend
from ._link import LiveBackend
from ._replay_backend import ReplayBackend
from ._sample import sample_status

__all__ = ["Backend", "ConsoleApp", "LinkState", "LiveBackend", "ReplayBackend", "sample_status"]
