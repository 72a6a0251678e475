"""The limits' options reach the servers (issue 11): a real ``mlitb master`` process started
with small upload and connection limits refuses over them as the options say (``mlitb data
upload`` and raw sockets on loopback); ``mlitb data-server`` takes the same upload options."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import numpy as np
import pytest
import trio
from PIL import Image
from test_limits_connections import refused
from test_tls import mlitb, wait_for_line
from trio_websocket import wrap_client_stream

from mlitb.dataserver import write_archive
from mlitb.datasets import DIGITS_SPEC

TOKEN = "limits-operator-token"
rng = np.random.default_rng(3)


def digit_zip(path: Path, count: int) -> Path:
    return write_archive(path, [(str(i % 10), rng.integers(0, 256, (8, 8), dtype=np.uint8))
                                for i in range(count)])


def noisy_zip(path: Path, count: int, side: int = 128) -> Path:
    """Incompressible grey PNGs: about 16.5 kB each at 128 x 128."""
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for i in range(count):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(buffer,
                                                                                      "PNG")
            z.writestr(f"{i % 10}/{i}.png", buffer.getvalue())
    return path


async def stall_upload(data_port: int, project: str) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", data_port)
    await stream.send_all(
        f"POST /projects/{project}/uploads HTTP/1.1\r\nHost: 127.0.0.1:{data_port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/zip\r\n"
        "Content-Length: 60000\r\n\r\nPK\x03\x04".encode())
    return stream


@pytest.mark.trio
async def test_mlitb_master_refuses_over_the_limits_its_options_set(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text(__import__("json").dumps(DIGITS_SPEC))
    log = tmp_path / "master.log"
    with open(log, "ab") as f:
        master = subprocess.Popen(
            [sys.executable, "-m", "mlitb", "master", "--port", "0", "--data-port", "0",
             "--data-dir", str(tmp_path / "data"), "--operator-token", TOKEN,
             "--max-upload-entries", "25", "--max-upload-size", "64K",
             "--max-pending-uploads", "1", "--max-connections-per-address", "2"],
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "COLUMNS": "200"})
    try:
        with trio.fail_after(120):
            url = (await wait_for_line(log, r"master\s+(ws://\S+)"))[1]
            data_port = int((await wait_for_line(log, r"data server\s+http://\S+:(\d+)"))[1])
            created = await trio.to_thread.run_sync(lambda: mlitb(
                "project", "create", "digits", "--model", str(tmp_path / "spec.json"),
                "-m", url, "--token", TOKEN))
            assert created.returncode == 0, created.stderr

            def upload(archive: Path) -> subprocess.CompletedProcess[str]:
                return mlitb("data", "upload", str(archive), "-p", "digits", "-m", url,
                             "--token", TOKEN)

            ok = await trio.to_thread.run_sync(upload, digit_zip(tmp_path / "ok.zip", 20))
            assert ok.returncode == 0 and "stored 20 training images" in ok.stdout, ok.stderr
            many = await trio.to_thread.run_sync(upload, digit_zip(tmp_path / "many.zip", 30))
            assert many.returncode == 1 and "HTTP 400" in many.stderr, many.stderr
            assert "over the limit of 25" in many.stderr
            big = await trio.to_thread.run_sync(upload, noisy_zip(tmp_path / "big.zip", 6))
            assert big.returncode == 1 and "HTTP 413" in big.stderr, big.stderr
            assert "65536" in big.stderr

            # One upload stalls and holds the only place: the next is answered 503.
            stalled = await stall_upload(data_port, "digits")
            spool = tmp_path / "data" / "store" / ".tmp"
            while not any(spool.iterdir()):
                await trio.sleep(0.02)
            busy = await trio.to_thread.run_sync(upload, digit_zip(tmp_path / "b.zip", 5))
            assert busy.returncode == 1 and "HTTP 503" in busy.stderr, busy.stderr
            assert "retry this upload" in busy.stderr
            await stalled.aclose()

            # Two connections from 127.0.0.1 (before their hello), the third gets 4008.
            port = int(url.rsplit(":", 1)[1])
            async with trio.open_nursery() as nursery:
                open_ = [await wrap_client_stream(nursery, await trio.open_tcp_stream(
                    "127.0.0.1", port), "127.0.0.1", "/") for _ in range(2)]
                reason = await refused(nursery, port, "127.0.0.1")
                assert "at most 2 connections per address" in reason
                for ws in open_:
                    await ws.aclose()
                nursery.cancel_scope.cancel()
            listed = await trio.to_thread.run_sync(lambda: mlitb("project", "list", "-m", url))
            assert listed.returncode == 0 and "digits" in listed.stdout, listed.stderr
    finally:
        with suppress(ProcessLookupError):
            os.killpg(master.pid, signal.SIGKILL)
        master.wait()


def test_mlitb_data_server_takes_the_upload_options(lone_master_in_thread,
                                                    tmp_path: Path) -> None:
    import re
    import time

    from mlitb.dataserver import DataClient, DataServerError

    m = lone_master_in_thread
    m.token_run.run_sync_soon(lambda: m.master.create_project("digits", DIGITS_SPEC))
    deadline = time.monotonic() + 10
    while "digits" not in m.master.projects:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlitb", "data-server", "--master", m.url, "--token", m.token,
         "--port", "0", "--data-dir", str(tmp_path / "data"), "--max-upload-entries", "25"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        while "data server http" not in line:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, "the data server exited"
        found = re.search(r"(http://\S+),", line)
        assert found is not None
        client = DataClient(found.group(1), token=m.token)
        assert client.upload("digits", digit_zip(tmp_path / "ok.zip", 20))["count"] == 20
        with pytest.raises(DataServerError) as info:
            client.upload("digits", digit_zip(tmp_path / "many.zip", 30))
        assert info.value.status == 400 and "over the limit of 25" in info.value.detail
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("option", [["--max-data-connections", "9"],
                                    ["--max-upload-entries", "100"],
                                    ["--max-upload-size", "2M"],
                                    ["--max-pending-uploads-per-address", "2"]])
def test_data_server_limits_without_a_data_server_are_an_error(option: list[str],
                                                              tmp_path: Path) -> None:
    """With --no-data-server the master has no data server to set them on: saying so beats
    ignoring them."""
    done = subprocess.run([sys.executable, "-m", "mlitb", "master", "--data-dir",
                           str(tmp_path), "--no-data-server", *option], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{option[0]}: limits of the data server" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("bad", ["12X", "0", "-1G", "", "1.5G", "9" * 20])
def test_a_bad_upload_size_is_one_line(bad: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mlitb", "master", "--data-dir",
                           str(tmp_path), "--max-upload-size", bad], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "--max-upload-size: expected a size such as 1G" in done.stderr, done.stderr


def test_upload_sizes_parse_in_binary_units() -> None:
    from mlitb.cli._master import parse_size

    assert parse_size("1048576") == 1 << 20
    assert parse_size("64K") == parse_size("64KiB") == parse_size("64kb") == 64 << 10
    assert parse_size("1G") == 1 << 30 and parse_size("2t") == 2 << 40


def test_the_cli_defaults_are_the_data_servers() -> None:
    from mlitb.cli import _master as _cli_master
    from mlitb.dataserver import DEFAULT_LIMITS

    assert _cli_master.upload_limits(
        _cli_master.DEFAULT_MAX_UPLOAD_ENTRIES, _cli_master.DEFAULT_MAX_UPLOAD_SIZE,
        _cli_master.DEFAULT_MAX_PENDING_UPLOADS,
        _cli_master.DEFAULT_MAX_PENDING_UPLOADS_PER_ADDRESS) == DEFAULT_LIMITS


@pytest.mark.parametrize("command", ["master", "data-server"])
def test_the_connection_options_are_in_the_help(command: str) -> None:
    from typer.testing import CliRunner

    from mlitb.cli import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--max-data-connections ", "--max-data-connections-per-address"):
        assert option in result.output, (option, result.output)
    if command == "master":
        assert "--max-connections " in result.output
        assert "--max-connections-per-address" in result.output


@pytest.mark.parametrize("command", ["master", "data-server"])
@pytest.mark.parametrize("option", ["--max-data-connections",
                                    "--max-data-connections-per-address"])
@pytest.mark.parametrize("bad", ["0", "-3", "many", "1.5"])
def test_a_bad_connection_cap_is_a_usage_error(command: str, option: str, bad: str,
                                               tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mlitb.cli import app

    result = CliRunner().invoke(app, [command, "--data-dir", str(tmp_path), option, bad],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output, result.output
    assert not (tmp_path / "store").exists()  # refused before anything started


async def data_answer(port: int, source: str) -> bytes:
    """``GET /healthz`` from ``source``: the whole answer (the connection asks to be closed)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    async with stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Connection: close\r\n\r\n")
        answer = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                answer += chunk
    return answer


