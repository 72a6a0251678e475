"""The trio master server: connections, the projects' event loops, requests and persistence.

The master wires the training core (``mlitb.training``: allocation, budgets, reduction, project
state) to sockets and clocks. The names below are loaded on first use, so that importing one of
its modules (``mlitb.master._dataservers``, say) does not pull in trio-websocket.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._connection import RequestError
    from ._persist import ProjectFiles, Unreadable
    from ._server import AUTOSAVE_EVERY, Master

_EXPORTS = {
    "AUTOSAVE_EVERY": "._server",
    "Master": "._server",
    "ProjectFiles": "._persist",
    "RequestError": "._connection",
    "Unreadable": "._persist",
}

__all__ = [
    "AUTOSAVE_EVERY", "Master", "ProjectFiles", "RequestError", "Unreadable",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
