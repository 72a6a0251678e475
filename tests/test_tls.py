"""Issue 11: TLS end to end with a CA the test makes (``trustme``): ``mlitb master --certfile
--keyfile`` serves wss:// and https://; the CLI creates a project and uploads over them with the
CA (``MLITB_CAFILE`` / ``--cafile``), a real node trains over wss:// and fetches its batches over
https://, and a client without the CA is refused with a clear line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import trio

trustme = pytest.importorskip("trustme", reason="the TLS tests need the trustme package "
                              "(pip install -e '.[test]')")

from mlitb.client import open_operator  # noqa: E402
from mlitb.dataserver import write_archive  # noqa: E402
from mlitb.datasets import DIGITS_SPEC, digits  # noqa: E402

TOKEN = "tls-operator-token"


def make_ca(folder: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, cert.pem, key.pem) for 127.0.0.1 and localhost, signed by a fresh CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(paths[0]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths[1]))  # chain + key together
    cert.private_key_pem.write_to_path(str(paths[2]))
    return paths


def start_master(tmp_path: Path, cert: Path, key: Path, log: Path,
                 *options: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "mlitb", "master", "--port", "0", "--data-port", "0",
             "--data-dir", str(tmp_path / "data"), "--operator-token", TOKEN,
             "--certfile", str(cert), "--keyfile", str(key), *options],
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "COLUMNS": "200"})


async def wait_for_line(log: Path, pattern: str, timeout: float = 30) -> re.Match[str]:
    with trio.move_on_after(timeout):
        while True:
            match = re.search(pattern, log.read_text() if log.exists() else "")
            if match:
                return match
            await trio.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in {log}:\n{log.read_text()}")


def mlitb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlitb", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "200",
                                                       **(env or {})})


@pytest.mark.trio
async def test_a_node_trains_over_wss_and_the_cli_uploads_over_https(tmp_path: Path) -> None:
    ca, cert, key = make_ca(tmp_path)
    train, _, names = digits()
    archive = write_archive(tmp_path / "train.zip", [(names[int(y)], image[..., 0]) for image, y
                                                     in zip(train.images[:300],
                                                            train.labels[:300])])
    (tmp_path / "spec.json").write_text(__import__("json").dumps(DIGITS_SPEC))
    log = tmp_path / "master.log"
    master = start_master(tmp_path, cert, key, log)
    node: subprocess.Popen[bytes] | None = None
    try:
        with trio.fail_after(180):
            url = (await wait_for_line(log, r"master\s+(wss://\S+)"))[1]
            data_url = (await wait_for_line(log, r"data server\s+(https://\S+)"))[1]
            # Without the CA: one clear line, nothing created.
            refused = await trio.to_thread.run_sync(lambda: mlitb(
                "project", "list", "-m", url, env={"MLITB_CAFILE": ""}))
            assert refused.returncode == 1
            assert "certificate verify failed" in refused.stderr, refused.stderr
            # With the CA (MLITB_CAFILE): create; upload over https (--cafile).
            created = await trio.to_thread.run_sync(lambda: mlitb(
                "project", "create", "digits", "--model", str(tmp_path / "spec.json"),
                "--iteration-time", "1", "-m", url, "--token", TOKEN,
                env={"MLITB_CAFILE": str(ca)}))
            assert created.returncode == 0, created.stderr
            uploaded = await trio.to_thread.run_sync(lambda: mlitb(
                "data", "upload", str(archive), "-p", "digits", "-m", url, "--token", TOKEN,
                "--cafile", str(ca)))
            assert uploaded.returncode == 0, uploaded.stderr
            assert "stored 300 training images" in uploaded.stdout
            # Without the operator token the https data server refuses the upload.
            anonymous = await trio.to_thread.run_sync(lambda: mlitb(
                "data", "upload", str(archive), "-p", "digits", "-m", url, "--cafile", str(ca),
                env={"MLITB_OPERATOR_TOKEN": ""}))
            assert anonymous.returncode == 1 and "HTTP 401" in anonymous.stderr
            # A node over wss://, its batches over https://.
            node_log = tmp_path / "node.log"
            with open(node_log, "wb") as f:
                node = subprocess.Popen(
                    [sys.executable, "-m", "mlitb", "node", "join", url, "--project", "digits",
                     "--workers", "1", "--cafile", str(ca)], stdout=f, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True)
            while True:
                async with open_operator(url, TOKEN, cafile=str(ca)) as op:
                    (p,) = [p for p in await op.list_projects() if p.name == "digits"]
                if p.loss is not None and p.iteration >= 3:
                    break
                await trio.sleep(0.5)
            assert data_url.startswith("https://127.0.0.1:")
    finally:
        for process in (node, master):
            if process is not None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.asyncio
async def test_the_console_over_wss_lists_and_uploads_over_https(tmp_path: Path) -> None:
    """The Textual console with --cafile: connected over wss://, its upload over https://."""
    import asyncio
    import time

    from test_auth_browser import OPERATOR, run_cluster

    from mlitb.console import ConsoleApp, LiveBackend
    from mlitb.console.dialogs._form_field import FormField
    from mlitb.console.dialogs._upload import UploadDialog

    ca, cert, key = make_ca(tmp_path)
    train, _, names = digits()
    archive = write_archive(tmp_path / "test.zip", [(names[int(y)], image[..., 0]) for image, y
                                                    in zip(train.images[:50],
                                                           train.labels[:50])])

    async def until(pilot: Any, condition: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await pilot.pause(0.1)

    with run_cluster(tmp_path, certfile=str(cert), keyfile=str(key)) as c:
        assert c.url.startswith("wss://")
        async with asyncio.timeout(90):
            app = ConsoleApp(LiveBackend(c.url, OPERATOR, interval=0.2, cafile=str(ca)),
                             project=None, refresh_interval=0.1)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: app.status is not None, "a status over wss://")
                await pilot.press("u")
                await until(pilot, lambda: isinstance(app.screen, UploadDialog), "the dialog")
                dialog = app.screen
                assert isinstance(dialog, UploadDialog)
                dialog.query_one("#field-archive", FormField).value = str(archive)
                dialog.query_one("#split").value = "test"  # type: ignore[attr-defined]
                await pilot.press("enter")
                await until(pilot, lambda: dialog.result is not None, "the upload over https://")
                assert dialog.result is not None and dialog.result["count"] == 50
        assert len(c.run(lambda: c.master.projects["digits"].test_ids)) == 50  # type: ignore[attr-defined]


