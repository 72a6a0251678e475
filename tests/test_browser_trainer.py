"""The browser's trainer Web Worker (mlitb/browser/trainer.js) against a scripted master: every message
it sends is decoded and validated with ``mlitb.protocol``, and its gradient is checked against
the numpy engine's. A real data server (same origin as the page, as in production) serves the
data; the "master" is a trio-websocket server in this test that plays one scenario:

1. welcome, PARAMETERS, a work order with nothing cached -> one RESULT with 0 samples and a zero
   vector; then the connection drops (1011) -> the worker reconnects by itself;
2. allocation -> the worker downloads the ids and reports them cached; work(samples=10) over all
   10 cached samples -> the gradient SUM equals numpy's; a time budget is kept;
3. project_changed (a new class) -> the network is rebuilt, results have the new length;
4. bye + close 4003 (removed) -> the worker stops and does not reconnect.

A second scenario is a ``local`` project (local SGD): deterministic rounds are answered with the
parameter delta of inner optimizer steps that equals numpy's (mlitb.optim, fresh each round),
time-budget rounds with PARAMETER_DELTA results and their step counts, and augmentation changes
what a round computes.

Needs Playwright and Debian's Chromium (skips and says why without them).
"""

from __future__ import annotations

import math
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import trio
from trio_websocket import WebSocketConnection, serve_websocket

from mlitb.bench.browser import BROWSER_DIR
from mlitb.dataserver import Decoded, Store, serve_data_server
from mlitb.nn import Net, normalize
from mlitb.optim import from_wire, make_optimizer
from mlitb.protocol import (
    Allocation,
    Bye,
    CacheReport,
    Hello,
    ProjectChanged,
    ProjectInfo,
    ResultFrame,
    ResultKind,
    Training,
    Welcome,
    Work,
    decode_frame,
    decode_text,
    encode_parameters,
    encode_text,
)

SPEC = normalize([{"type": "input", "out_sx": 4, "out_sy": 4, "out_depth": 3},
                  {"type": "fc", "num_neurons": 5, "activation": "relu"},
                  {"type": "softmax", "num_classes": 3}])
LABELS = ("a", "b", "c")
N = 10


def info(spec: list[dict[str, Any]], labels: tuple[str, ...], version: int,
         **extra: Any) -> ProjectInfo:
    net = Net(spec)
    return ProjectInfo(name="p", state="running", spec=tuple(spec), labels=labels,
                       iteration_time=1.0, iteration=version, parameter_version=version,
                       parameter_count=net.num_params, **extra)


