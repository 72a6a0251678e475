"""Shared fixtures: servers started for sync tests (CLI, console) in a thread of their own, and
the headless Chromium of the browser tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

pytest_plugins = ["skip_reasons"]  # a skip must say why (tests/skip_reasons.py)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
"""The data sets shared by tests and benchmarks: ``../shared/data`` relative to the checkout,
where mlitb/bench/ looks too (``../shared/data/README.md`` says what is there)."""


def shared_file(name: str) -> Path:
    """``SHARED_DATA / name``, or skip the test saying where it looked."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{name} is not in the shared data directory {SHARED_DATA} "
                    f"(../shared/data relative to the checkout {ROOT}; see its README.md)")
    return path


@pytest.fixture
def shared_data() -> Callable[[str], Path]:
    """``shared_data("cifar10-test.zip")``: the shared file's path, or a skip that says where
    it was looked for."""
    return shared_file


@pytest.fixture
def cifar10_test_zip() -> Path:
    """The shared CIFAR-10 test zip, or a skip at set-up that says where it was looked for. A
    trio test must take the file this way: a skip raised inside it reaches pytest without its
    message (pytest-trio runs the test in a nursery)."""
    return shared_file("cifar10-test.zip")


@dataclass
class ThreadedMaster:
    master: object
    url: str
    token: str
    token_run: trio.lowlevel.TrioToken


@pytest.fixture
def master_in_thread() -> Iterator[ThreadedMaster]:
    """A real master on a loopback port, run by ``trio.run`` in a daemon thread."""
    yield from _threaded_master()


@pytest.fixture
def lone_master_in_thread() -> Iterator[ThreadedMaster]:
    """A master without a data server of its own (``--no-data-server``): separate data
    servers register with it."""
    yield from _threaded_master(data_url=None)


def _threaded_master(**options: object) -> Iterator[ThreadedMaster]:
    from mlitb.master import Master

    master = Master(operator_token="thread-token", **options)  # type: ignore[arg-type]
    ready = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            box["port"] = await nursery.start(master.serve, "127.0.0.1", 0)
            box["token"] = trio.lowlevel.current_trio_token()
            box["stop"] = nursery.cancel_scope
            ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10), "the master did not start"
    token: trio.lowlevel.TrioToken = box["token"]  # type: ignore[assignment]
    yield ThreadedMaster(master, f"ws://127.0.0.1:{box['port']}", "thread-token", token)
    token.run_sync_soon(box["stop"].cancel)  # type: ignore[attr-defined]
    thread.join(10)


@dataclass
class ThreadedCluster:
    master: object
    store: object
    url: str
    data_url: str
    token: str


@pytest.fixture
def cluster_in_thread(tmp_path: Path) -> Iterator[ThreadedCluster]:
    """A master with its embedded data server (store in tmp_path), in a daemon thread."""
    from mlitb.cluster import open_store, serve_cluster
    from mlitb.master import Master

    master = Master(operator_token="thread-token")
    store = open_store(tmp_path / "data")
    ready = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            box["address"] = await nursery.start(
                lambda task_status: serve_cluster(master, store, "127.0.0.1", 0, 0,
                                                  task_status=task_status))
            box["token"] = trio.lowlevel.current_trio_token()
            box["stop"] = nursery.cancel_scope
            ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10), "the cluster did not start"
    address = box["address"]
    yield ThreadedCluster(master, store, address.master_url,  # type: ignore[attr-defined]
                          address.data_url, "thread-token")  # type: ignore[attr-defined]
    box["token"].run_sync_soon(box["stop"].cancel)  # type: ignore[attr-defined]
    thread.join(10)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real ``redis-server`` on a free loopback port for this test (``redis://...:PORT/0``);
    skips with a reason when redis-server or redis-py is absent."""
    from helpers.redis_server import redis_server

    with redis_server(tmp_path / "redis") as url:
        yield url


FAKE_MEDIA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
"""A fake camera, so the browser client's camera path runs too."""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium through Playwright, one per test module; skips, saying why,
    where it cannot run."""
    from mlitb.bench.browser import browser_unavailable, open_chromium

    reason = browser_unavailable()
    if reason:
        pytest.skip(f"no headless browser: {reason}")
    with open_chromium(FAKE_MEDIA) as chromium:
        yield chromium
