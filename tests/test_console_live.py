"""The operator console against a real master and real node processes on loopback.

One cluster (master + embedded data server, run by ``trio.run`` in a daemon thread) serves the
whole module: a ``digits`` project with the bundled digits uploaded over HTTP, and one
``python -m mlitb node join`` subprocess with 2 trainer workers. Each test drives a fresh
``ConsoleApp(LiveBackend(...))`` with Pilot and checks what reached the master. The tests run in
file order; the last one removes a worker. Connection troubles (wrong token, nothing listening, a
master that restarts) get masters of their own.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from helpers.procs import free_port
from textual.pilot import Pilot

from mlitb.console import ConsoleApp, LiveBackend
from mlitb.console.dialogs._create import CreateProjectDialog
from mlitb.console.dialogs._form_field import FormField
from mlitb.console.dialogs._hyperparameters import HyperparametersDialog
from mlitb.console.dialogs._save import SaveModelDialog
from mlitb.console.dialogs._upload import UploadDialog
from mlitb.console.screens._project import ProjectScreen
from mlitb.console.screens._projects import ProjectsScreen
from mlitb.console.widgets._link_bar import LinkBar
from mlitb.console.widgets._metric_plot import MetricPlot
from mlitb.console.widgets._projects_table import ProjectsTable
from mlitb.console.widgets._workers_table import WorkersTable
from mlitb.datasets import DIGITS_SPEC, digits

pytestmark = pytest.mark.slow
T = TypeVar("T")
TOKEN = "console-token"
PROJECT = "digits"
DEADLINE = 60.0


class ClusterThread:
    """A master (with its data server unless ``data`` is False) run by ``trio.run`` in a daemon
    thread, as tests/conftest.py's fixtures do; ``call`` runs a function in its trio thread."""

    def __init__(self, store_dir: Path | None, port: int = 0, *,
                 data_url: str | None = "http://127.0.0.1:8001") -> None:
        from mlitb.master import Master

        self.master = Master(operator_token=TOKEN, data_url=data_url)
        self.store_dir = store_dir
        self.port = port
        self.url = ""
        self.data_url = ""
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.CancelScope | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ClusterThread:
        ready = threading.Event()

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                if self.store_dir is not None:
                    from mlitb.cluster import open_store, serve_cluster

                    store = open_store(self.store_dir)
                    address = await nursery.start(lambda task_status: serve_cluster(
                        self.master, store, "127.0.0.1", self.port, 0, task_status=task_status))
                    self.url, self.data_url = address.master_url, address.data_url
                else:
                    port = await nursery.start(self.master.serve, "127.0.0.1", self.port)
                    self.url = f"ws://127.0.0.1:{port}"
                self._token = trio.lowlevel.current_trio_token()
                self._stop = nursery.cancel_scope
                ready.set()

        failure: list[BaseException] = []

        def run() -> None:
            try:
                trio.run(main)
            except BaseException as exc:  # noqa: BLE001 (reported by start)
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(30), "the master did not start"
        assert not failure, f"the master did not start: {failure[0]!r}"
        return self

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._token is not None
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        token, self._token = self._token, None
        if token is not None and self._stop is not None:
            try:
                token.run_sync_soon(self._stop.cancel)
            except trio.RunFinishedError:
                pass
        if self._thread is not None:
            self._thread.join(10)