def test_an_https_upload_without_the_token_gets_401_not_a_tls_error(tmp_path: Path,
                                                                     monkeypatch: Any) -> None:
    """The data server refuses before reading a large body and closes the TLS connection: the
    client still reads the 401 (not "EOF occurred in violation of protocol")."""
    from test_auth_browser import run_cluster

    from mlitb.dataserver import DataClient, DataServerError

    ca, cert, key = make_ca(tmp_path)
    monkeypatch.setenv("MLITB_CAFILE", str(ca))
    big = tmp_path / "big.zip"
    big.write_bytes(os.urandom(16 << 20))
    with run_cluster(tmp_path, certfile=str(cert), keyfile=str(key)) as c:
        for token in (None, "wrong-token"):
            with pytest.raises(DataServerError) as refused:
                DataClient(c.data_url, token=token).upload("digits", big)
            assert refused.value.status == 401, refused.value


@pytest.mark.trio
async def test_a_standalone_data_server_registers_with_a_wss_master_given_the_ca(
        tmp_path: Path) -> None:
    """``mlitb data-server --master wss://… --cafile``: its uploads reach the master over
    TLS; without the CA it stops with the verification error instead of serving."""
    ca, cert, key = make_ca(tmp_path)
    train, _, names = digits()
    archive = write_archive(tmp_path / "train.zip", [(names[int(y)], image[..., 0]) for image, y
                                                     in zip(train.images[:60],
                                                            train.labels[:60])])
    (tmp_path / "spec.json").write_text(__import__("json").dumps(DIGITS_SPEC))
    log = tmp_path / "master.log"
    master = start_master(tmp_path, cert, key, log, "--no-data-server")
    data_log = tmp_path / "data-server.log"
    data: subprocess.Popen[bytes] | None = None
    try:
        with trio.fail_after(120):
            url = (await wait_for_line(log, r"master\s+(wss://\S+)"))[1]
            created = await trio.to_thread.run_sync(lambda: mlitb(
                "project", "create", "digits", "--model", str(tmp_path / "spec.json"),
                "-m", url, "--token", TOKEN, env={"MLITB_CAFILE": str(ca)}))
            assert created.returncode == 0, created.stderr
            command = [sys.executable, "-m", "mlitb", "data-server", "--master", url,
                       "--token", TOKEN, "--port", "0", "--data-dir", str(tmp_path / "alone")]
            untrusted = await trio.to_thread.run_sync(lambda: mlitb(
                *command[3:], env={"MLITB_CAFILE": ""}))
            assert untrusted.returncode == 1
            assert "certificate verify failed" in untrusted.stderr, untrusted.stderr
            with open(data_log, "wb") as f:
                data = subprocess.Popen(command + ["--cafile", str(ca)], stdout=f,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True,
                                        env={**os.environ, "COLUMNS": "200"})
            data_url = (await wait_for_line(data_log, r"data server (http://\S+),"))[1]
            from mlitb.dataserver import DataClient

            result = await trio.to_thread.run_sync(
                lambda: DataClient(data_url, token=TOKEN).upload("digits", archive))
            assert result["count"] == 60
            async with open_operator(url, TOKEN, cafile=str(ca)) as op:
                (p,) = [p for p in await op.list_projects() if p.name == "digits"]
            assert p.data.total == 60 and set(p.labels) == set(names), p
    finally:
        for process in (data, master):
            if process is not None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.trio