class Scenario:
    """The scripted master. ``log`` records what happened; failures are kept in ``error``."""

    def __init__(self, data_url: str, images: np.ndarray, labels: np.ndarray) -> None:
        self.project = info(SPEC, LABELS, 1)
        self.data_url, self.images, self.labels = data_url, images, labels
        self.sessions = 0
        self.log: list[str] = []
        self.done = trio.Event()
        self.error: BaseException | None = None
        rng = np.random.default_rng(4)
        self.params = (rng.standard_normal(Net(SPEC).num_params) * 0.3).astype(np.float32)

    async def receive(self, ws: WebSocketConnection) -> Any:
        data = await ws.get_message()
        if isinstance(data, str):
            return decode_text(data)
        return decode_frame(data)

    async def result(self, ws: WebSocketConnection) -> ResultFrame:
        while True:
            message = await self.receive(ws)
            if isinstance(message, ResultFrame):
                return message
            assert isinstance(message, CacheReport), message

    async def handler(self, request: Any) -> None:
        ws = await request.accept()
        self.sessions += 1
        try:
            hello = await self.receive(ws)
            assert isinstance(hello, Hello), hello
            assert (hello.role, hello.client, hello.project) == ("trainer", "browser", "p")
            assert "on" in hello.host  # "Chromium 1xx on Linux"
            await ws.send_message(encode_text(Welcome(
                worker_id=self.sessions, role="trainer", data_url=self.data_url,
                server_version="0.1.0", project=self.project)))
            if self.sessions == 1:
                await self.first(ws)
            elif self.sessions == 2:
                await self.second(ws)
            else:
                self.log.append("reconnected after 4003")
        except BaseException as exc:
            if not isinstance(exc, trio.Cancelled):
                self.error = exc
                self.done.set()
            raise

    async def first(self, ws: WebSocketConnection) -> None:
        await ws.send_message(encode_parameters(self.params, parameter_version=1, iteration=1))
        await ws.send_message(encode_text(Work(iteration=1, parameter_version=1, seconds=0.05)))
        result = await self.result(ws)
        assert (result.parameter_version, result.samples, result.correct) == (1, 0, 0)
        assert result.vector.size == self.params.size and not result.vector.any()
        self.log.append("empty result")
        await ws.aclose(1011, "scripted drop")

    async def second(self, ws: WebSocketConnection) -> None:
        self.log.append("reconnected")
        await self.cache_all(ws)
        # Exactly one pass over the 10 cached samples: the sum does not depend on the order.
        await ws.send_message(encode_parameters(self.params, parameter_version=2, iteration=2))
        await ws.send_message(encode_text(Work(iteration=2, parameter_version=2, samples=N)))
        result = await self.result(ws)
        net = Net(SPEC, params=self.params)
        x = self.images.astype(np.float32) / 255.0 - 0.5
        stats = net.accumulate_gradient(x, self.labels.astype(np.int64))
        assert (result.parameter_version, result.samples, result.correct) == (2, N, stats.correct)
        assert math.isclose(result.loss_sum, stats.loss, rel_tol=1e-5)
        scale = float(np.abs(net.grads).max())
        assert float(np.abs(result.vector - net.grads).max()) <= 1e-5 * scale
        self.log.append("gradient matches numpy")
        # A time budget: at least one sample, and a compute time that is the trainer's own
        # (no more than the order took from here; a bound in seconds would fail on a busy
        # machine).
        sent = time.monotonic()
        await ws.send_message(encode_parameters(self.params, parameter_version=3, iteration=3))
        await ws.send_message(encode_text(Work(iteration=3, parameter_version=3, seconds=0.3)))
        result = await self.result(ws)
        took = time.monotonic() - sent
        assert result.samples >= 1 and 0 < result.compute_seconds <= took, (result, took)
        self.log.append("time budget kept")
        # A new class: the worker rebuilds its net; results have the new length.
        grown = [dict(d) for d in SPEC]
        grown[-2]["num_neurons"] = 4
        grown[-1]["num_classes"] = 4
        grown = normalize(grown)
        new_info = info(grown, (*LABELS, "d"), 4)
        await ws.send_message(encode_text(ProjectChanged(project=new_info)))
        params = np.random.default_rng(5).standard_normal(new_info.parameter_count)
        await ws.send_message(encode_parameters(params.astype(np.float32), parameter_version=4,
                                                iteration=4))
        await ws.send_message(encode_text(Work(iteration=4, parameter_version=4, samples=N)))
        result = await self.result(ws)
        assert result.samples == N and result.vector.size == new_info.parameter_count
        self.log.append("rebuilt")
        await ws.send_message(encode_text(Bye(reason="removed", message="scripted removal")))
        await ws.aclose(4003, "removed")
        self.log.append("removed")
        self.done.set()

    async def cache_all(self, ws: WebSocketConnection) -> None:
        await ws.send_message(encode_text(Allocation(added=tuple(range(N)), total=N)))
        cached: set[int] = set()
        with trio.fail_after(10):
            while cached != set(range(N)):
                report = await self.receive(ws)
                assert isinstance(report, CacheReport), report
                cached |= set(report.cached)
        self.log.append("cached")


# The inner optimizer of the local scenario, as the master sends it: every hyperparameter of the
# project's optimizer as a number. lr_decay must be ignored (the master's schedule sets the rate
# of each round): with it, the second step would take half the learning rate.
INNER_HP = {"learning_rate": 0.05, "momentum": 0.9, "nesterov": 0.0, "l1_decay": 0.0,
            "l2_decay": 0.001, "lr_decay": 0.5, "lr_decay_every": 1.0, "lr_min": 0.0}
