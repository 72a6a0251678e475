"""The data server over real HTTP on loopback: hypercorn on trio, started with nursery.start on
port 0, driven by real clients (``DataClient`` and raw ``http.client``) in threads."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.lowlevel
from helpers.dataserver import (
    NO_AUTH,
    RGB8,
    SHAPE_QUERY,
    TEST_TOKEN,
    dataset,
    open_server,
    png,
    rng,
    zip_of,
)
from PIL import Image

from mlitb.dataserver import (
    DataClient,
    DataServerError,
    InputShape,
    Registration,
    UploadLimits,
    decode_archive,
)
from mlitb.errors import UploadError
from mlitb.protocol import decode_data_batch


@pytest.mark.trio
async def test_upload_info_and_batch_round_trip(tmp_path: Path) -> None:
    with trio.fail_after(30):
        archive = dataset(tmp_path / "d.zip", ["dog", "cat", "emu"] * 10)
        expected = decode_archive(archive, RGB8)
        async with open_server(tmp_path / "store") as server:
            status, body = await server.upload("pets", archive)
            assert status == 201, body
            assert body == {"project": "pets", "split": "train", "ids": [0, 29], "count": 30,
                            "labels": ["cat", "dog", "emu"],
                            "counts": {"cat": 10, "dog": 10, "emu": 10}}
            [registration] = server.registered
            assert registration.ids == range(30) and registration.split == "train"
            assert registration.label_names == ("cat", "dog", "emu")
            assert np.array_equal(registration.labels, expected.labels)

            info = await trio.to_thread.run_sync(server.client.info, "pets")
            assert info["count"] == 30 and info["train"] == 30 and info["test"] == 0
            assert info["ids"] == {"train": "0-29", "test": ""}
            assert info["shape"] == {"width": 8, "height": 8, "channels": 3}
            assert info["max_batch_ids"] == 16_384

            status, data, headers = await server.request("GET", "/projects/pets/batch?ids=0-29")
            assert status == 200 and headers["content-type"] == "application/octet-stream"
            frame = decode_data_batch(data, shape=(3, 8, 8), num_labels=3)
            assert frame.ids.tolist() == list(range(30))
            assert np.array_equal(frame.pixels, expected.images)
            assert np.array_equal(frame.labels, expected.labels)

            order = [29, 3, 4, 5, 0]
            frame = await trio.to_thread.run_sync(server.client.batch, "pets", order)
            assert frame.ids.tolist() == order
            assert np.array_equal(frame.pixels, expected.images[order])

            manifest = await trio.to_thread.run_sync(server.client.manifest, "pets")
            assert manifest["sha256"] == list(expected.sha256)


@pytest.mark.trio
async def test_async_callback_label_growth_and_splits(tmp_path: Path) -> None:
    seen: list[Registration] = []

    async def on_registered(registration: Registration) -> None:
        await trio.lowlevel.checkpoint()
        seen.append(registration)

    with trio.fail_after(30):
        async with open_server(tmp_path / "s", on_registered=on_registered) as server:
            assert (await server.upload("p", dataset(tmp_path / "a.zip", ["b", "c"])))[0] == 201
            status, body = await server.upload("p", dataset(tmp_path / "b.zip", ["a", "c", "a"]),
                                               query="split=test")
            assert status == 201 and body["ids"] == [2, 4] and body["labels"] == ["b", "c", "a"]
            assert body["counts"] == {"a": 2, "c": 1}
            assert [r.split for r in seen] == ["train", "test"]
            assert seen[1].label_names == ("b", "c", "a")
            info = await trio.to_thread.run_sync(server.client.info, "p")
            assert info["ids"] == {"train": "0-1", "test": "2-4"}
            assert info["counts"]["test"] == {"a": 2, "c": 1}


def bad_archive(kind: str, path: Path) -> tuple[Path, str]:
    """A refused archive and a fragment of the error it must earn."""
    if kind == "not a zip":
        path.write_bytes(b"PK\x03\x04 but then nothing that makes sense" * 20)
        return path, "not a valid zip archive"
    if kind == "path traversal":
        return zip_of(path, {"cat/1.png": png(), "../../etc/x.png": png()}), "'../../etc/x.png'"
    if kind == "zip bomb":
        return zip_of(path, {"cat/1.png": png(), "cat/b.png": bytes(16 << 20)}, deflate=True), \
            "zip bomb"
    if kind == "non-image file":
        return zip_of(path, {"cat/1.png": png(), "cat/run.sh": b"#!/bin/sh\n"}), \
            "'cat/run.sh': is not an image"
    if kind == "empty archive":
        return zip_of(path, {}), "holds no files"
    if kind == "too many files":
        return zip_of(path, {f"cat/{i}.png": png() for i in range(12)}), "over the limit of 10"
    if kind == "corrupted image":
        return zip_of(path, {"cat/1.png": png(), "cat/2.png": png(32)[:200]}), \
            "'cat/2.png': is not an image"
    raise AssertionError(kind)


@pytest.mark.trio
@pytest.mark.parametrize("kind", ["not a zip", "path traversal", "zip bomb", "non-image file",
                                  "empty archive", "too many files", "corrupted image"])
async def test_bad_uploads_get_400_and_store_nothing(tmp_path: Path, kind: str) -> None:
    with trio.fail_after(30):
        async with open_server(tmp_path / "s", limits=UploadLimits(max_entries=10)) as server:
            assert (await server.upload("p", dataset(tmp_path / "ok.zip", ["a"] * 3)))[0] == 201
            before = sorted((p.name, p.stat().st_size) for p in (tmp_path / "s" / "p").iterdir())
            archive, message = bad_archive(kind, tmp_path / "bad.zip")
            for project in ("p", "fresh"):
                status, body = await server.upload(project, archive)
                assert status == 400 and message in body["error"], body
            assert server.store.projects() == ["p"] and server.store.info("p").count == 3
            after = sorted((p.name, p.stat().st_size) for p in (tmp_path / "s" / "p").iterdir())
            assert after == before
            assert list(server.store.tmp_dir.iterdir()) == []  # the spooled upload is gone
            assert len(server.registered) == 1


@pytest.mark.trio
async def test_oversize_uploads_get_413(tmp_path: Path) -> None:
    with trio.fail_after(30):
        limits = UploadLimits(max_archive_bytes=20_000)
        async with open_server(tmp_path / "s", limits=limits) as server:
            archive = dataset(tmp_path / "big.zip", ["a"] * 60, side=16)
            assert archive.stat().st_size > 20_000
            status, body = await server.upload("p", archive)  # Content-Length says it at once
            assert status == 413 and "over the limit of 20000" in body["error"]
            data = archive.read_bytes()
            chunks = iter([data[i:i + 4096] for i in range(0, len(data), 4096)])
            status, body, _ = await server.request(  # an iterator is sent chunked, no length:
                "POST", f"/projects/p/uploads?{SHAPE_QUERY}", chunks)  # caught while spooling
            assert status == 413 and "over the limit" in body["error"]
            huge = tmp_path / "huge.zip"  # far past the socket buffers: the client sees the 413
            huge.write_bytes(bytes(8 << 20))
            with pytest.raises(DataServerError, match="413: the upload is 8388608 bytes"):
                await trio.to_thread.run_sync(
                    partial(server.client.upload, "p", huge, shape=RGB8))
            assert server.store.projects() == [] and list(server.store.tmp_dir.iterdir()) == []
            small = dataset(tmp_path / "small.zip", ["a"] * 2)
            assert (await server.upload("p", small))[0] == 201


@pytest.mark.trio
async def test_a_client_gone_mid_upload_leaves_nothing(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(30):
        async with open_server(tmp_path / "s") as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(f"POST /projects/p/uploads?{SHAPE_QUERY} HTTP/1.1\r\n"
                                  f"Host: x\r\nAuthorization: Bearer {TEST_TOKEN}\r\n"
                                  "Content-Type: application/zip\r\n"
                                  "Content-Length: 100000\r\n\r\n".encode()
                                  + bytes(3000))
            while not list(server.store.tmp_dir.iterdir()):  # the spool file exists...
                await trio.sleep(0.01)
            await stream.aclose()
            while list(server.store.tmp_dir.iterdir()):  # ...and goes with the client
                await trio.sleep(0.01)
            assert server.store.projects() == [] and server.registered == []
            assert (await server.request("GET", "/healthz"))[0] == 200
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


@pytest.mark.trio
async def test_shape_rules(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_server(tmp_path / "s") as server:
            archive = dataset(tmp_path / "d.zip", ["a", "b"])
            status, body = await server.upload("p", archive, query="split=train")
            assert status == 400 and "needs width, height and channels" in body["error"]
            status, body = await server.upload("p", archive, query="width=8&height=8&channels=2")
            assert status == 400 and "channels must be 1" in body["error"]
            status, body = await server.upload("p", archive, query="width=x&height=8&channels=3")
            assert status == 400 and "width must be a positive integer" in body["error"]
            status, body = await server.upload("p", archive, query=SHAPE_QUERY + "&split=dev")
            assert status == 400 and "split must be" in body["error"]
            assert (await server.upload("p", archive))[0] == 201
            status, body = await server.upload("p", archive, query="width=16")
            assert status == 409 and "takes 8x8x3" in body["error"]
            status, body = await server.upload("p", archive, query="")
            assert status == 201 and body["ids"] == [2, 3]


@pytest.mark.trio
async def test_check_upload_refuses_or_supplies_the_shape(tmp_path: Path) -> None:
    def check_upload(project: str, split: str) -> InputShape | None:
        if project == "unknown":
            raise UploadError(f"the master has no project named {project!r}")
        return RGB8 if project == "known" else None

    with trio.fail_after(30):
        async with open_server(tmp_path / "s", check_upload=check_upload) as server:
            archive = dataset(tmp_path / "d.zip", ["a", "b"])
            status, body = await server.upload("unknown", archive)
            assert status == 400 and "no project named 'unknown'" in body["error"]
            status, body = await server.upload("known", archive, query="split=test")
            assert status == 201 and body["count"] == 2
            status, body = await server.upload("known", archive, query="width=9")
            assert status == 409 and "takes 8x8x3" in body["error"]
            assert (await server.upload("other", archive))[0] == 201  # None: the query decides
            assert server.store.projects() == ["known", "other"]


@pytest.mark.trio
async def test_batch_errors(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_server(tmp_path / "s", max_batch_ids=10) as server:
            await server.upload("p", dataset(tmp_path / "d.zip", ["a"] * 5))
            cases = [
                ("/projects/nope/batch?ids=0", 404, "'nope': no data"),
                ("/projects/p/batch?ids=3-9", 404, "5 unknown id(s): 5-9"),
                ("/projects/p/batch?ids=1-x", 400, "not an id"),
                ("/projects/p/batch?ids=0-20", 400, "10 ids per request"),
                ("/projects/p/batch?ids=1,1", 400, "more than once"),
                ("/projects/..bad/batch?ids=0", 400, "project name"),
                ("/projects/nope", 404, "no data"),
                ("/no/such/path", 404, "not found"),
            ]
            for path, status, message in cases:
                got, body, _ = await server.request("GET", path)
                assert (got, message in body["error"]) == (status, True), (path, body)
            got, data, _ = await server.request("GET", "/projects/p/batch?ids=")
            assert got == 200 and len(decode_data_batch(data).ids) == 0
            got, body, _ = await server.request("POST", "/projects/p/batch", b"0-1," * 300_000)
            assert got == 413
            with pytest.raises(DataServerError) as caught:
                await trio.to_thread.run_sync(server.client.batch, "p", [7])
            assert caught.value.status == 404


@pytest.mark.trio
async def test_upload_token_guards_uploads_and_deletes(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_server(tmp_path / "s", upload_token="s3cret") as server:
            archive = dataset(tmp_path / "d.zip", ["a"])
            for headers in (NO_AUTH, {"Authorization": "Bearer wrong"},
                            {"Authorization": "s3cret"}):
                status, body, got = await server.request(
                    "POST", f"/projects/p/uploads?{SHAPE_QUERY}", archive.read_bytes(), headers)
                assert status == 401 and "operator token" in body["error"]
                assert got["www-authenticate"] == "Bearer"
            assert server.store.projects() == []
            good = {"Authorization": "Bearer s3cret"}
            assert (await server.upload("p", archive, headers=good))[0] == 201
            status, _, _ = await server.request("GET", "/projects/p/batch?ids=0")
            assert status == 200  # reading needs no token
            assert (await server.request("DELETE", "/projects/p", headers=NO_AUTH))[0] == 401
            client = DataClient(f"http://127.0.0.1:{server.port}", token="s3cret")
            assert await trio.to_thread.run_sync(client.delete, "p") == {"deleted": "p"}
            assert (await server.request("GET", "/projects/p"))[0] == 404


@pytest.mark.trio
async def test_a_failed_registration_is_reported(tmp_path: Path) -> None:
    def on_registered(registration: Registration) -> None:
        raise RuntimeError("master unreachable")

    with trio.fail_after(30):
        async with open_server(tmp_path / "s", on_registered=on_registered) as server:
            status, body = await server.upload("p", dataset(tmp_path / "d.zip", ["a", "b"]))
            assert status == 502 and body["ids"] == [0, 1]
            assert "stored as ids 0-1" in body["error"] and "master unreachable" in body["error"]
            assert server.store.info("p").count == 2


@pytest.mark.trio
async def test_health_projects_and_static_files(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_server(tmp_path / "s") as server:
            assert await trio.to_thread.run_sync(server.client.health) == {
                "status": "ok", "projects": 0, "batches": 0}
            assert (await server.request("GET", "/projects"))[1] == {"projects": []}
            status, body, headers = await server.request("GET", "/")  # the browser client
            assert status == 200 and headers["content-type"].startswith("text/html")
            assert b'<script type="module" src="app.js">' in body
            assert (await server.request("GET", "/__init__.py"))[0] == 404
        site = tmp_path / "site"
        (site / "js").mkdir(parents=True)
        (site / "index.html").write_text("<!doctype html><title>mlitb</title>")
        (site / "js" / "app.js").write_text("export const x = 1;")
        (site / ".secret").write_text("no")
        async with open_server(tmp_path / "s", static=site) as server:
            status, body, headers = await server.request("GET", "/")
            assert status == 200 and body.startswith(b"<!doctype html>")
            assert headers["content-type"].startswith("text/html")
            status, body, headers = await server.request("GET", "/js/app.js")
            assert status == 200 and "javascript" in headers["content-type"]
            for path in ("/.secret", "/js/../index.html", "/js/", "/missing.css", "//js/app.js"):
                status, body, _ = await server.request("GET", path)
                assert status == 404 and "not found" in body["error"], path
            # Starlette's StaticFiles: a page reloaded fetches only what changed.
            status, _, headers = await server.request("GET", "/js/app.js")
            etag = headers["etag"]
            status, body, _ = await server.request("GET", "/js/app.js",
                                                   headers={"If-None-Match": etag})
            assert status == 304 and body == b""
            (site / "js" / "app.js").write_text("export const x = 2;  // changed")
            status, body, headers = await server.request("GET", "/js/app.js",
                                                         headers={"If-None-Match": etag})
            assert status == 200 and b"changed" in body and headers["etag"] != etag
            status, body, headers = await server.request("HEAD", "/index.html")
            assert status == 200 and body == b"" and int(headers["content-length"]) > 0


@pytest.mark.trio
async def test_cifar10_test_split_end_to_end(tmp_path: Path,
                                             cifar10_test_zip: Path) -> None:
    archive = cifar10_test_zip
    with trio.fail_after(120):
        async with open_server(tmp_path / "s") as server:
            shape = InputShape(width=32, height=32, channels=3)
            upload = partial(server.client.upload, "cifar", archive, split="test", shape=shape)
            latencies: list[float] = []
            async with trio.open_nursery() as nursery:
                async def poll_health() -> None:  # the loop stays free while the zip decodes
                    while True:
                        start = time.perf_counter()
                        await server.request("GET", "/healthz")
                        latencies.append(time.perf_counter() - start)
                        await trio.sleep(0.05)
                nursery.start_soon(poll_health)
                began = time.perf_counter()
                body = await trio.to_thread.run_sync(upload)
                took = time.perf_counter() - began
                nursery.cancel_scope.cancel()
            assert body["count"] == 10_000 and set(body["counts"].values()) == {1000}
            # A loop blocked by the decoding would answer one poll only after most of the
            # upload; on a busy machine a poll may still wait a scheduler slice or two.
            assert len(latencies) > 5 and max(latencies) < max(0.5, took / 3), (took, latencies)

            frame = await trio.to_thread.run_sync(server.client.batch, "cifar", range(10_000))
            assert frame.pixels.shape == (10_000, 3, 32, 32)
            manifest = await trio.to_thread.run_sync(server.client.manifest, "cifar")
            with zipfile.ZipFile(archive) as z:
                by_hash = {hashlib.sha256(z.read(i)).hexdigest(): i.filename
                           for i in z.infolist() if not i.is_dir()}
                for i in rng.choice(10_000, 50, replace=False).tolist():
                    name = by_hash[manifest["sha256"][i]]
                    assert body["labels"][frame.labels[i]] == name.split("/")[0]
                    pixels = np.asarray(Image.open(io.BytesIO(z.read(name))).convert("RGB"))
                    assert np.array_equal(frame.pixels[i], pixels.transpose(2, 0, 1))
