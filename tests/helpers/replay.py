"""A cluster and nodes in real processes for deterministic runs (tests of replay, limits, robust
aggregation)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from mlitb.cluster import ClusterAddress, open_store, serve_cluster
from mlitb.dataserver import DataClient, write_archive
from mlitb.datasets import DIGITS_SPEC, digits
from mlitb.master import Master

PROJECT = "digits"
SAMPLES = 64
STEPS = 20


def write_digits(tmp_path: Path) -> tuple[Path, Path]:
    train, test, names = digits()
    zips = []
    for split, data in (("train", train), ("test", test)):
        zips.append(write_archive(tmp_path / f"{split}.zip", [
            (names[int(y)], image[..., 0]) for image, y in zip(data.images, data.labels)]))
    return zips[0], zips[1]


@asynccontextmanager
async def cluster(tmp_path: Path, train_zip: Path, test_zip: Path, **create: Any
                  ) -> AsyncIterator[tuple[Master, ClusterAddress]]:
    master = Master(operator_token="secret")
    store = open_store(tmp_path / "data")
    async with trio.open_nursery() as nursery:
        address = await nursery.start(lambda task_status: serve_cluster(
            master, store, "127.0.0.1", 0, 0, task_status=task_status))
        master.create_project(PROJECT, DIGITS_SPEC, **create)
        client = DataClient(address.data_url, token="secret")
        await trio.to_thread.run_sync(lambda: client.upload(PROJECT, train_zip))
        await trio.to_thread.run_sync(lambda: client.upload(PROJECT, test_zip, split="test"))
        yield master, address
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def node(address: ClusterAddress, tmp_path: Path, workers: int = 1
               ) -> AsyncIterator[None]:
    with open(tmp_path / "node.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlitb", "node", "join", address.master_url, "--project",
             PROJECT, "--workers", str(workers)], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            yield
        finally:
            process.kill()
            process.wait()


def record_run(tmp_path: Path, train_zip: Path, test_zip: Path, steps: int = STEPS,
               **create: Any) -> dict[str, Any]:
    """The closure (JSON object) of a deterministic project created with ``create`` after
    ``steps`` steps trained by one real node process."""
    box: dict[str, Any] = {}

    async def main() -> None:
        with trio.fail_after(90):
            async with cluster(tmp_path, train_zip, test_zip, iteration_time=1.0,
                               samples_per_iteration=SAMPLES, **create) as (master, address), \
                    node(address, tmp_path):
                project = master.projects[PROJECT]
                while project.parameter_version < steps:
                    await trio.sleep(0.2)
                box["closure"] = master.closure_of(PROJECT)

    trio.run(main)
    closure: dict[str, Any] = box["closure"]
    return closure
