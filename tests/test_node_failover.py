"""A Python worker's data source over several data servers (``FailoverDataSource``): real
HTTP, one data server that cannot be reached and one that serves."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from helpers.procs import operator_call

from mlitb.dataserver import DataClient, InputShape, write_archive
from mlitb.datasets import DIGITS_SPEC, digits
from mlitb.nodes import HttpDataSource
from mlitb.nodes._data import DataError, FailoverDataSource
from mlitb.protocol import CreateProject


def dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_worker_moves_on_to_the_data_server_that_answers(cluster_in_thread, tmp_path) -> None:
    c = cluster_in_thread
    operator_call(c.url, c.token, lambda op: op.request(CreateProject(
        request_id="-", name="digits", spec=tuple(DIGITS_SPEC))))
    train, _, names = digits()
    archive = write_archive(tmp_path / "d.zip", [(names[int(y)], image[..., 0]) for image, y
                                                 in zip(train.images[:50], train.labels[:50])])
    DataClient(c.data_url, token=c.token).upload(
        "digits", archive, shape=InputShape(width=8, height=8, channels=1))
    made: list[str] = []

    def make(url: str) -> HttpDataSource:
        made.append(url)
        return HttpDataSource(url, "digits", (1, 8, 8), timeout=5)

    dead = dead_url()
    source = FailoverDataSource([dead, c.data_url], make)
    assert source.url == dead
    frame = source.fetch(np.arange(10, dtype=np.int64))
    assert frame.ids.tolist() == list(range(10)) and source.url == c.data_url
    assert source.fetch(np.arange(10, 20, dtype=np.int64)).ids.size == 10
    # Unknown ids are refused by the store, the same at every server: raised, not retried.
    with pytest.raises(DataError) as caught:
        source.fetch(np.array([10_000], dtype=np.int64))
    assert caught.value.permanent
    # A new list (the master's data_servers) keeps the sources it already had.
    source.update([c.data_url])
    assert made == [dead, c.data_url] and source.urls == [c.data_url]
    source.update([])
    with pytest.raises(DataError, match="announces no data server") as caught:
        source.fetch(np.arange(3, dtype=np.int64))
    assert not caught.value.permanent
    source.update([dead])  # none answers: a retryable error
    with pytest.raises(DataError) as caught:
        source.fetch(np.arange(3, dtype=np.int64))
    assert not caught.value.permanent
