"""A small blocking client of the data server (stdlib ``http.client``: nothing to install).

For the CLI (``mlitb data upload``), Python nodes (run it in a thread or a worker process) and
tests. One connection per call; a batch response is decoded with ``mlitb.protocol``.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

import numpy as np
import numpy.typing as npt

from mlitb.protocol import DataBatchFrame, decode_data_batch

from ._errors import DataServerError
from ._ids import format_ids
from ._ingest import InputShape

Progress = Callable[[int, int], None]
"""Called with (bytes sent, total bytes) while an upload streams."""


class _Reader:
    """A file wrapper that reports progress to ``http.client`` as it reads."""

    def __init__(self, file: IO[bytes], total: int, progress: Progress) -> None:
        self.file, self.total, self.progress, self.sent = file, total, progress, 0

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.sent += len(data)
        self.progress(self.sent, self.total)
        return data


class DataClient:
    """``DataClient("http://host:8001", token=...)``: every method raises ``DataServerError``."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 120.0,
                 cafile: str | os.PathLike[str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"data server URL must be http(s)://host[:port], got {url!r}")
        self.url, self.token, self.timeout = url, token, timeout
        self._parts = parts
        self._context = None
        if parts.scheme == "https":  # verified against cafile / MLITB_CAFILE or the system's
            from mlitb._tls import client_context

            self._context = client_context(cafile)

    def __repr__(self) -> str:  # the token stays out of logs
        return f"DataClient({self.url!r}, token={'***' if self.token else None})"

    def _request(self, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        connection: http.client.HTTPConnection
        if self._context is not None:
            connection = http.client.HTTPSConnection(
                self._parts.hostname or "", self._parts.port, timeout=self.timeout,
                blocksize=1 << 20, context=self._context)
        else:
            connection = http.client.HTTPConnection(self._parts.hostname or "", self._parts.port,
                                                    timeout=self.timeout, blocksize=1 << 20)
        headers = dict(headers or {})
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            try:
                connection.request(method, self._parts.path.rstrip("/") + path, body=body,
                                   headers=headers)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError,
                    ssl.SSLZeroReturnError):
                pass  # the server refused before reading everything: its answer says why
            try:
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as error:
                raise DataServerError(f"{method} {path}: no answer from the data server at "
                                      f"{self.url}: {error}", 0) from error
        finally:
            connection.close()
        if response.status >= 400:
            try:
                message = str(json.loads(data)["error"])
            except (ValueError, KeyError, TypeError):
                message = data[:200].decode("utf-8", "replace")
            raise DataServerError(f"{method} {path}: {response.status}: {message}",
                                  response.status, message)
        return response.status, data

    def _json(self, method: str, path: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._request(method, path)[1])
        return result

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def info(self, project: str) -> dict[str, Any]:
        return self._json("GET", f"/projects/{project}")

    def manifest(self, project: str) -> dict[str, Any]:
        return self._json("GET", f"/projects/{project}/manifest")

    def delete(self, project: str) -> dict[str, Any]:
        return self._json("DELETE", f"/projects/{project}")

    def upload(self, project: str, archive: str | os.PathLike[str], *, split: str = "train",
               shape: InputShape | None = None, progress: Progress | None = None,
               ) -> dict[str, Any]:
        """Stream a zip; ``shape`` is needed for a project's first upload."""
        query: dict[str, Any] = {"split": split}
        if shape is not None:
            query |= {"width": shape.width, "height": shape.height, "channels": shape.channels}
        size = Path(archive).stat().st_size
        with open(archive, "rb") as file:
            body: Any = file if progress is None else _Reader(file, size, progress)
            _, data = self._request(
                "POST", f"/projects/{project}/uploads?{urlencode(query)}", body=body,
                headers={"Content-Type": "application/zip", "Content-Length": str(size)})
        result: dict[str, Any] = json.loads(data)
        return result

    def batch(self, project: str, ids: Sequence[int] | npt.NDArray[np.integer],
              shape: tuple[int, int, int] | None = None) -> DataBatchFrame:
        """Fetch ids (at most the project's ``max_batch_ids``) as one binary frame."""
        _, data = self._request("POST", f"/projects/{project}/batch", body=format_ids(ids),
                                headers={"Content-Type": "text/plain"})
        return decode_data_batch(data, shape=shape)
