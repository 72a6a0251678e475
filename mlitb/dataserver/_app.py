"""The data server's HTTP API: a Starlette app over a ``DataStore`` (docs/dataserver.md documents it).

Handlers run on trio (hypercorn's trio worker); everything that blocks — spooling writes, zip
decoding, store commits and reads — runs in ``trio.to_thread``. Errors leave as JSON
``{"error": message}`` with a status chosen by ``_status``.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.resources
import inspect
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from mlitb._addresses import address_key
from mlitb.errors import AuthError, MlitbError, UploadError
from mlitb.protocol import (
    MAX_DATA_FRAME,
    MAX_IDS_PER_MESSAGE,
    MAX_LABEL_LENGTH,
    encode_data_batch,
)

from ._errors import (
    LabelConflictError,
    ProjectDeletedError,
    ShapeMismatchError,
    StoreError,
    StoreUnavailableError,
    UnknownIdsError,
    UnknownProjectError,
)
from ._ids import parse_ids
from ._pending import RETRY_AFTER, BusyError, PendingUploads
from ._ingest import (
    DEFAULT_LIMITS,
    Decoded,
    InputShape,
    UploadLimits,
    _decode_into,
    decode_archive,
    nfc,
)
from ._backend import DataStore
from ._static import BrowserFiles
from ._store import SPLITS, Registration, Split, check_project_name

OnRegistered = Callable[[Registration], Awaitable[None] | None]
"""Called (sync, or awaited when it returns an awaitable) after each upload is committed."""
CheckUpload = Callable[[str, str], InputShape | None]
"""Called with (project, split) before an upload is read: raise ``UploadError`` (400) or
``UnknownProjectError`` (404) to refuse it; return the project's input shape, if known, so the
upload may omit width/height/channels (given ones must match)."""
PlanLabels = Callable[[str, tuple[str, ...]], tuple[str, ...] | None]
"""Called with (project, the label list the store would have after an upload: stored labels, then
the upload's new ones) before the upload is stored: the label list the project's model numbers
them by (the store adopts it), None to keep the store's own; raise ``LabelConflictError`` (409)
to refuse the upload."""
MayContribute = Callable[[str, str], bool]
"""Called with (project, a bearer token that is not the upload token): whether it is that
project's contributor token (uploads and taught images; never deletes)."""
MayRead = Callable[[str, "str | None"], bool]
"""Called with (project, the bearer token or None): whether it may read the project's data."""
MAX_BATCH_IDS = 16_384
MAX_BATCH_BYTES = 64 << 20
MAX_ID_LIST_BYTES = 1 << 20
_SPOOL_CHUNK = 1 << 20
BODY_TIMEOUT = 30.0
"""Seconds a request body may go without sending a byte before it is answered 408."""
SIMPLE_CONTENT_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data",
                                  "text/plain"})
"""Content types another web page may POST here without a CORS preflight: writes refuse them."""
log = logging.getLogger(__name__)


class TooLargeError(MlitbError):
    """A request body was over its limit (answered 413)."""


class BodyTimeoutError(MlitbError):
    """A request body stalled for longer than the body timeout (answered 408)."""


