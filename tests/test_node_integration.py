"""End to end with real processes: a master and a data server (in this test's trio run, on
loopback, port 0), the bundled digits uploaded as zips over HTTP, and ``mlitb node join`` run as
subprocesses — two trainer workers and one stats worker. The master's own statistics must show both
trainers caching their share and training, and test-error points from the stats worker; SIGINT
makes each node leave cleanly (exit 0, workers gone from the master)."""

from __future__ import annotations

import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from mlitb.datasets import DIGITS_SPEC

dataserver = pytest.importorskip("mlitb.dataserver")
if not hasattr(dataserver, "serve_data_server"):
    pytest.skip("the data server is not built yet", allow_module_level=True)

from helpers.nodes import (
    PROJECT,
    make_zips,
    node_command,
    start_node,
    wait_for,
)

from mlitb.dataserver import DataClient, InputShape, Store, serve_data_server  # noqa: E402
from mlitb.master import Master  # noqa: E402


@pytest.mark.trio
@pytest.mark.slow
async def test_two_python_workers_train_and_leave_on_sigint(tmp_path: Path) -> None:
    train_zip, test_zip, names, n_train, n_test = make_zips(tmp_path)
    store = Store(tmp_path / "store")
    master: Master | None = None

    def on_registered(registration: Any) -> None:
        assert master is not None
        master.register_data(registration.project, registration.split, registration.ids,
                             registration.label_names)

    with trio.fail_after(150):
        async with trio.open_nursery() as nursery:
            data_port = await nursery.start(partial(serve_data_server, store, "127.0.0.1", 0,
                                                    on_registered=on_registered,
                                                    upload_token="secret"))
            master = Master(operator_token="secret", data_url=f"http://127.0.0.1:{data_port}")
            port = await nursery.start(master.serve, "127.0.0.1", 0)
            master.create_project(PROJECT, DIGITS_SPEC, iteration_time=1.0, labels=names,
                                  hyperparameters={"learning_rate": 0.05})
            client = DataClient(f"http://127.0.0.1:{data_port}", token="secret")
            for split, archive in (("train", train_zip), ("test", test_zip)):
                await trio.to_thread.run_sync(partial(
                    client.upload, PROJECT, archive, split=split,
                    shape=InputShape(width=8, height=8, channels=1)))

            def status() -> Any:
                assert master is not None
                return master.statistics()[PROJECT]

            assert (status().data.total, status().data.test) == (n_train, n_test)
            trainers = await start_node(nursery, node_command(port, "--workers", "2"))
            stats = await start_node(nursery, node_command(port, "--task", "stats"))
            try:
                def python_trainers() -> list[Any]:
                    return [w for w in status().workers
                            if w.role == "trainer" and w.client == "python"]

                def both_train() -> bool:
                    workers = python_trainers()
                    return len(workers) == 2 and all(
                        w.state == "training" and w.allocated > 0 and w.cached == w.allocated
                        and w.samples_per_s for w in workers)

                await wait_for(both_train, "both python workers to train", 60)
                workers = python_trainers()
                assert sum(w.allocated for w in workers) == n_train
                first = status().iteration
                await wait_for(lambda: status().iteration >= first + 3, "three iterations", 30)
                recent = [h for h in status().history if h.iteration > first]
                assert recent and all(h.samples > 0 for h in recent)
                await wait_for(lambda: len(status().test_error) >= 2, "test-error points", 30)
                point = status().test_error[-1]
                assert point.samples == n_test and 0.0 <= point.error <= 1.0

                started = time.monotonic()
                for node in (trainers, stats):
                    node.process.send_signal(signal.SIGINT)
                codes = [await node.process.wait() for node in (trainers, stats)]
                assert time.monotonic() - started < 8.0
                await wait_for(lambda: not status().workers, "the workers to leave", 5)
            finally:
                for node in (trainers, stats):
                    if node.process.returncode is None:
                        node.process.kill()
            nursery.cancel_scope.cancel()
    assert codes == [0, 0], trainers.text + stats.text
    for node in (trainers, stats):
        assert "closed cleanly" in node.text and "Traceback" not in node.text