class Live:
    def __init__(self, cluster: ClusterThread, zips: dict[str, Path], counts: dict[str, int],
                 tmp: Path) -> None:
        self.cluster, self.zips, self.counts, self.tmp = cluster, zips, counts, tmp

    @property
    def master(self) -> Any:
        return self.cluster.master

    def project(self, name: str = PROJECT) -> Any:
        return self.cluster.call(lambda: self.master.projects.get(name))

    def status(self) -> Any:
        return self.cluster.call(lambda: self.master.statistics()[PROJECT])

    def app(self, project: str | None = PROJECT, token: str | None = TOKEN) -> ConsoleApp:
        return ConsoleApp(LiveBackend(self.cluster.url, token, interval=0.2),
                          project=project, refresh_interval=0.1)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from mlitb.dataserver import DataClient, InputShape, write_archive

    tmp = tmp_path_factory.mktemp("console-live")
    train, test, names = digits()
    zips: dict[str, Path] = {}
    for split, data in (("train", train), ("test", test)):
        zips[split] = write_archive(tmp / f"digits-{split}.zip", (
            (names[int(y)], image[..., 0]) for image, y in zip(data.images, data.labels)))
    cluster = ClusterThread(tmp / "data").start()
    node: subprocess.Popen[bytes] | None = None
    try:
        cluster.call(lambda: cluster.master.create_project(
            PROJECT, DIGITS_SPEC, iteration_time=1.0, labels=names,
            hyperparameters={"learning_rate": 0.01}))
        DataClient(cluster.data_url, token=TOKEN).upload(PROJECT, zips["train"], split="train",
                                           shape=InputShape(width=8, height=8, channels=1))
        with open(tmp / "node.log", "wb") as log:  # the node's output, for a failing test
            node = subprocess.Popen(
                [sys.executable, "-m", "mlitb", "node", "join", cluster.url, "--project",
                 PROJECT, "--workers", "2", "--seed", "0"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        yield Live(cluster, zips, {"train": len(train.labels), "test": len(test.labels)}, tmp)
    finally:
        if node is not None:
            if node.poll() is None:
                node.send_signal(signal.SIGINT)
            try:
                node.wait(10)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait(5)
        cluster.stop()


async def until(pilot: Pilot[None], condition: Callable[[], object], what: str,
                timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.1)


async def reaction_time(pilot: Pilot[None], key: str, done: Callable[[], bool]) -> float:
    """Seconds from pressing ``key`` until ``done()``, watched every 5 ms."""
    start = time.monotonic()

    async def watch() -> float:
        while not done():
            await asyncio.sleep(0.005)
        return time.monotonic() - start

    watcher = asyncio.create_task(watch())
    await pilot.press(key)
    return await asyncio.wait_for(watcher, 5)


def trainers_shown(app: ConsoleApp) -> list[str]:
    status = app.status
    if status is None:
        return []
    project = next((p for p in status.projects if p.name == PROJECT), None)
    return [str(w.worker_id) for w in project.workers if w.role == "trainer"] if project else []


async def open_view(app: ConsoleApp, pilot: Pilot[None]) -> ProjectScreen:
    await until(pilot, lambda: isinstance(app.screen, ProjectScreen) and app.status is not None,
                "the project view with a status")
    assert isinstance(app.screen, ProjectScreen)
    return app.screen


# -- with the shared cluster and its node --------------------------------------------------------
@pytest.mark.asyncio
async def test_workers_table_fills_and_the_loss_curve_gains_points(live: Live) -> None:
    async with asyncio.timeout(DEADLINE):
        app = live.app()
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await open_view(app, pilot)
            table = screen.query_one(WorkersTable)

            def training() -> bool:
                shown = trainers_shown(app)
                return len(shown) == 2 and all(
                    k in table.keys and "training" in str(table.get_cell(k, "state"))
                    for k in shown)

            await until(pilot, training, "two training workers in the table", timeout=40)
            assert "python" in str(table.get_cell(trainers_shown(app)[0], "kind"))
            plot = screen.query_one("#loss-plot", MetricPlot)
            before = plot.points
            await until(pilot, lambda: plot.points >= before + 2, "two more loss points")
            link = str(screen.query_one(LinkBar).render())
            assert "connected" in link and "token accepted" in link


@pytest.mark.asyncio
async def test_pause_and_resume_reach_the_master(live: Live) -> None:
    async with asyncio.timeout(DEADLINE):
        app = live.app()
        async with app.run_test(size=(80, 24)) as pilot:
            await open_view(app, pilot)
            await pilot.press("p")
            await until(pilot, lambda: live.project().paused, "the master paused")
            await until(pilot, lambda: app.status is not None and any(
                p.name == PROJECT and p.state == "paused" for p in app.status.projects),
                "paused on screen")
            await pilot.press("p")
            await until(pilot, lambda: not live.project().paused, "the master resumed")


@pytest.mark.asyncio
async def test_hyperparameter_edit_reaches_the_master_and_refusals_show_inline(
        live: Live) -> None:
    async with asyncio.timeout(DEADLINE):
        app = live.app()
        async with app.run_test(size=(80, 24)) as pilot:
            await open_view(app, pilot)
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, HyperparametersDialog), "dialog")
            dialog = app.screen

            def field(key: str) -> FormField:
                return dialog.query_one(f"#field-{key}", FormField)

            # The master's optimizer refuses a negative rate: its words, under the field.
            field("learning_rate").value = "-0.5"
            await pilot.press("enter")
            await until(pilot, lambda: field("learning_rate").error, "the refusal inline")
            assert "-0.5" in field("learning_rate").error
            assert app.screen is dialog
            assert live.project().optimizer.hyperparameters()["learning_rate"] == 0.01
            # T out of range is caught in the console.
            field("learning_rate").value = "0.02"
            field("T").value = "0.1"
            await pilot.press("enter")
            await until(pilot, lambda: field("T").error, "T refused inline")
            assert "between 0.25 and 30" in field("T").error
            # A good edit reaches the master.
            field("T").value = "1.5"
            await pilot.press("enter")
            await until(pilot, lambda: app.screen is not dialog, "the dialog closed")
            project = live.project()
            assert project.optimizer.hyperparameters()["learning_rate"] == 0.02
            assert project.iteration_time == 1.5
            await until(pilot, lambda: app.status is not None and app.status.projects[0]
                        .hyperparameters["learning_rate"] == 0.02, "the new rate on screen")


