"""The browser client's files, served by Starlette's ``StaticFiles``: ETag and Last-Modified
with 304 Not Modified (a reloaded page fetches only what changed), HEAD, byte ranges, and no
path outside the directory. What mlitb adds: hidden (``.x``), private (``_x``) and Python files
are never served, nor a path with ``..`` or an empty part, and a 404 says which path."""

from __future__ import annotations

import os

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope


def _refused(path: str) -> bool:
    parts = path.split("/")
    return any(p in ("", "..") or p.startswith((".", "_")) for p in parts) or \
        path.endswith((".py", ".pyc"))


class BrowserFiles(StaticFiles):
    """``directory``'s files at the root of the data server; ``/`` is ``index.html``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        # Symlinks inside the directory are followed (an install may link its files in); the
        # path itself still cannot leave the directory.
        super().__init__(directory=directory, html=True, follow_symlink=True)

    def get_path(self, scope: Scope) -> str:
        path = scope["path"].removeprefix(scope.get("root_path", "")).removeprefix("/")
        if path and _refused(path):
            raise HTTPException(404, f"not found: /{path}")
        return super().get_path(scope)

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code == 404:
                raise HTTPException(404, f"not found: {scope['path']}") from None
            raise
