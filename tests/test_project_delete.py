"""Deleting a project deletes its data: under ``mlitb master`` the embedded data server's store
forgets it, so a later project of the same name starts with none. Real master and data server
on loopback (``cluster_in_thread``), the delete sent as an operator would send it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from _procs import digits_zips, operator_call

from mlitb.datasets import DIGITS_SPEC
from mlitb.dataserver import DataClient, DataServerError
from mlitb.protocol import CreateProject, DeleteProject


def wait_until(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_deleting_a_project_deletes_its_data(cluster_in_thread: Any, tmp_path: Path) -> None:
    c = cluster_in_thread

    def create() -> None:
        operator_call(c.url, c.token, lambda op: op.request(CreateProject(
            request_id="-", name="digits", spec=tuple(DIGITS_SPEC))))

    create()
    (archive,), _ = digits_zips(tmp_path)
    stored = DataClient(c.data_url, token=c.token).upload("digits", archive)["count"]
    assert DataClient(c.data_url).info("digits")["count"] == stored
    operator_call(c.url, c.token, lambda op: op.request(DeleteProject(request_id="-",
                                                                      project="digits")))
    wait_until(lambda: "digits" not in c.store.projects(), "the store to forget the project")
    with pytest.raises(DataServerError) as gone:
        DataClient(c.data_url).info("digits")
    assert gone.value.status == 404
    # A new project of that name starts without the old data.
    create()
    time.sleep(0.3)
    assert c.master.projects["digits"].allocator.total == 0