@pytest.mark.asyncio
async def test_upload_a_test_set_with_progress(live: Live) -> None:
    async with asyncio.timeout(DEADLINE):
        app = live.app(project=None)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.status is not None, "a status")
            await pilot.press("u")
            await until(pilot, lambda: isinstance(app.screen, UploadDialog), "dialog")
            dialog = app.screen
            assert isinstance(dialog, UploadDialog)
            dialog.query_one("#field-archive", FormField).value = str(live.zips["test"])
            dialog.query_one("#split").value = "test"  # type: ignore[attr-defined]
            await pilot.press("enter")
            await until(pilot, lambda: dialog.result is not None, "the upload")
            assert dialog.result is not None and dialog.result["count"] == live.counts["test"]
            assert dialog.query_one("#progress").percentage == 1.0  # type: ignore[attr-defined]
            assert len(live.project().test_ids) == live.counts["test"]


@pytest.mark.asyncio
async def test_save_model_and_research_closure(live: Live) -> None:
    from mlitb.closure import load_closure
    from mlitb.nn import load_model

    async with asyncio.timeout(DEADLINE):
        app = live.app()
        async with app.run_test(size=(80, 24)) as pilot:
            await open_view(app, pilot)
            for fmt in ("model", "closure"):
                await pilot.press("s")
                await until(pilot, lambda: isinstance(app.screen, SaveModelDialog), "dialog")
                dialog = app.screen
                dialog.query_one("#format").value = fmt  # type: ignore[attr-defined]
                target = live.tmp / f"saved.{fmt}.json"
                dialog.query_one("#field-path", FormField).value = str(target)
                await pilot.press("enter")
                await until(pilot, target.exists, f"the {fmt} file")
                await until(pilot, lambda: isinstance(app.screen, ProjectScreen), "closed")
            assert load_model(live.tmp / "saved.model.json").num_params > 0
            assert load_closure(live.tmp / "saved.closure.json").net().num_params > 0


