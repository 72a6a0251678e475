"""Real ``mlitb`` processes for integration tests: start one, read the URL it prints, ask the
master how its project is doing, stop them all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from mlitb.datasets import digits
from mlitb.dataserver import write_archive


class Proc:
    """``python -m mlitb ARGS`` with its output (stdout and stderr together) collected by a
    thread, so a test can wait for a line without blocking on a pipe."""

    def __init__(self, *args: str) -> None:
        self.args = args
        env = {**os.environ, "COLUMNS": "250"}  # rich wraps at 80 columns without a terminal
        self.popen = subprocess.Popen([sys.executable, "-m", "mlitb", *args],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first match of ``pattern`` in the output; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            if self.popen.poll() is not None:
                self._reader.join(5)
                found = re.search(pattern, self.text)
                if found:
                    return found
                raise AssertionError(f"mlitb {' '.join(self.args[:1])} exited "
                                     f"({self.popen.returncode}) before printing {pattern!r}:"
                                     f"\n{self.text}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} from mlitb {self.args[0]} within {timeout} s:"
                             f"\n{self.text}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._reader.join(5)


def start_master(data_dir: Path, token: str, *args: str) -> tuple[Proc, str]:
    """``mlitb master`` on a free port; the process and its WebSocket URL."""
    proc = Proc("master", "--port", "0", "--data-port", "0", "--data-dir", str(data_dir),
                "--operator-token", token, *args)
    return proc, proc.wait_for(r"master\s+(ws://\S+)").group(1)


def start_data_server(master_url: str, token: str, data_dir: Path, *args: str
                      ) -> tuple[Proc, str]:
    """``mlitb data-server`` on a free port registered with the master; the process and the
    URL the master announces for it."""
    proc = Proc("data-server", "--master", master_url, "--token", token, "--port", "0",
                "--data-dir", str(data_dir), *args)
    return proc, proc.wait_for(r"announced\s+as\s+(http://[^)\s]+)").group(1)


def digits_zips(tmp_path: Path, parts: int = 1) -> tuple[list[Path], Path]:
    """The bundled digits as upload zips: the training set cut into ``parts`` zips, and the
    test set."""
    train, test, names = digits()
    zips = []
    for k in range(parts):
        rows = range(k, len(train.labels), parts)
        zips.append(write_archive(tmp_path / f"digits-train-{k}.zip",
                                  [(names[int(train.labels[i])], train.images[i][..., 0])
                                   for i in rows]))
    test_zip = write_archive(tmp_path / "digits-test.zip",
                             [(names[int(y)], image[..., 0])
                              for image, y in zip(test.images, test.labels)])
    return zips, test_zip


def operator_call(url: str, token: str, call: Callable[[Any], Any]) -> Any:
    """Run ``await call(operator)`` on a fresh operator connection (a trio run of its own)."""
    from mlitb.client import open_operator

    async def main() -> Any:
        with trio.fail_after(30):
            async with open_operator(url, token) as op:
                return await call(op)

    return trio.run(main)


def project_status(url: str, token: str, project: str) -> Any:
    """The master's current ``ProjectStatus`` of ``project`` (one status snapshot)."""
    from mlitb.protocol import Status, Subscribe

    async def call(op: Any) -> Any:
        await op.request(Subscribe(request_id="-", project=project, interval=0.1))
        while True:  # snapshots that came before the ack wait in the session first
            message = await op.receive()
            if isinstance(message, Status) and message.projects:
                return message.projects[0]

    return operator_call(url, token, call)


def wait_until(condition: Callable[[], Any], what: str, timeout: float,
               procs: tuple[Proc, ...] = ()) -> Any:
    """Poll ``condition`` until it returns something true; on time out, fail with the output
    of ``procs``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n"
                         + "\n".join(f"--- {p.args[0]}:\n{p.text[-4000:]}" for p in procs))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a server a test starts later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