ROUND_LR = 0.2


class LocalScenario(Scenario):
    """A ``local`` project with batch_size N: in a deterministic round of 2N samples each batch
    is one whole pass over the cache, so the two inner steps do not depend on the order."""

    def __init__(self, data_url: str, images: np.ndarray, labels: np.ndarray) -> None:
        super().__init__(data_url, images, labels)
        self.training = Training(algorithm="local", batch_size=N)
        self.project = info(SPEC, LABELS, 1, training=self.training, optimizer="sgd",
                            hyperparameters=INNER_HP)

    def expected_delta(self, steps: int) -> tuple[np.ndarray, float]:
        """numpy's delta and loss sum after ``steps`` full-batch steps of a fresh optimizer."""
        net = Net(SPEC, params=self.params.copy())
        l1, l2 = net.decay_multipliers()
        hp = from_wire({k: v for k, v in INNER_HP.items() if k != "lr_decay"})
        opt = make_optimizer("sgd", net.num_params, **hp, l1_mul=l1, l2_mul=l2)
        opt.set_hyperparameters(learning_rate=ROUND_LR)
        x = self.images.astype(np.float32) / 255.0 - 0.5
        loss = 0.0
        for _ in range(steps):
            net.zero_grads()
            stats = net.accumulate_gradient(x, self.labels.astype(np.int64))
            loss += stats.loss
            opt.step(net.params, net.grads / np.float32(stats.count))
        return net.params - self.params, loss

    async def round(self, ws: WebSocketConnection, version: int, **budget: Any) -> ResultFrame:
        await ws.send_message(encode_parameters(self.params, parameter_version=version,
                                                iteration=version))
        await ws.send_message(encode_text(Work(iteration=version, parameter_version=version,
                                               learning_rate=ROUND_LR, **budget)))
        result = await self.result(ws)
        assert result.parameter_version == version and result.kind is ResultKind.PARAMETER_DELTA
        return result

    def check_deterministic(self, result: ResultFrame, what: str) -> None:
        expected, loss = self.expected_delta(2)
        assert (result.samples, result.steps) == (2 * N, 2), what
        assert math.isclose(result.loss_sum, loss, rel_tol=1e-5), what
        scale = float(np.abs(expected).max())
        err = float(np.abs(result.vector - expected).max())
        assert err <= 1e-5 * scale, f"{what}: off by {err / scale:.1e}"

    async def second(self, ws: WebSocketConnection) -> None:
        self.log.append("reconnected")
        await self.cache_all(ws)
        self.check_deterministic(await self.round(ws, 2, samples=2 * N), "first round")
        self.log.append("deterministic delta matches numpy")
        # Time budgets: inner steps until the budget is spent, their state kept between rounds.
        for version in (3, 4):
            sent = time.monotonic()
            result = await self.round(ws, version, seconds=0.3)
            took = time.monotonic() - sent
            assert result.steps >= 1 and 1 <= result.samples <= result.steps * N, result
            assert 0 < result.compute_seconds <= took, (result, took)
            assert np.abs(result.vector).max() > 0, result
        self.log.append("time budget: steps")
        # A deterministic round starts the inner optimizer from zero again.
        self.check_deterministic(await self.round(ws, 5, samples=2 * N), "after timed rounds")
        self.log.append("deterministic round starts fresh")
        # Augmentation (drawn by the worker): the same round computes something else.
        augmented = Training(algorithm="local", batch_size=N, shift=2, flip=True)
        await ws.send_message(encode_text(ProjectChanged(project=info(
            SPEC, LABELS, 6, training=augmented, optimizer="sgd", hyperparameters=INNER_HP))))
        result = await self.round(ws, 6, samples=2 * N)
        expected, _ = self.expected_delta(2)
        assert (result.samples, result.steps) == (2 * N, 2)
        assert float(np.abs(result.vector - expected).max()) > 1e-3 * float(np.abs(expected).max())
        self.log.append("augmented")
        await ws.send_message(encode_text(Bye(reason="removed", message="scripted removal")))
        await ws.aclose(4003, "removed")
        self.log.append("removed")
        self.done.set()


