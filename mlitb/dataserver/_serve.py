"""``serve_data_server``: the data server's HTTP API (``_app``) served with hypercorn on trio."""

from __future__ import annotations

import logging
from functools import partial
from collections.abc import Callable
from importlib.resources.abc import Traversable
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework

from ._app import (
    BODY_TIMEOUT,
    MAX_BATCH_BYTES,
    MAX_BATCH_IDS,
    CheckUpload,
    DataServer,
    MayContribute,
    MayRead,
    OnRegistered,
    PlanLabels,
)
from ._backend import DataStore
from ._ingest import DEFAULT_LIMITS, UploadLimits

DEFAULT_PORT = 8001


async def serve_data_server(
    store: DataStore,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    on_registered: OnRegistered | None = None,
    check_upload: CheckUpload | None = None,
    plan_labels: PlanLabels | None = None,
    upload_token: str | None = None,
    may_contribute: MayContribute | None = None,
    may_read: MayRead | None = None,
    is_upload_token: Callable[[str], bool] | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    limits: UploadLimits = DEFAULT_LIMITS,
    max_batch_ids: int = MAX_BATCH_IDS,
    max_batch_bytes: int = MAX_BATCH_BYTES,
    static: Traversable | None = None,
    client_config: dict[str, Any] | None = None,
    body_timeout: float = BODY_TIMEOUT,
) -> None:
    """Serve ``store`` over HTTP until cancelled; report the bound port (useful with port 0).

    ``on_registered``, ``check_upload``, ``plan_labels``: the master's seams (see
    ``OnRegistered``, ``CheckUpload``, ``PlanLabels``).
    ``upload_token``: uploads, taught images and deletes need ``Authorization: Bearer <token>``
    (without it, and without ``may_contribute``, the server accepts no writes).
    ``may_contribute``: (project, token) -> whether the token is that project's contributor
    token (it may add data, not delete it).
    ``may_read``: (project, token or None) -> whether the token may read that project's data
    (info, manifest, batches); None: every project's data is open.
    ``is_upload_token``: checks a bearer token instead of comparing it with ``upload_token``
    (the master's, whose operator token may be rotated while it runs).
    ``certfile``, ``keyfile``: serve https:// (PEM files).
    ``body_timeout``: seconds a request body may stall before it is answered 408.
    ``static``: the browser client's folder (default: the package ``mlitb.browser``).
    ``client_config``: served as ``GET /config.json`` for the browser client (404 when None),
    e.g. ``{"master_url": "ws://HOST:8000"}``; read at every request, so it may be filled in
    after the server started.
    """
    server = DataServer(store, on_registered=on_registered, check_upload=check_upload,
                        plan_labels=plan_labels,
                        upload_token=upload_token, may_contribute=may_contribute,
                        may_read=may_read, is_upload_token=is_upload_token,
                        limits=limits, max_batch_ids=max_batch_ids,
                        max_batch_bytes=max_batch_bytes, static=static,
                        client_config=client_config, body_timeout=body_timeout)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if certfile is not None:
        config.certfile, config.keyfile = certfile, keyfile
    config.accesslog = None
    config.errorlog = logging.getLogger("mlitb.dataserver.http")
    app = cast(ASGIFramework, server.app)  # Starlette's ASGI types are looser than hypercorn's
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, app, config))
        task_status.started(int(binds[0].rsplit(":", 1)[1]))
