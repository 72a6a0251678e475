"""``mlitb data-server`` on its own: a separate process that registers uploads with a master over
the WebSocket, as on another machine."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from mlitb.dataserver import DataClient, DataServerError, write_archive
from mlitb.datasets import DIGITS_SPEC, digits


def test_uploads_reach_the_master_through_a_standalone_data_server(master_in_thread, tmp_path):
    m = master_in_thread

    def set_up() -> None:
        m.master.data_url = None  # no embedded data server: the separate one is announced
        m.master.create_project("digits", DIGITS_SPEC)

    m.token_run.run_sync_soon(set_up)
    deadline = time.monotonic() + 10
    while "digits" not in m.master.projects:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlitb", "data-server", "--master", m.url, "--token", m.token,
         "--port", "0", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        while "data server http" not in line:
            line = proc.stdout.readline()
            assert line, "the data server exited"
        url = re.search(r"(http://\S+),", line).group(1)
        client = DataClient(url, token=m.token)
        train, _, _ = digits()
        archive = write_archive(tmp_path / "train.zip", [(str(y), image[..., 0]) for image, y
                                                         in zip(train.images[:40],
                                                                train.labels[:40])])
        result = client.upload("digits", archive)
        assert result["count"] == 40
        deadline = time.monotonic() + 10
        while m.master.projects["digits"].allocator.total < 40:
            assert time.monotonic() < deadline, "the registration did not reach the master"
            time.sleep(0.05)
        with pytest.raises(DataServerError) as info:
            client.upload("nope", archive)
        assert info.value.status == 400 and "no project named 'nope'" in info.value.detail
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_data_server_needs_the_operator_token(master_in_thread, tmp_path):
    m = master_in_thread
    proc = subprocess.run([sys.executable, "-m", "mlitb", "data-server", "--master", m.url,
                           "--port", "0", "--data-dir", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert "needs the operator token" in proc.stderr
