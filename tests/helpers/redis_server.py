"""A real ``redis-server`` for the tests, on a free loopback port, in a temp directory; the
tests that need one skip with a reason when the binary or redis-py is absent."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def redis_or_skip() -> str:
    """The redis-server binary; or skip, saying what is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; "
                    ".ci/run installs it)")
    try:
        import redis  # noqa: F401
    except ImportError:
        pytest.skip("redis-py is not installed (pip install -e '.[redis]')")
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(directory: Path, *args: str) -> Iterator[str]:
    """Run ``redis-server`` (no persistence) until the block ends; yields ``redis://`` URL of
    its database 0. ``args``: more settings, e.g. ``"--maxmemory", "2mb"``."""
    binary = redis_or_skip()
    import redis

    directory.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # another process may take the free port before redis-server binds it
        port = _free_port()
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", str(directory),
                                 *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        client = redis.Redis(port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        if proc.poll() is None:
            break
    else:
        raise AssertionError("redis-server did not start")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