class CrossOriginError(MlitbError):
    """A write that another web page could have sent (answered 403 or 415)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ReadableFromAnyOrigin:
    """ASGI wrapper: the answers a trainer reads (``GET /projects/P``, ``GET|POST
    /projects/P/batch``) carry ``Access-Control-Allow-Origin: *``, errors included, and their
    preflights (``OPTIONS``, for an ``Authorization`` header) are answered.

    With several data servers on one store, a browser trainer whose page came from one of them
    may be sent to another (the master's ``data_urls``), which is another origin. These are
    simple requests (GET, or a ``text/plain`` POST of ids), so no preflight is needed; they
    carry no credentials and change nothing, and every other route (writes above all) stays
    same-origin only (``DataServer._check_write``)."""

    HEADER = (b"access-control-allow-origin", b"*")

    def __init__(self, app: Any) -> None:
        self.app = app

    PREFLIGHT = [HEADER, (b"access-control-allow-methods", b"GET, POST"),
                 (b"access-control-allow-headers", b"authorization, content-type"),
                 (b"access-control-max-age", b"600"), (b"content-length", b"0")]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS" and _read_route(
                "GET", scope["path"]):
            # A join-token project's trainer sends Authorization, which is preflighted.
            await send({"type": "http.response.start", "status": 204,
                        "headers": self.PREFLIGHT})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["type"] != "http" or not _read_route(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_readable(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.HEADER]}
            await send(message)

        await self.app(scope, receive, send_readable)


def _read_route(method: str, path: str) -> bool:
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "projects":
        return method == "GET"
    return len(parts) == 3 and parts[0] == "projects" and parts[2] == "batch" and method in (
        "GET", "POST")


def _status(error: Exception) -> int:
    if isinstance(error, TooLargeError):
        return 413
    if isinstance(error, BodyTimeoutError):
        return 408
    if isinstance(error, (CrossOriginError, BusyError)):
        return error.status
    if isinstance(error, AuthError):
        return 401
    if isinstance(error, (UnknownProjectError, UnknownIdsError)):
        return 404
    if isinstance(error, (ShapeMismatchError, LabelConflictError, ProjectDeletedError)):
        return 409
    if isinstance(error, StoreUnavailableError) or (
            isinstance(error, StoreError) and isinstance(error.__cause__, OSError)):
        return 500
    return 400


async def _error_response(request: Request, error: Exception) -> Response:
    if isinstance(error, HTTPException):
        return JSONResponse({"error": error.detail}, status_code=error.status_code)
    status = _status(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else \
        {"Retry-After": str(RETRY_AFTER)} if isinstance(error, BusyError) else None
    if status >= 500 and not isinstance(error, BusyError):  # a flood of 503s logs nothing
        log.error("%s %s: %s", request.method, request.url.path, error)
    return JSONResponse({"error": str(error)}, status_code=status, headers=headers)


def _int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if not value.isdecimal() or len(value) > 6:
        raise UploadError(f"{name} must be a positive integer, got {value[:20]!r}")
    return int(value)


class DataServer:
    """The request handlers and their configuration; ``app`` is the ASGI application."""

    def __init__(self, store: DataStore, *, on_registered: OnRegistered | None = None,
                 check_upload: CheckUpload | None = None, plan_labels: PlanLabels | None = None,
                 upload_token: str | None = None, may_contribute: MayContribute | None = None,
                 may_read: MayRead | None = None,
                 is_upload_token: Callable[[str], bool] | None = None,
                 limits: UploadLimits = DEFAULT_LIMITS,
                 max_batch_ids: int = MAX_BATCH_IDS, max_batch_bytes: int = MAX_BATCH_BYTES,
                 static: Traversable | None = None,
                 client_config: dict[str, Any] | None = None,
                 body_timeout: float = BODY_TIMEOUT) -> None:
        self.store = store
        self.body_timeout = body_timeout
        self.client_config = client_config
        self.static_root = static or importlib.resources.files("mlitb.browser")
        self.on_registered = on_registered
        self.check_upload = check_upload
        self.plan_labels = plan_labels
        self.upload_token = upload_token
        self.may_contribute = may_contribute
        self.may_read = may_read  # None: every project's data is open to read
        # Under mlitb master: the master's check, so a rotated operator token applies at once.
        self.is_upload_token = is_upload_token
        self.limits = limits
        self.max_batch_ids = min(max_batch_ids, MAX_IDS_PER_MESSAGE)
        self.max_batch_bytes = min(max_batch_bytes, MAX_DATA_FRAME)
        self.batches_served = 0  # /healthz shows it: which data servers workers use
        self._upload_lock = trio.Lock()  # one decode at a time: CPU and memory stay bounded
        # ...and a bounded number waiting for it, each holding its spooled body.
        self.pending = PendingUploads(limits.max_pending, limits.max_pending_per_address)
        routes = [
            Route("/healthz", self.healthz),
            Route("/projects", self.list_projects),
            Route("/projects/{project}", self.project_info),
            Route("/projects/{project}", self.delete_project, methods=["DELETE"]),
            Route("/projects/{project}/manifest", self.manifest),
            Route("/projects/{project}/uploads", self.upload, methods=["POST"]),
            Route("/projects/{project}/images", self.upload_image, methods=["POST"]),
            Route("/projects/{project}/batch", self.batch, methods=["GET", "POST"]),
            Route("/config.json", self.config),
            Mount("/", app=BrowserFiles(str(self.static_root))),
        ]
        self.app = Starlette(routes=routes, middleware=[Middleware(ReadableFromAnyOrigin)],
                             exception_handlers={HTTPException: _error_response,
                                                 MlitbError: _error_response})

    # -- helpers --------------------------------------------------------------------------------
    def _check_write(self, request: Request, *, body: bool = True) -> None:
        """Refuse a write another web page could make a visitor's browser send (CSRF): an
        ``Origin`` other than this server's, or (with a body) a content type a page may POST
        without a CORS preflight. This server sends no CORS headers, so a cross-origin request
        of any other type never gets past the browser's preflight."""
        origin = request.headers.get("origin")
        if origin is not None:
            # Host and port only: behind a TLS proxy the scheme seen here is http.
            host = origin.split("://", 1)[-1].rstrip("/").lower()
            if host != request.headers.get("host", "").lower():
                raise CrossOriginError(f"a write from another origin ({origin[:100]!r}) is "
                                       "refused: upload from this server's page, the CLI or "
                                       "the API", 403)
        if body:
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if not kind or kind in SIMPLE_CONTENT_TYPES:
                raise CrossOriginError(f"a write needs the body's own Content-Type "
                                       f"(application/zip for an upload, the image's type for "
                                       f"one image), got {kind[:60] or 'none'!r}", 415)

    async def _body(self, request: Request) -> AsyncIterator[bytes]:
        """The request body's chunks; ``BodyTimeoutError`` when none comes for
        ``body_timeout`` seconds."""
        chunks = request.stream().__aiter__()
        while True:
            with trio.move_on_after(self.body_timeout) as waited:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
            if waited.cancelled_caught:
                raise BodyTimeoutError(f"the request body stalled for {self.body_timeout:g} s; "
                                       "nothing was stored")
            yield chunk

    def _authorize(self, request: Request, *, contribution: bool) -> None:
        """Every write needs ``Authorization: Bearer TOKEN``: the upload token (under
        ``mlitb master``, the operator token), or, for adding data (``contribution``), the
        project's contributor token. Compared in constant time; never logged. A server
        without an upload token accepts no writes."""
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        given = given.strip() if scheme.lower() == "bearer" else ""
        if given and self._is_upload_token(given):
            return
        if given and contribution and self.may_contribute is not None:
            project = request.path_params.get("project", "")
            if self.may_contribute(project, given):
                return
        if self.upload_token is None and self.is_upload_token is None and \
                self.may_contribute is None:
            raise AuthError("this data server was started without an upload token: it "
                            "accepts no uploads, taught images or deletes")
        what = "uploads and taught images need the operator token or the project's " \
               "contributor token" if contribution else "deletes need the operator token"
        raise AuthError(f"{what} as 'Authorization: Bearer TOKEN'; the token was "
                        f"{'wrong' if given else 'missing'}")

    def _is_upload_token(self, given: str) -> bool:
        if self.is_upload_token is not None:
            return self.is_upload_token(given)
        return self.upload_token is not None and \
            hmac.compare_digest(given.encode(), self.upload_token.encode())

    def _check_read(self, request: Request) -> None:
        """A project with a join token keeps its data to those who hold it (or its
        contributor token, or the operator token): ``Authorization: Bearer TOKEN``."""
        if self.may_read is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        given = given.strip() if scheme.lower() == "bearer" else ""
        project = request.path_params.get("project", "")
        if not self.may_read(project, given or None):
            raise AuthError(f"project {project[:64]!r} keeps its data to its trainers: send its "
                            f"join token as 'Authorization: Bearer TOKEN'; the token was "
                            f"{'wrong' if given else 'missing'}")

    @staticmethod
    def _address(request: Request) -> str:
        """What the client's address counts as for the per-address caps (behind a reverse
        proxy: the proxy's)."""
        return address_key(request.client.host) if request.client is not None else "unknown"

    def max_ids(self, shape: InputShape) -> int:
        """Most ids one batch request may name for a project of this shape."""
        per_id = int(np.prod(shape.array_shape)) + 8
        return max(1, min(self.max_batch_ids, (self.max_batch_bytes - 64) // per_id))

    def _project(self, request: Request) -> str:
        project: str = request.path_params["project"]
        check_project_name(project)
        return project

    async def _upload_shape(self, request: Request, project: str, split: str) -> InputShape:
        given = {k: _int_param(request, k) for k in ("width", "height", "channels")}
        stored = await trio.to_thread.run_sync(self.store.shape, project)
        if self.check_upload is not None:
            expected = self.check_upload(project, split)
            if expected is not None and stored is not None and expected != stored:
                raise ShapeMismatchError(f"project {project!r} expects {_shape(expected)} "
                                         f"images but stores {_shape(stored)} ones")
            stored = stored or expected
        if stored is None and None in given.values():
            raise UploadError(f"project {project!r} has no data yet: its first upload needs "
                              "width, height and channels query parameters")
        stored_values = vars(stored) if stored is not None else {}
        shape = InputShape(**{k: stored_values[k] if v is None else v for k, v in given.items()})
        if stored is not None and shape != stored:
            raise ShapeMismatchError(f"project {project!r} takes {_shape(stored)} images; the "
                                     f"upload asked for {_shape(shape)}")
        return shape

    async def _spool(self, request: Request) -> Path:
        """Stream the body into a temp file in the store's .tmp/, stopping past the size limit."""
        limit = self.limits.max_archive_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdecimal() and int(declared) > limit:
            raise TooLargeError(f"the upload is {declared} bytes, over the limit of {limit}")
        fd, name = await trio.to_thread.run_sync(
            partial(tempfile.mkstemp, suffix=".zip", dir=self.store.tmp_dir))
        path = Path(name)
        try:
            async with trio.wrap_file(os.fdopen(fd, "wb")) as file:
                size, pending = 0, bytearray()
                async for chunk in self._body(request):
                    size += len(chunk)
                    if size > limit:
                        raise TooLargeError(f"the upload is over the limit of {limit} bytes")
                    pending += chunk
                    if len(pending) >= _SPOOL_CHUNK:
                        await file.write(bytes(pending))
                        pending.clear()
                await file.write(bytes(pending))
        except BaseException as error:
            path.unlink(missing_ok=True)
            if isinstance(error, ClientDisconnect):
                raise UploadError("the client disconnected before the upload was complete") \
                    from None
            raise
        return path

    async def _labels_for(self, project: str, decoded: Decoded) -> tuple[str, ...] | None:
        """The label list to store the upload under (``plan_labels``), or None."""
        if self.plan_labels is None:
            return None
        stored = await trio.to_thread.run_sync(self.store.labels_with, project,
                                               decoded.label_names)
        return self.plan_labels(project, stored)

    async def _store(self, project: str, split: str, decoded: Decoded,
                     generation: int) -> Registration:
        """Store a decoded upload, unless its project was deleted (here or on the master)
        while it was being read and decoded: then nothing is stored."""
        if self.check_upload is not None:
            self.check_upload(project, split)  # the master's project is still there
        labels = await self._labels_for(project, decoded)
        return await trio.to_thread.run_sync(partial(
            self.store.add, project, decoded, _split(split), labels=labels,
            generation=generation))

    async def _register(self, registration: Registration) -> None:
        if self.on_registered is not None:
            result = self.on_registered(registration)
            if inspect.isawaitable(result):
                await result

    def _batch_body(self, project: str, ids: npt.NDArray[np.int64]) -> bytes:
        images, labels = self.store.get(project, ids)
        return encode_data_batch(ids.astype(np.uint32), labels, images)

    # -- endpoints ------------------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        projects = await trio.to_thread.run_sync(self.store.projects)
        return JSONResponse({"status": "ok", "projects": len(projects),
                             "batches": self.batches_served})

    async def list_projects(self, request: Request) -> Response:
        return JSONResponse({"projects": await trio.to_thread.run_sync(self.store.projects)})

    async def project_info(self, request: Request) -> Response:
        self._check_read(request)
        info = await trio.to_thread.run_sync(self.store.info, self._project(request))
        return JSONResponse({**info.to_json(), "max_batch_ids": self.max_ids(info.shape)})

    async def manifest(self, request: Request) -> Response:
        self._check_read(request)
        project = self._project(request)
        return JSONResponse(await trio.to_thread.run_sync(self.store.manifest, project))

    async def delete_project(self, request: Request) -> Response:
        self._authorize(request, contribution=False)
        self._check_write(request, body=False)
        project = self._project(request)
        await trio.to_thread.run_sync(self.store.delete, project)
        return JSONResponse({"deleted": project})

    async def upload(self, request: Request) -> Response:
        self._authorize(request, contribution=True)
        self._check_write(request)
        project = self._project(request)
        split = request.query_params.get("split", "train")
        if split not in SPLITS:
            raise UploadError(f"split must be 'train' or 'test', got {split[:20]!r}")
        # Before anything awaits: a declared size over the limit is answered at once, with
        # the body unread (hypercorn is not yet reading it when the answer goes out).
        declared = request.headers.get("content-length", "")
        if declared.isdecimal() and int(declared) > self.limits.max_archive_bytes:
            raise TooLargeError(f"the upload is {declared} bytes, over the limit of "
                                f"{self.limits.max_archive_bytes}")
        shape = await self._upload_shape(request, project, split)
        generation = await trio.to_thread.run_sync(self.store.generation, project)
        with self.pending.slot(self._address(request), "upload"):  # before the body is read
            path = await self._spool(request)
            try:
                async with self._upload_lock:
                    decoded = await trio.to_thread.run_sync(
                        decode_archive, path, shape, self.limits, abandon_on_cancel=True)
                    registration = await self._store(project, split, decoded, generation)
            finally:
                await trio.to_thread.run_sync(partial(path.unlink, missing_ok=True))
            return await self._registered(registration, decoded)

    async def _registered(self, registration: Registration, decoded: Decoded) -> Response:
        """Register a committed upload with the master; answer 201, or 502 if that failed."""
        ids, project = registration.ids, registration.project
        body: dict[str, Any] = {
            "project": project, "split": registration.split, "ids": [ids[0], ids[-1]],
            "count": len(ids), "labels": list(registration.label_names),
            "counts": decoded.label_counts()}
        try:
            await self._register(registration)
        except Exception as error:  # the data is stored; say so, and that the master missed it
            if isinstance(error, MlitbError):
                log.error("registering ids %d-%d of %r failed: %s", ids[0], ids[-1], project,
                          error)
            else:
                log.exception("registering ids %d-%d of %r failed", ids[0], ids[-1], project)
            body["error"] = (f"stored as ids {ids[0]}-{ids[-1]}, but registering them with the "
                             f"master failed: {error}")
            return JSONResponse(body, status_code=502)
        return JSONResponse(body, status_code=201)

    async def upload_image(self, request: Request) -> Response:
        """One labelled image as the raw body (the browser's "teach"): validated and converted
        like an image in a zip, stored as one new id, registered like an upload."""
        self._authorize(request, contribution=True)
        self._check_write(request)
        project = self._project(request)
        split = request.query_params.get("split", "train")
        if split not in SPLITS:
            raise UploadError(f"split must be 'train' or 'test', got {split[:20]!r}")
        label = request.query_params.get("label", "")
        if not 1 <= len(label) <= MAX_LABEL_LENGTH or not label.isprintable():
            raise UploadError(f"label must be 1-{MAX_LABEL_LENGTH} printable characters, got "
                              f"{label[:20]!r}")
        label = nfc(label)
        name = request.query_params.get("name", "") or "the image"
        limit = self.limits.max_file_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdecimal() and int(declared) > limit:  # before anything awaits
            raise TooLargeError(f"the image is {declared} bytes, over the limit of {limit}")
        shape = await self._upload_shape(request, project, split)
        generation = await trio.to_thread.run_sync(self.store.generation, project)
        with self.pending.slot(self._address(request), "image"):
            data = await _read_small_body(self._body(request), limit, "the image")
            async with self._upload_lock:
                decoded = await trio.to_thread.run_sync(
                    decode_image, data, label, shape, self.limits, name[:200])
                registration = await self._store(project, split, decoded, generation)
            return await self._registered(registration, decoded)

    async def config(self, request: Request) -> Response:
        """``client_config`` for the browser client (e.g. the master's URL); 404 when unset.
        The dict is read at every request, so its owner may fill it in after the server
        started (e.g. once the master's port is known)."""
        if self.client_config is None:
            raise HTTPException(404, "not found: /config.json (no client configuration)")
        return JSONResponse(self.client_config)

    async def batch(self, request: Request) -> Response:
        self._check_read(request)
        project = self._project(request)
        shape = await trio.to_thread.run_sync(self.store.shape, project)
        if shape is None:
            raise UnknownProjectError(f"project {project!r}: no data has been uploaded")
        if request.method == "POST":
            text = (await _read_small_body(self._body(request), MAX_ID_LIST_BYTES)
                    ).decode("ascii", "replace")
        else:
            text = request.query_params.get("ids", "")
        max_count = self.max_ids(shape)
        try:
            ids = parse_ids(text, max_count=max_count)
        except ValueError as error:
            raise UploadError(f"{error} (this project allows {max_count} ids per request)") \
                from None
        body = await trio.to_thread.run_sync(self._batch_body, project, ids)
        self.batches_served += 1
        return Response(body, media_type="application/octet-stream")


def decode_image(data: bytes, label: str, shape: InputShape, limits: UploadLimits = DEFAULT_LIMITS,
                 name: str = "the image") -> Decoded:
    """One image file's bytes -> a one-image ``Decoded`` labelled ``label``: the same checks
    (size, pixel count, Pillow formats) and the same conversion to ``shape`` as an image in an
    upload archive."""
    if len(data) > limits.max_file_bytes:
        raise TooLargeError(f"{name!r}: {len(data)} bytes, over the limit of "
                            f"{limits.max_file_bytes}")
    if not data:
        raise UploadError(f"{name!r}: the body is empty; send the image file's bytes")
    images = np.empty((1, *shape.array_shape), dtype=np.uint8)
    _decode_into(images[0], data, name, shape, limits)
    return Decoded(images=images, labels=np.zeros(1, dtype=np.uint32), label_names=(label,),
                   sha256=(hashlib.sha256(data).hexdigest(),), names=(name,))


def _shape(shape: InputShape) -> str:
    return f"{shape.width}x{shape.height}x{shape.channels} (width x height x channels)"


def _split(value: str) -> Split:
    return "test" if value == "test" else "train"


async def _read_small_body(chunks: AsyncIterator[bytes], limit: int,
                           what: str = "the id list") -> bytes:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            hint = "; split the request" if what == "the id list" else ""
            raise TooLargeError(f"{what} is over {limit} bytes{hint}")
    return bytes(body)
