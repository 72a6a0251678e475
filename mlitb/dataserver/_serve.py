"""``serve_data_server``: the data server's HTTP API (``_app``) served with hypercorn on trio,
through listeners that cap its connections (``mlitb._connections``).

hypercorn has no connection limit, and ``hypercorn.trio.serve`` accepts connections itself.
So the data server runs hypercorn's per-connection server (``TCPServer``, what
``hypercorn.trio.serve`` runs for each accepted stream) in its own ``trio.serve_listeners`` over
``CappedListener``: every connection counts from its accept to its close, idle keep-alive ones
and silent ones too, which a cap on requests in flight (the ASGI-level alternative) would not
see. ``TCPServer`` is not documented API: pyproject pins hypercorn below 0.19, and the tests
over real sockets fail if its signature changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from importlib.resources.abc import Traversable
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIFramework
from hypercorn.utils import wrap_app

from .._connections import (
    DEFAULT_CONNECTION_LIMITS,
    REFUSAL_TIMEOUT,
    ConnectionCaps,
    ConnectionLimits,
    open_capped_listeners,
)
from .._tls import server_context
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
from ._pending import RETRY_AFTER

DEFAULT_PORT = 8001
BUSY_TIMEOUT = REFUSAL_TIMEOUT
"""Seconds a connection over a cap is given to send its request head and read the 503."""
MAX_BUSY_READ = 64 * 1024
"""Bytes read from a connection over a cap: its request head, then what it sends until it
closes (a close with unread bytes would reset the connection before the client read the 503)."""
TLS_HANDSHAKE_TIMEOUT = 10.0
"""A stranger's TLS handshake holds a connection that counts (hypercorn's default is 60 s)."""


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
    connection_limits: ConnectionLimits | ConnectionCaps = DEFAULT_CONNECTION_LIMITS,
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
    ``connection_limits``: TCP connections held at once, in total and per address (over them:
    503 with ``Retry-After`` to the first 64 at a time, the others closed at once); or the
    ``ConnectionCaps`` to count in (its counters can be read while it serves).
    """
    server = DataServer(store, on_registered=on_registered, check_upload=check_upload,
                        plan_labels=plan_labels,
                        upload_token=upload_token, may_contribute=may_contribute,
                        may_read=may_read, is_upload_token=is_upload_token,
                        limits=limits, max_batch_ids=max_batch_ids,
                        max_batch_bytes=max_batch_bytes, static=static,
                        client_config=client_config, body_timeout=body_timeout)
    caps = (connection_limits if isinstance(connection_limits, ConnectionCaps)
            else ConnectionCaps(connection_limits, server="the data server"))
    config = Config()
    ssl_context = None
    if certfile is not None:
        # mlitb's context, as the master's: hypercorn's own serves plain HTTP when the key is
        # in the certificate file (it needs both names).
        ssl_context = server_context(certfile, keyfile)
        ssl_context.set_alpn_protocols(config.alpn_protocols)
    config.ssl_handshake_timeout = TLS_HANDSHAKE_TIMEOUT
    config.accesslog = None
    config.errorlog = logging.getLogger("mlitb.dataserver.http")
    # Starlette's ASGI types are looser than hypercorn's.
    app = wrap_app(cast(ASGIFramework, server.app), config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)

    async def handle(stream: trio.abc.Stream) -> None:
        reason = caps.refusal_of(stream)
        if reason is not None:
            await answer_busy(stream, reason)
            return
        # What hypercorn.trio.serve runs for each connection it accepts (no lifespan state:
        # the app has no lifespan handlers).
        await TCPServer(app, config, context, {}, cast(Any, stream))

    async with trio.open_nursery() as nursery:
        listeners = await open_capped_listeners(port, caps, nursery, host=host,
                                                ssl_context=ssl_context)
        await nursery.start(partial(trio.serve_listeners, handle, listeners))
        task_status.started(listeners[0].port)


async def answer_busy(stream: trio.abc.Stream, reason: str) -> None:
    """Answer a connection over a cap ``503`` with ``Retry-After`` and ``reason``, once its
    request head has arrived, and close it; within ``BUSY_TIMEOUT`` whatever it does."""
    body = f"{reason} (retry in {RETRY_AFTER} s)\n".encode()
    answer = (b"HTTP/1.1 503 Service Unavailable\r\n"
              b"Retry-After: %d\r\nContent-Type: text/plain; charset=utf-8\r\n"
              b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (RETRY_AFTER, len(body))
              + body)
    with trio.move_on_after(BUSY_TIMEOUT):
        try:
            seen = b""
            while b"\r\n\r\n" not in seen and len(seen) < MAX_BUSY_READ:
                data = await stream.receive_some(MAX_BUSY_READ)
                if not data:
                    break
                seen += data
            await stream.send_all(answer)
            read = len(seen)
            while read < MAX_BUSY_READ and await stream.receive_some(MAX_BUSY_READ):
                read += MAX_BUSY_READ
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # gone, or a TLS handshake that failed
    await trio.aclose_forcefully(stream)