async def test_the_connection_caps_count_before_tls_and_refuse_over_it(tmp_path: Path) -> None:
    """Through the capped listeners TLS still works (the key in the certificate file, too),
    a socket that never starts its handshake holds its place, and over the caps a wss://
    client hears 4008 and an https:// one 503."""
    from trio_websocket import ConnectionClosed, connect_websocket

    from mlitb._connections import ConnectionCaps, ConnectionLimits
    from mlitb._tls import client_context
    from mlitb.cluster import open_store, serve_cluster
    from mlitb.dataserver import DataClient, DataServerError
    from mlitb.master import Master
    from mlitb.protocol import CloseCode

    ca, cert, _ = make_ca(tmp_path)
    master = Master(operator_token=TOKEN, connection_limits=ConnectionLimits(4, 1))
    data_caps = ConnectionCaps(ConnectionLimits(4, 1), server="the data server")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            address = await nursery.start(lambda task_status: serve_cluster(
                master, open_store(tmp_path / "data"), "127.0.0.1", 0, 0,
                data_connection_limits=data_caps, certfile=str(cert),
                task_status=task_status))
            assert address.master_url.startswith("wss://")
            assert address.data_url.startswith("https://")
            client = DataClient(address.data_url, cafile=ca)
            assert (await trio.to_thread.run_sync(client.health))["status"] == "ok"
            async with open_operator(address.master_url, TOKEN, cafile=ca) as op:
                assert op is not None

            assert master.port is not None
            data_port = int(address.data_url.rsplit(":", 1)[1])
            held = [await trio.open_tcp_stream("127.0.0.1", master.port),
                    await trio.open_tcp_stream("127.0.0.1", data_port)]
            while master.caps.total < 1 or data_caps.total < 1:
                await trio.sleep(0.01)
            ws = await connect_websocket(nursery, "127.0.0.1", master.port, "/",
                                         use_ssl=client_context(ca))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == CloseCode.TOO_MANY_CONNECTIONS
            with pytest.raises(DataServerError) as busy:
                await trio.to_thread.run_sync(client.health)
            assert busy.value.status == 503 and "per address" in str(busy.value)

            for stream in held:
                await stream.aclose()
            while master.caps.total or data_caps.total:
                await trio.sleep(0.01)
            assert (await trio.to_thread.run_sync(client.health))["status"] == "ok"
            async with open_operator(address.master_url, TOKEN, cafile=ca) as op:
                assert op is not None
            nursery.cancel_scope.cancel()