async def check_data_caps(port: int) -> None:
    """At most 2 connections per address, 3 in all (the options both tests give)."""
    held = [await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.1")
            for _ in range(2)]
    over = await data_answer(port, "127.0.0.1")
    assert over.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 5\r\n" in over, over
    assert b"at most 2 connections per address" in over
    assert (await data_answer(port, "127.0.0.2")).startswith(b"HTTP/1.1 200 ")
    held.append(await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2"))
    full = await data_answer(port, "127.0.0.3")
    assert b"the data server serves 3 connections at most" in full, full
    for stream in held:
        await stream.aclose()
    with trio.fail_after(10):  # the server notices the closes
        while not (await data_answer(port, "127.0.0.1")).startswith(b"HTTP/1.1 200 "):
            await trio.sleep(0.1)


@pytest.mark.trio
async def test_mlitb_master_caps_its_data_servers_connections(tmp_path: Path) -> None:
    log = tmp_path / "master.log"
    with open(log, "ab") as f:
        master = subprocess.Popen(
            [sys.executable, "-m", "mlitb", "master", "--port", "0", "--data-port", "0",
             "--data-dir", str(tmp_path / "data"), "--operator-token", TOKEN,
             "--max-data-connections", "3", "--max-data-connections-per-address", "2"],
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "COLUMNS": "200"})
    try:
        with trio.fail_after(120):
            data_port = int((await wait_for_line(log, r"data server\s+http://\S+:(\d+)"))[1])
            await check_data_caps(data_port)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(master.pid, signal.SIGKILL)
        master.wait()


@pytest.mark.trio
async def test_mlitb_data_server_caps_its_connections(lone_master_in_thread,
                                                      tmp_path: Path) -> None:
    m = lone_master_in_thread
    log = tmp_path / "data-server.log"
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlitb", "data-server", "--master", m.url, "--token",
             m.token, "--port", "0", "--data-dir", str(tmp_path / "data"),
             "--max-data-connections", "3", "--max-data-connections-per-address", "2"],
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "COLUMNS": "200"})
    try:
        with trio.fail_after(120):
            data_port = int((await wait_for_line(log, r"data server http://\S+:(\d+),"))[1])
            await check_data_caps(data_port)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
