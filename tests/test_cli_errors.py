"""What a new user typed wrong, and the one clear line each gets (issue 14): a data server
that is not there, the master's URL pointing at the data server, ``wss://`` (TLS) at a master
that speaks plain ``ws://`` or at a TLS server whose certificate fails; and what ``data
upload`` shows while the server decodes, and its ``--json``.

Real servers on loopback (the master and its data server in a thread, a TLS listener), the CLI
run in-process by typer's runner.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from helpers.procs import free_port
from typer.testing import CliRunner

import mlitb._transport
from mlitb.cli import app
from mlitb.dataserver import write_archive
from mlitb.datasets import DIGITS_SPEC, digits

runner = CliRunner()


def run(*args: str, token: str | None = "thread-token"):
    extra = ["--token", token] if token else []
    return runner.invoke(app, [*args, *extra], env={"COLUMNS": "100"})


def one_line(result) -> str:
    """The error as printed: one line, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and len(lines) <= 2, result.output  # (a stage line may precede)
    return errors[0]



@pytest.fixture
def digits_project(cluster_in_thread, tmp_path):
    c = cluster_in_thread
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(DIGITS_SPEC))
    assert run("project", "create", "digits", "--model", str(spec), "-m", c.url).exit_code == 0
    train, _, _ = digits()
    archive = write_archive(tmp_path / "train.zip", [
        (str(label), image) for label, image in zip(train.labels[:200],
                                                     train.images[:200, :, :, 0])])
    return c, archive


def test_a_data_server_that_is_not_there_is_one_line(digits_project):
    c, archive = digits_project
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line(run("data", "upload", str(archive), "-p", "digits", "-m", c.url,
                        "--data-url", url))
    assert f"cannot reach the data server at {url}: nothing listens there" in line
    assert "nothing was uploaded" in line
    assert c.master.projects["digits"].allocator.total == 0


def test_the_master_url_pointing_at_the_data_server_says_so(digits_project):
    c, archive = digits_project
    data_port = c.data_url.rsplit(":", 1)[1].rstrip("/")
    url = f"ws://127.0.0.1:{data_port}"
    line = one_line(run("data", "upload", str(archive), "-p", "digits", "-m", url))
    assert "answered HTTP 403 instead of a WebSocket handshake" in line
    assert "not the master" in line and "b'content-length'" not in line


def test_wss_at_a_plain_master_says_it_serves_plain_ws(digits_project, monkeypatch):
    c, archive = digits_project
    monkeypatch.setattr(mlitb._transport, "CONNECT_TIMEOUT", 1.0)  # the master never answers TLS
    url = c.url.replace("ws://", "wss://")
    line = one_line(run("project", "list", "-m", url))
    assert line.startswith(f"error: cannot reach the master at {url}: the TLS handshake "
                           f"failed (the server does not speak TLS")
    assert "one without them plain ws://" in line and "--certfile" in line


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a "
                    "self-signed certificate")
def test_wss_with_a_failing_tls_handshake_names_the_cause(tmp_path, monkeypatch):
    monkeypatch.setattr(mlitb._transport, "CONNECT_TIMEOUT", 2.0)  # trio-websocket waits it out
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def handshake(conn: socket.socket) -> None:  # the client aborts it (self-signed)
        conn.settimeout(5)
        try:
            with context.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # the listener closed: the test is over
                return
            threading.Thread(target=handshake, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        line = one_line(run("project", "list", "-m", f"wss://127.0.0.1:{port}"))
    finally:
        listener.close()
        thread.join(5)
    assert "the TLS handshake failed (certificate verify failed" in line
    assert "its CA in --cafile" in line


def test_upload_shows_the_decoding_stage_and_prints_json(digits_project):
    c, archive = digits_project
    result = run("data", "upload", str(archive), "-p", "digits", "-m", c.url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    decoding = next(i for i, line in enumerate(lines) if "the data server is decoding" in line)
    stored = next(i for i, line in enumerate(lines) if line.startswith("stored 200"))
    assert lines[0].startswith("uploading train.zip") and decoding < stored
    result = runner.invoke(app, ["data", "upload", str(archive), "-p", "digits", "-m", c.url,
                                 "--token", "thread-token", "--json", "--test"])
    assert result.exit_code == 0, result.output
    body = result.stdout[result.stdout.index("{"):]  # stderr's stage lines come first
    answer = json.loads(body)
    assert answer["count"] == 200 and answer["split"] == "test"
    assert answer["archive"] == str(archive) and answer["bytes"] == Path(archive).stat().st_size
    assert sum(answer["counts"].values()) == 200


def test_the_terminal_bar_turns_into_the_decoding_stage(monkeypatch):
    """On a terminal: the description says the server decodes once every byte is sent."""
    from io import StringIO

    from rich.console import Console

    import mlitb.cli._master as cli_master

    screen = StringIO()
    monkeypatch.setattr(cli_master, "out", Console(file=screen, force_terminal=True,
                                                   width=120))
    with cli_master.UploadStages("train.zip", 1000) as stages:
        stages.progress(500, 1000)
        assert not stages.decoding
        stages.progress(1000, 1000)
        assert stages.decoding
        assert stages.bar is not None
        task = stages.bar.tasks[0]
        assert task.description == "train.zip: uploaded, the data server is decoding the images"
