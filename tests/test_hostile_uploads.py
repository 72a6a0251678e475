"""Hostile uploads against a real data server on loopback (issues 11 and 14): every refusal leaves
the store as it was and answers with a clear error."""

from __future__ import annotations

import logging
import unicodedata
import zipfile
from pathlib import Path

import pytest
import trio
from helpers.dataserver import RGB8, SHAPE_QUERY, TEST_TOKEN, dataset, open_server, png, zip_of

from mlitb.cluster import open_store, serve_cluster
from mlitb.dataserver import DEFAULT_LIMITS, UploadLimits, decode_archive
from mlitb.errors import UploadError
from mlitb.master import Master

UPLOAD = f"/projects/p/uploads?{SHAPE_QUERY}"


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- the archive -------------------------------------------------------------------------------
def test_the_default_entry_limit_refuses_a_flood_of_tiny_images(tmp_path: Path) -> None:
    limit = DEFAULT_LIMITS.max_entries
    assert limit <= 60_000
    path = tmp_path / "flood.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(limit + 1):
            z.writestr(f"a/{i}.png", b"")
    with pytest.raises(UploadError, match=f"entries, over the limit of {limit}"):
        decode_archive(path, RGB8)


@pytest.mark.trio
async def test_an_operator_sets_the_entry_limit_and_a_refusal_stores_nothing(
        tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_server(tmp_path / "s", limits=UploadLimits(max_entries=20)) as server:
            assert (await server.upload("p", dataset(tmp_path / "ok.zip", ["a"] * 5)))[0] == 201
            before = server.store.info("p")
            status, body = await server.upload("p", dataset(tmp_path / "big.zip", ["a"] * 30))
            assert status == 400 and "over the limit of 20" in body["error"]
            assert server.store.info("p") == before


def _nul_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("dog/good.png", png())
        info = zipfile.ZipInfo("dog/bad.png")
        info.filename = "dog/bad\0.png"  # ZipInfo() would cut the name at the NUL
        z.writestr(info, png())
    return path


@pytest.mark.trio
async def test_a_nul_in_an_entry_name_is_refused(tmp_path: Path) -> None:
    path = _nul_zip(tmp_path / "nul.zip")
    with zipfile.ZipFile(path) as z:
        assert "dog/bad" in z.namelist()  # what zipfile shows: the truncated name
    with trio.fail_after(30):
        async with open_server(tmp_path / "s") as server:
            status, body = await server.upload("p", path)
            assert status == 400 and "NUL" in body["error"]
            assert server.store.projects() == []


@pytest.mark.trio
async def test_nfc_and_nfd_spellings_are_one_label_in_archives_and_teach(tmp_path: Path) -> None:
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert nfc != nfd and unicodedata.normalize("NFC", nfd) == nfc
    path = zip_of(tmp_path / "cafe.zip", {f"{nfc}/1.png": png(), f"{nfd}/2.png": png(),
                                          "tea/3.png": png()})
    with trio.fail_after(30):
        async with open_server(tmp_path / "s") as server:
            status, body = await server.upload("p", path)
            assert status == 201, body
            assert body["labels"] == [nfc, "tea"] and body["counts"] == {nfc: 2, "tea": 1}
            status, body, _ = await server.request(
                "POST", "/projects/p/images?label=" + "cafe%CC%81", png(8))
            assert status == 201 and body["labels"] == [nfc, "tea"]
            twice = zip_of(tmp_path / "twice.zip", {f"{nfc}/1.png": png(),
                                                    f"{nfd}/1.png": png()})
            status, body = await server.upload("p", twice)
            assert status == 400 and "appears twice" in body["error"]
            assert server.store.info("p").count == 4


# -- the HTTP layer ----------------------------------------------------------------------------
async def _raw(port: int, head: str, body: bytes = b"") -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(head.encode() + body)
    answer = b""
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            break
        if not chunk:
            break
        answer += chunk
        if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
            break
    await stream.aclose()
    return answer


@pytest.mark.trio
async def test_a_stalled_body_gets_408_and_nothing_is_kept(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_server(tmp_path / "s", body_timeout=0.5) as server:
            answer = await _raw(server.port, f"POST {UPLOAD} HTTP/1.1\r\nHost: x\r\n"
                                  f"Authorization: Bearer {TEST_TOKEN}\r\n"
                                "Content-Type: application/zip\r\n"
                                f"Content-Length: {2 << 20}\r\n\r\n", bytes(1 << 20))
            assert answer.startswith(b"HTTP/1.1 408") and b"stalled" in answer
            while list(server.store.tmp_dir.iterdir()):
                await trio.sleep(0.01)
            assert server.store.projects() == []


@pytest.mark.trio
async def test_cross_origin_writes_are_refused_and_the_page_s_own_still_work(
        tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_server(tmp_path / "s") as server:
            archive = dataset(tmp_path / "d.zip", ["a", "b"])
            # A web page elsewhere can POST text/plain (or nothing) without a preflight.
            status, body, _ = await server.request("POST", UPLOAD, archive.read_bytes(),
                                                   {"Content-Type": "text/plain"})
            assert status == 415 and "Content-Type" in body["error"]
            answer = await _raw(server.port, f"POST {UPLOAD} HTTP/1.1\r\nHost: x\r\n"
                                  f"Authorization: Bearer {TEST_TOKEN}\r\n"
                                f"Content-Length: {archive.stat().st_size}\r\n\r\n",
                                archive.read_bytes())
            assert answer.startswith(b"HTTP/1.1 415")
            evil = {"Origin": "http://evil.example", "Content-Type": "application/zip"}
            status, body, _ = await server.request("POST", UPLOAD, archive.read_bytes(), evil)
            assert status == 403 and "another origin" in body["error"]
            status, body, _ = await server.request(
                "POST", "/projects/p/images?label=a", png(),
                {"Origin": "http://evil.example", "Content-Type": "image/png"})
            assert status == 403
            assert server.store.projects() == []
            own = {"Origin": f"http://127.0.0.1:{server.port}",
                   "Content-Type": "application/zip"}
            status, _, _ = await server.request("POST", UPLOAD, archive.read_bytes(), own)
            assert status == 201
            status, _, _ = await server.request("POST", "/projects/p/images?label=c", png(),
                                                {**own, "Content-Type": "image/png"})
            assert status == 201
            status, _, _ = await server.request("DELETE", "/projects/p",
                                                headers={"Origin": "http://evil.example"})
            assert status == 403 and server.store.info("p").count == 3


@pytest.mark.trio
async def test_a_2_gib_content_length_gets_413_and_no_traceback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(30):
        async with open_server(tmp_path / "s") as server:
            answer = await _raw(server.port, f"POST {UPLOAD} HTTP/1.1\r\nHost: x\r\n"
                                  f"Authorization: Bearer {TEST_TOKEN}\r\n"
                                "Content-Type: application/zip\r\nExpect: 100-continue\r\n"
                                f"Content-Length: {2 << 30}\r\n\r\n", bytes(256 << 10))
            assert b" 413" in answer and b"over the limit" in answer
            assert (await server.request("GET", "/healthz"))[0] == 200
    assert not errors_logged(caplog)
    assert not [r for r in caplog.records if r.exc_info]


# -- deleting a project while its upload is read (issue 14) ------------------------------------
async def _upload_in_two_halves(port: int, archive: Path, between: object) -> bytes:
    """Send half the body, wait for the spool file, run ``between``, send the rest."""
    data = archive.read_bytes()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"POST {UPLOAD} HTTP/1.1\r\nHost: x\r\n"
                                  f"Authorization: Bearer {TEST_TOKEN}\r\n"
                          "Content-Type: application/zip\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:len(data) // 2])
    await between()  # type: ignore[operator]
    await stream.send_all(data[len(data) // 2:])
    answer = b""
    while not (b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}")):
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        answer += chunk
    await stream.aclose()
    return answer


@pytest.mark.trio
async def test_deleting_the_data_while_an_upload_is_read_stores_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(30):
        async with open_server(tmp_path / "s") as server:
            assert (await server.upload("p", dataset(tmp_path / "a.zip", ["a"] * 3)))[0] == 201

            async def delete() -> None:
                while not list(server.store.tmp_dir.iterdir()):
                    await trio.sleep(0.01)
                assert (await server.request("DELETE", "/projects/p"))[0] == 200

            archive = dataset(tmp_path / "b.zip", ["a"] * 40)
            answer = await _upload_in_two_halves(server.port, archive, delete)
            assert answer.startswith(b"HTTP/1.1 409") and b"was deleted" in answer
            assert server.store.projects() == []
    assert not errors_logged(caplog)


@pytest.mark.trio
async def test_deleting_the_master_project_while_its_upload_is_read_stores_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = [{"type": "input", "out_sx": 8, "out_sy": 8, "out_depth": 3},
            {"type": "softmax", "num_classes": 2}]
    master = Master(operator_token=TEST_TOKEN)  # the cluster's data server takes this token
    store = open_store(tmp_path)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            address = await nursery.start(lambda task_status: serve_cluster(
                master, store, "127.0.0.1", 0, 0, task_status=task_status))
            master.create_project("p", spec, iteration_time=1.0)
            port = int(address.data_url.rsplit(":", 1)[1])

            async def delete() -> None:
                while not list(store.tmp_dir.iterdir()):
                    await trio.sleep(0.01)
                master.delete_project("p")

            archive = dataset(tmp_path / "b.zip", ["a", "b"] * 20)
            answer = await _upload_in_two_halves(port, archive, delete)
            assert answer.startswith(b"HTTP/1.1 4") and b"no project named" in answer
            assert store.projects() == []
            nursery.cancel_scope.cancel()
    assert not errors_logged(caplog)