def run_worker(browser: Any, tmp_path: Path, make: type[Scenario]) -> tuple[Scenario, Any]:
    """Serve the data, play ``make``'s scenario as the master and start one trainer worker in a
    page; returns the finished scenario and the page (its ``statuses``, ``logs``, ``errors``)."""
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (N, 3, 4, 4), dtype=np.uint8)
    labels = (np.arange(N) % 3).astype(np.uint32)
    store = Store(tmp_path / "store", fsync=False)
    store.add("p", Decoded(images=images, labels=labels, label_names=LABELS,
                           sha256=("0" * 64,) * N, names=tuple(f"{i}.png" for i in range(N))))
    static = tmp_path / "static"  # the client's files plus an empty page, same origin as the data
    static.mkdir()
    for entry in BROWSER_DIR.iterdir():
        if not entry.name.startswith(("_", ".")):
            (static / entry.name).symlink_to(entry)
    (static / "blank.html").write_text(
        '<!doctype html><title>worker test</title><link rel="icon" href="data:,">')

    box: dict[str, Any] = {}
    ready = threading.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            data_port = await nursery.start(partial(serve_data_server, store, "127.0.0.1", 0,
                                                    static=static))
            scenario = make(f"http://127.0.0.1:{data_port}", images, labels)
            server = await nursery.start(partial(serve_websocket, scenario.handler, "127.0.0.1",
                                                 0, None))
            box.update(scenario=scenario, data_port=data_port, master_port=server.port)
            ready.set()
            with trio.move_on_after(45):
                await scenario.done.wait()
            await trio.sleep(1.5)  # a removed worker must not come back
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10)
    page = browser.new_page()
    page.errors = errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(f"http://127.0.0.1:{box['data_port']}/blank.html")
        page.evaluate("""(url) => {
            window.statuses = [];
            window.logs = [];
            const w = new Worker('/trainer.js', {type: 'module'});
            w.onmessage = (e) => (e.data.type === 'log' ? window.logs : window.statuses).push(e.data);
            w.onerror = (e) => window.logs.push({level: 'error', text: 'worker error ' + e.message});
            w.postMessage({cmd: 'start', url, project: 'p', role: 'trainer',
                           pageOrigin: location.origin, host: 'Chromium 1 on Linux'});
        }""", f"ws://127.0.0.1:{box['master_port']}")
        thread.join(60)
        assert not thread.is_alive(), "the scenario did not finish"
        scenario: Scenario = box["scenario"]
        if scenario.error is not None:
            raise scenario.error
    except BaseException:
        page.close()
        raise
    return scenario, page


def test_trainer_worker_follows_the_protocol(browser: Any, tmp_path: Path) -> None:
    scenario, page = run_worker(browser, tmp_path, Scenario)
    try:
        assert scenario.log == ["empty result", "reconnected", "cached", "gradient matches numpy",
                                "time budget kept", "rebuilt", "removed"], scenario.log
        assert scenario.sessions == 2
        statuses = [s for s in page.evaluate("window.statuses") if s["type"] == "status"]
        phases = [s["phase"] for s in statuses]
        assert "waiting" in phases and "caching" in phases and "training" in phases
        assert phases[-1] == "stopped" and "4003" in statuses[-1]["message"]
        logs = page.evaluate("window.logs")
        assert any("reconnecting in" in entry["text"] for entry in logs), logs
        assert page.errors == []
    finally:
        page.close()


def test_trainer_worker_takes_local_steps(browser: Any, tmp_path: Path) -> None:
    scenario, page = run_worker(browser, tmp_path, LocalScenario)
    try:
        assert scenario.log == ["empty result", "reconnected", "cached",
                                "deterministic delta matches numpy", "time budget: steps",
                                "deterministic round starts fresh", "augmented", "removed"], \
            scenario.log
        statuses = [s for s in page.evaluate("window.statuses") if s["type"] == "status"]
        assert any(s["algorithm"] == "local" and (s["steps"] or 0) >= 1 for s in statuses)
        assert page.errors == []
    finally:
        page.close()
