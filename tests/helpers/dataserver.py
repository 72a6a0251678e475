"""A data server on loopback and the archives it is given (tests of the data server, its limits,
hostile uploads, the browser's data)."""

from __future__ import annotations

import http.client
import io
import json
import zipfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import trio
import trio.lowlevel
from PIL import Image

from mlitb.dataserver import (
    DataClient,
    InputShape,
    Registration,
    Store,
    serve_data_server,
    write_archive,
)

RGB8 = InputShape(width=8, height=8, channels=3)
SHAPE_QUERY = "width=8&height=8&channels=3"
TEST_TOKEN = "test-upload-token"
NO_AUTH = {"Authorization": ""}
rng = np.random.default_rng(3)


@dataclass
class Server:
    store: Store
    port: int
    client: DataClient
    registered: list[Registration]
    token: str | None = None

    async def request(self, method: str, path: str, body: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        """A raw request in a thread; JSON bodies are parsed. Writes get the content type the
        data server asks of them unless ``headers`` name one, and the server's upload token
        unless ``headers`` name an Authorization (``{"Authorization": ""}``: none)."""
        headers = dict(headers or {})
        if method in ("POST", "DELETE") and self.token is not None and \
                not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = f"Bearer {self.token}"
        if method == "POST" and not any(k.lower() == "content-type" for k in headers):
            if "/uploads" in path:
                headers["Content-Type"] = "application/zip"
            elif "/images" in path:
                headers["Content-Type"] = "image/png"

        def run() -> tuple[int, Any, dict[str, str]]:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                try:
                    connection.request(method, path, body=body, headers=headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # refused before the body was read: the answer is still there
                response = connection.getresponse()
                data = response.read()
                kind = response.getheader("content-type", "")
                parsed = json.loads(data) if kind.startswith("application/json") else data
                return response.status, parsed, {k.lower(): v for k, v in response.getheaders()}
            finally:
                connection.close()
        return await trio.to_thread.run_sync(run)

    async def upload(self, project: str, archive: Path, query: str = SHAPE_QUERY,
                     headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, body, _ = await self.request(
            "POST", f"/projects/{project}/uploads?{query}", archive.read_bytes(),
            headers or {"Content-Type": "application/zip"})
        return status, body


@asynccontextmanager
async def open_server(root: Path, **options: Any) -> AsyncIterator[Server]:
    store = Store(root, fsync=False)
    registered: list[Registration] = []
    options.setdefault("on_registered", registered.append)
    options.setdefault("upload_token", TEST_TOKEN)  # writes need a credential
    token = options["upload_token"]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_data_server, store, "127.0.0.1", 0, **options))
        yield Server(store, port, DataClient(f"http://127.0.0.1:{port}", token=token),
                     registered, token)
        nursery.cancel_scope.cancel()


def dataset(path: Path, labels: Iterable[str], side: int = 8) -> Path:
    return write_archive(path, [(x, rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
                                for x in labels])


def zip_of(path: Path, entries: dict[str, bytes], deflate: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def png(side: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()
