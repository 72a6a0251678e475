"""Labels by upload and teach (issue 11): the data server numbers a project's labels as its model
does, so a new label never leaves data stored but unregistered, and the master restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import trio
from helpers.dataserver import png

from mlitb.cluster import ClusterAddress, open_store, project_files, serve_cluster
from mlitb.dataserver import DataClient, DataServerError, InputShape, Store, write_archive
from mlitb.master import Master

SPEC = [{"type": "input", "out_sx": 8, "out_sy": 8, "out_depth": 3},
        {"type": "softmax", "num_classes": 4}]
SHAPE = InputShape(width=8, height=8, channels=3)
rng = np.random.default_rng(5)


def archive(path: Path, labels: list[str]) -> Path:
    return write_archive(path, [(x, rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
                                for x in labels])


@asynccontextmanager
async def cluster(data_dir: Path, *, create: dict[str, object] | None = None
                  ) -> AsyncIterator[tuple[Master, Store, ClusterAddress]]:
    master = Master(operator_token="t", files=project_files(data_dir))
    master.restore()
    store = open_store(data_dir)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(lambda task_status: serve_cluster(
            master, store, "127.0.0.1", 0, 0, task_status=task_status))
        if create is not None:
            master.create_project("p", SPEC, iteration_time=1.0, **create)  # type: ignore[arg-type]
        yield master, store, address
        nursery.cancel_scope.cancel()


async def upload(address: ClusterAddress, path: Path) -> dict[str, object]:
    client = DataClient(address.data_url, token="t")
    return await trio.to_thread.run_sync(lambda: client.upload("p", path, shape=SHAPE))


async def teach(address: ClusterAddress, label: str) -> tuple[int, bytes]:
    client = DataClient(address.data_url, token="t")
    return await trio.to_thread.run_sync(lambda: client._request(
        "POST", f"/projects/p/images?label={label}", body=png(8),
        headers={"Content-Type": "image/png"}))


def consistent(master: Master, store: Store) -> None:
    """Every stored id's label index names the same class in the model."""
    labels = master.projects["p"].net.labels
    info = store.info("p")
    assert list(info.labels) == labels[:len(info.labels)]
    ids = store.ids("p")
    _, indices = store.get("p", ids)
    names = [info.labels[i] for i in indices]
    assert [labels[i] for i in indices] == names


@pytest.mark.trio
async def test_a_new_label_by_upload_and_teach_is_stored_and_registered_and_restart_works(
        tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with cluster(tmp_path, create={}) as (master, store, address):
            first = await upload(address, archive(tmp_path / "a.zip", ["cat", "dog"] * 3))
            assert first["count"] == 6
            project = master.projects["p"]
            assert project.net.labels[:2] == ["cat", "dog"] and len(project.net.labels) == 4
            second = await upload(address, archive(tmp_path / "b.zip", ["bird", "cat"]))
            assert "error" not in second
            assert "bird" in project.net.labels
            status, _ = await teach(address, "fish")
            assert status == 201
            assert project.net.labels[-1] == "fish"
            assert project.allocator.total == 9
            consistent(master, store)
            await master.save_project("p")
            labels = list(project.net.labels)
        async with cluster(tmp_path) as (master, store, address):
            project = master.projects["p"]
            assert project.net.labels == labels and project.allocator.total == 9
            third = await upload(address, archive(tmp_path / "c.zip", ["emu"]))
            assert "error" not in third and project.allocator.total == 10
            consistent(master, store)


@pytest.mark.trio
async def test_a_first_upload_naming_some_of_the_projects_labels_keeps_their_indices(
        tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with cluster(tmp_path, create={"labels": ["cat", "dog", "bird", "fish"]}) as (
                master, store, address):
            await upload(address, archive(tmp_path / "a.zip", ["dog", "fish"]))
            assert master.projects["p"].net.labels == ["cat", "dog", "bird", "fish"]
            consistent(master, store)


@pytest.mark.trio
async def test_a_store_that_contradicts_the_model_refuses_uploads_and_the_master_still_starts(
        tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with cluster(tmp_path, create={"labels": ["a", "b", "c", "d"]}) as (
                master, store, address):
            await upload(address, archive(tmp_path / "a.zip", ["a", "b"]))
            await master.save_project("p")
        # Another tool rewrote the store: its labels now contradict the model's.
        store = open_store(tmp_path)
        store.delete("p")
        from mlitb.dataserver import decode_archive
        store.add("p", decode_archive(archive(tmp_path / "x.zip", ["x", "y"]), SHAPE))
        del store
        async with cluster(tmp_path) as (master, store, address):
            assert any("not registered" in e.message for e in master.events
                       if e.kind == "error")
            count = store.info("p").count
            with pytest.raises(DataServerError) as info:
                await upload(address, archive(tmp_path / "b.zip", ["z"]))
            assert info.value.status == 409 and "nothing was stored" in str(info.value)
            assert store.info("p").count == count