@pytest.mark.asyncio
async def test_create_and_delete_a_project(live: Live) -> None:
    async with asyncio.timeout(DEADLINE):
        spec = live.tmp / "spec.json"
        spec.write_text(json.dumps(DIGITS_SPEC))
        app = live.app(project=None)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.status is not None, "a status")
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, CreateProjectDialog), "dialog")
            dialog = app.screen

            def field(key: str) -> FormField:
                return dialog.query_one(f"#field-{key}", FormField)

            field("name").value = PROJECT
            field("model").value = str(spec)
            await pilot.press("enter")
            await until(pilot, lambda: field("name").error, "name in use")
            assert "exists" in field("name").error
            field("name").value = "scratch"
            field("learning_rate").value = "0.05"
            await pilot.press("enter")
            await until(pilot, lambda: live.project("scratch") is not None, "created")
            assert live.project("scratch").optimizer.hyperparameters()["learning_rate"] == 0.05
            await until(pilot, lambda: isinstance(app.screen, ProjectsScreen), "closed")
            table = app.screen.query_one("#projects", ProjectsTable)
            await until(pilot, lambda: "scratch" in table.keys, "a row")
            table.move_cursor(row=table.keys.index("scratch"))
            await pilot.press("d")
            await pilot.pause()
            await pilot.press("y")
            await until(pilot, lambda: live.project("scratch") is None, "deleted")
            await until(pilot, lambda: "scratch" not in table.keys, "the row gone")
            # A research closure saved by the console starts a project of its own.
            closure = live.tmp / "saved.closure.json"
            if closure.exists():  # written by test_save_model_and_research_closure
                await pilot.press("n")
                await until(pilot, lambda: isinstance(app.screen, CreateProjectDialog),
                            "dialog")
                dialog = app.screen
                field("name").value = "resumed"
                field("model").value = str(closure)
                await pilot.press("enter")
                await until(pilot, lambda: live.project("resumed") is not None,
                            "created from the closure")
                assert live.project("resumed").net.num_params == live.project().net.num_params


@pytest.mark.asyncio
async def test_removing_a_worker_removes_it(live: Live) -> None:
    async with asyncio.timeout(DEADLINE):
        app = live.app()
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_view(app, pilot)
            table = screen.query_one(WorkersTable)
            await until(pilot, lambda: len(trainers_shown(app)) == 2, "two trainers")
            victim = trainers_shown(app)[0]
            await until(pilot, lambda: victim in table.keys, "its row")
            table.move_cursor(row=table.keys.index(victim))
            await pilot.press("x")
            await pilot.pause()
            await pilot.press("y")
            await until(pilot, lambda: int(victim) not in [w.worker_id for w in
                                                           live.status().workers],
                        "the master without it")
            await until(pilot, lambda: victim not in table.keys, "the row gone")
            assert len(trainers_shown(app)) == 1


# -- connection troubles ------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_a_wrong_token_gets_a_clear_message_and_no_retry() -> None:
    cluster = ClusterThread(None).start()
    try:
        async with asyncio.timeout(DEADLINE):
            app = ConsoleApp(LiveBackend(cluster.url, "not-the-token"), refresh_interval=0)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: app.link is not None and app.link.phase == "refused",
                            "the refusal")
                await pilot.pause()
                text = str(app.screen.query_one("#projects-empty").render())
                assert "refused the operator token" in text and "--token" in text
                assert "not retrying" in str(app.screen.query_one(LinkBar).render())
    finally:
        cluster.stop()


@pytest.mark.asyncio
async def test_an_unreachable_master_gets_a_clear_message_and_retries() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    async with asyncio.timeout(DEADLINE):
        app = ConsoleApp(LiveBackend(url, TOKEN, first_backoff=0.1), refresh_interval=0)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.link is not None and app.link.attempt >= 2,
                        "a second attempt")
            assert app.link is not None and app.link.phase == "unreachable"
            text = str(app.screen.query_one("#projects-empty").render())
            assert f"Cannot reach the master at {url}" in text
            assert "retrying in" in str(app.screen.query_one(LinkBar).render())


