"""The data server's cap on pending uploads (issue 11): uploads whose bodies stall hold their
places; over the cap per address the next upload is answered 429, over the total 503, both
with ``Retry-After`` and before its body is read; reads go on; a place frees when its upload
ends. Real HTTP on loopback from several loopback addresses (Linux routes 127/8 to lo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from helpers.dataserver import TEST_TOKEN, dataset, open_server, png

from mlitb.dataserver import UploadLimits

QUERY = "width=8&height=8&channels=3"


async def http(port: int, source: str, method: str, path: str, body: bytes = b"",
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request from ``source`` with ``Connection: close``: (status, headers, body)."""
    async with await trio.open_tcp_stream("127.0.0.1", port, local_address=source) as stream:
        head = {"Host": f"127.0.0.1:{port}", "Connection": "close",
                "Content-Length": str(len(body)), **(headers or {})}
        await stream.send_all(f"{method} {path} HTTP/1.1\r\n".encode() + b"".join(
            f"{k}: {v}\r\n".encode() for k, v in head.items()) + b"\r\n" + body)
        answer = bytearray()
        while chunk := await stream.receive_some(65536):
            answer += chunk
    top, _, content = bytes(answer).partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, content


def upload_headers(kind: str = "application/zip") -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_TOKEN}", "Content-Type": kind}


async def stalled_upload(port: int, source: str) -> trio.SocketStream:
    """An upload that sends its headers and the first bytes of a 100 kB body, then nothing."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    head = {"Host": f"127.0.0.1:{port}", "Content-Length": "100000", **upload_headers()}
    await stream.send_all(f"POST /projects/p/uploads?{QUERY} HTTP/1.1\r\n".encode() + b"".join(
        f"{k}: {v}\r\n".encode() for k, v in head.items()) + b"\r\n" + b"PK\x03\x04" * 64)
    return stream


async def spooling(tmp: Path, count: int) -> None:
    """Until ``count`` uploads are being spooled (each has its temp file)."""
    while len(list(tmp.iterdir())) != count:
        await trio.sleep(0.02)


@pytest.mark.trio
async def test_pending_uploads_over_the_caps_get_429_and_503_and_places_free_up(
        tmp_path: Path) -> None:
    archive = dataset(tmp_path / "d.zip", ["dog", "cat"] * 5).read_bytes()
    limits = UploadLimits(max_pending=2, max_pending_per_address=1)
    with trio.fail_after(30):
        async with open_server(tmp_path / "s", limits=limits) as server:
            port, tmp = server.port, server.store.tmp_dir
            first = await stalled_upload(port, "127.0.0.1")
            await spooling(tmp, 1)

            # Over the address's share: 429, for an upload and for a taught image alike.
            status, headers, body = await http(port, "127.0.0.1", "POST",
                                               f"/projects/p/uploads?{QUERY}", archive,
                                               upload_headers())
            assert status == 429 and headers["retry-after"] == "5", (status, body)
            message = json.loads(body)["error"]
            assert "1 upload from 127.0.0.1 is being received or decoded already" in message
            assert "at most 1 per address" in message
            status, headers, body = await http(port, "127.0.0.1", "POST",
                                               f"/projects/p/images?label=dog&{QUERY}", png(),
                                               upload_headers("image/png"))
            assert status == 429 and "this image" in json.loads(body)["error"]

            # Over the total: 503, from an address that has nothing pending.
            second = await stalled_upload(port, "127.0.0.2")
            await spooling(tmp, 2)
            status, headers, body = await http(port, "127.0.0.3", "POST",
                                               f"/projects/p/uploads?{QUERY}", archive,
                                               upload_headers())
            assert status == 503 and headers["retry-after"] == "5", (status, body)
            assert "receiving or decoding 2 uploads already" in json.loads(body)["error"]

            # Reads are not uploads: they go on.
            status, _, body = await http(port, "127.0.0.3", "GET", "/healthz")
            assert status == 200 and json.loads(body)["status"] == "ok"
            # Nothing refused was stored, and no refused body was spooled.
            assert server.store.projects() == [] and len(list(tmp.iterdir())) == 2

            # An upload that ends (here: its client leaves) frees its place.
            await first.aclose()
            await spooling(tmp, 1)
            status, _, body = await http(port, "127.0.0.1", "POST",
                                         f"/projects/p/uploads?{QUERY}", archive,
                                         upload_headers())
            assert status == 201, body
            assert json.loads(body)["count"] == 10
            status, _, body = await http(port, "127.0.0.3", "POST",
                                         f"/projects/p/images?label=dog&{QUERY}", png(),
                                         upload_headers("image/png"))
            assert status == 201, body
            await second.aclose()
            await spooling(tmp, 0)
            assert server.store.info("p").count == 11


@pytest.mark.trio
async def test_a_refused_upload_never_holds_a_place(tmp_path: Path) -> None:
    """Refusals before the body (no token, wrong content type, unknown shape) and after it
    (a broken zip) leave every place free."""
    archive = dataset(tmp_path / "d.zip", ["dog", "cat"] * 5).read_bytes()
    limits = UploadLimits(max_pending=1, max_pending_per_address=1)
    with trio.fail_after(30):
        async with open_server(tmp_path / "s", limits=limits) as server:
            port = server.port
            refusals = [
                (f"/projects/p/uploads?{QUERY}", archive, {"Content-Type": "application/zip"},
                 401),
                (f"/projects/p/uploads?{QUERY}", archive, upload_headers("text/plain"), 415),
                ("/projects/p/uploads", archive, upload_headers(), 400),
                (f"/projects/p/uploads?{QUERY}", b"not a zip", upload_headers(), 400),
            ]
            for path, body, headers, expected in refusals:
                status, _, _ = await http(port, "127.0.0.1", "POST", path, body, headers)
                assert status == expected, (path, status)
            status, _, body = await http(port, "127.0.0.1", "POST",
                                         f"/projects/p/uploads?{QUERY}", archive,
                                         upload_headers())
            assert status == 201, body


@pytest.mark.parametrize("field", ["max_pending", "max_pending_per_address", "max_entries",
                                   "max_archive_bytes"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_upload_limits_refuse_what_is_not_a_count(field: str, bad: object) -> None:
    with pytest.raises(ValueError, match=f"UploadLimits.{field} must be an integer >= 1"):
        UploadLimits(**{field: bad})  # type: ignore[arg-type]
