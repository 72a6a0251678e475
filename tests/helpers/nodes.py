"""Node processes against a real master (tests of nodes and of the wire)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from mlitb.dataserver import write_archive
from mlitb.datasets import digits

PROJECT = "digits"


def node_command(port: int, *args: str) -> list[str]:
    """``python -m mlitb node join`` once the sub-app is registered in the CLI, else the same
    app through ``python -m mlitb.nodes``."""
    from mlitb.cli import app

    registered = any(group.name == "node" for group in app.registered_groups)
    prefix = ["-m", "mlitb", "node"] if registered else ["-m", "mlitb.nodes"]
    return [sys.executable, *prefix, "join", f"ws://127.0.0.1:{port}", "--project", PROJECT,
            *args]


class NodeProcess:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.output = bytearray()

    async def read_output(self) -> None:
        assert self.process.stdout is not None
        async for chunk in self.process.stdout:
            self.output += chunk

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


async def start_node(nursery: trio.Nursery, command: list[str]) -> NodeProcess:
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT)
    node = NodeProcess(process)
    nursery.start_soon(node.read_output)
    return node


def make_zips(tmp_path: Path) -> tuple[Path, Path, list[str], int, int]:
    train, test, names = digits()
    zips = []
    for split, data in (("train", train), ("test", test)):
        samples = ((names[int(y)], image[..., 0]) for image, y in zip(data.images, data.labels))
        zips.append(write_archive(tmp_path / f"digits-{split}.zip", samples))
    return zips[0], zips[1], names, len(train.labels), len(test.labels)


async def wait_for(condition: Any, what: str, timeout: float) -> None:
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.2)
        return
    raise AssertionError(f"timed out waiting for {what}")