@pytest.mark.asyncio
async def test_the_console_reconnects_when_the_master_restarts() -> None:
    port = free_port()
    first = ClusterThread(None, port).start()
    second: ClusterThread | None = None
    try:
        async with asyncio.timeout(DEADLINE):
            app = ConsoleApp(LiveBackend(first.url, TOKEN, interval=0.2, first_backoff=0.2),
                             refresh_interval=0)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: app.link is not None and app.link.online,
                            "connected")
                await asyncio.to_thread(first.stop)
                await until(pilot, lambda: app.link is not None and app.link.phase == "lost",
                            "the loss noticed")
                assert "reconnecting by itself" in str(app.screen.query_one(LinkBar).render())
                second = ClusterThread(None, port).start()
                second.call(lambda: second.master.create_project("after", DIGITS_SPEC))
                await until(pilot, lambda: app.link is not None and app.link.online,
                            "connected again")
                await until(pilot, lambda: app.status is not None and any(
                    p.name == "after" for p in app.status.projects), "the new master's projects")
                assert any("again" in n.message for n in app._notifications)
    finally:
        first.stop()
        if second is not None:
            second.stop()


TRACKERS = """
import sys, trio
from trio_websocket import open_websocket_url
from mlitb.protocol import Hello, encode_text

async def tracker(url, project, k):
    try:
        async with open_websocket_url(url) as ws:
            await ws.send_message(encode_text(Hello(role="tracker", client="browser",
                                                    host=f"tab-{k:03d}", project=project)))
            while True:  # read what the master sends, as a browser tab would
                await ws.get_message()
    except Exception as exc:
        print(f"tracker {k}: {exc!r}", file=sys.stderr)

async def main(url, project, count):
    async with trio.open_nursery() as nursery:
        for k in range(count):
            nursery.start_soon(tracker, url, project, k)

trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


@pytest.fixture
def crowd(tmp_path: Path) -> Iterator[tuple[ClusterThread, Path]]:
    """A master with one project and 500 browser trackers (a process of their own) on it."""
    cluster = ClusterThread(None).start()
    trackers: subprocess.Popen[bytes] | None = None
    log_path = tmp_path / "trackers.log"
    try:
        cluster.call(lambda: cluster.master.create_project(PROJECT, DIGITS_SPEC))
        with open(log_path, "wb") as log:
            trackers = subprocess.Popen([sys.executable, "-c", TRACKERS, cluster.url, PROJECT,
                                         "500"], stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        yield cluster, log_path
    finally:
        if trackers is not None:
            trackers.kill()
            trackers.wait(5)
        cluster.stop()


@pytest.mark.asyncio
async def test_stays_responsive_with_500_workers_connected(
        crowd: tuple[ClusterThread, Path]) -> None:
    cluster, log = crowd
    async with asyncio.timeout(90):
        app = ConsoleApp(LiveBackend(cluster.url, TOKEN, interval=0.2), project=PROJECT)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await open_view(app, pilot)
            table = screen.query_one(WorkersTable)
            try:
                await until(pilot, lambda: table.row_count == 500, "500 rows", timeout=60)
            except AssertionError:
                shown = len(app.status.projects[0].workers) if app.status else None
                raise AssertionError(f"{table.row_count} rows, {shown} workers in the last "
                                     f"snapshot; trackers said: {log.read_text()[-2000:]}"
                                     ) from None
            # Snapshots keep coming five times a second; the app redraws at most twice a
            # second from the newest, and a key press is handled at once.
            received, applied = app.snapshots_received, app.snapshots_applied
            await pilot.pause(2.0)
            assert app.snapshots_received - received >= 5
            assert app.snapshots_applied - applied <= 5
            # A key takes effect at once: the time from the key press until the panel is
            # switched (not until Pilot returns, which also waits for the tabs' animation).
            # The master and the 500 trackers share this box, and the master this process.
            delays = []
            for key, panel in (("4", "events"), ("1", "workers"), ("2", "curves"),
                               ("1", "workers")):
                shown = screen.query_one(f"#panel-{panel}")
                delays.append(await reaction_time(pilot, key,
                                                  lambda shown=shown: shown.has_class("-active")))
            print("panel switch with 500 workers:", [f"{d * 1000:.0f} ms" for d in delays])
            assert sorted(delays)[len(delays) // 2] < 0.3, delays
            assert table.row_count == 500


@pytest.mark.asyncio
async def test_a_project_starts_from_the_masters_model_zoo(live: Live) -> None:
    from textual.widgets import Select

    from mlitb.closure import Zoo, closure_from_project, save_closure

    async with asyncio.timeout(DEADLINE):
        source = live.project()
        file = live.tmp / "zoo-source.closure.json"
        live.cluster.call(lambda: save_closure(closure_from_project(source), file))
        zoo = Zoo(live.tmp / "zoo")
        zoo.add(file, name="from-zoo")
        live.cluster.call(lambda: setattr(live.master, "zoo", zoo))
        app = live.app(project=None)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.status is not None, "a status")
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, CreateProjectDialog), "dialog")
            dialog = app.screen
            select = dialog.query_one("#zoo", Select)
            await until(pilot, lambda: select.prompt == "none: use the model file",
                        "the zoo's entries")
            select.value = "from-zoo"
            dialog.query_one("#field-name", FormField).value = "zoo-run"
            await pilot.press("enter")
            await until(pilot, lambda: live.project("zoo-run") is not None, "created from zoo")
            assert live.project("zoo-run").net.num_params == source.net.num_params


@pytest.mark.asyncio
async def test_an_upload_with_no_data_server_says_so_then_goes_to_one_that_registers(
        tmp_path: Path) -> None:
    """A master without a data server of its own (``--no-data-server``): the console's upload
    says none is announced (not "not connected"), and once a ``mlitb data-server`` registers
    the master tells the console, whose next upload goes there."""
    from helpers.procs import digits_zips, start_data_server

    from mlitb.dataserver import DataClient

    cluster = ClusterThread(None, data_url=None).start()
    data = None
    try:
        cluster.call(lambda: cluster.master.create_project(PROJECT, DIGITS_SPEC,
                                                           iteration_time=1.0))
        (archive,), _ = digits_zips(tmp_path)
        async with asyncio.timeout(DEADLINE):
            app = ConsoleApp(LiveBackend(cluster.url, TOKEN), refresh_interval=0)
            async with app.run_test(size=(100, 30)) as pilot:
                await until(pilot, lambda: app.status is not None, "a status")
                assert app.link is not None and app.link.data_url is None
                await pilot.press("u")
                await until(pilot, lambda: isinstance(app.screen, UploadDialog), "dialog")
                dialog = app.screen
                assert isinstance(dialog, UploadDialog)
                dialog.query_one("#field-archive", FormField).value = str(archive)
                await pilot.press("enter")
                status = dialog.query_one("#upload-status")
                await until(pilot, lambda: "no data server" in str(status.render()),
                            "the refusal")
                assert "mlitb data-server --master" in str(status.render())
                data, data_url = await asyncio.to_thread(
                    start_data_server, cluster.url, TOKEN, tmp_path / "data-server")
                await until(pilot, lambda: app.link is not None
                            and app.link.data_url == data_url, "the data server announced")
                await pilot.press("enter")
                await until(pilot, lambda: dialog.result is not None, "the upload", 30)
                assert dialog.result is not None and dialog.result["count"] > 1000
                info = await asyncio.to_thread(DataClient(data_url).info, PROJECT)
                assert info["count"] == dialog.result["count"]
    finally:
        if data is not None:
            data.stop()
        cluster.stop()
