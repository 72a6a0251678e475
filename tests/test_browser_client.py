"""The browser client (mlitb/browser/index.html) in headless Chromium against a real master and data
server (``cluster_in_thread``: ``serve_cluster`` in a daemon thread), which also serves the page.

Each test has deadlines: every Playwright wait carries a timeout, and waits on the master poll its
statistics until a deadline. With ``MLITB_SCREENSHOTS=1`` the tests write a screenshot of each view
to docs/images/browser-*.png (otherwise nothing is written into the checkout).

Needs ``pip install playwright`` and Debian's Chromium at /usr/bin/chromium; skips and says why
without them.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from helpers.procs import free_port, wait_until

from mlitb.dataserver import DataClient, InputShape, write_archive
from mlitb.datasets import DIGITS_SPEC, digits

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
SCREENSHOTS = os.environ.get("MLITB_SCREENSHOTS") == "1"
PROJECT = "digits"
LABELS = [str(k) for k in range(10)]
WAIT_MS = 20_000


# -- fixtures ---------------------------------------------------------------------------------------
class Page:
    """A page of the client with its console errors collected."""

    def __init__(self, browser: Any, url: str, *, width: int = 1200, height: int = 860) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height},
                                           accept_downloads=True)
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready=true]")

    def show(self, view: str) -> None:
        self.page.click(f".tabs a[data-view={view}]")
        self.page.wait_for_selector(f"#view-{view}:not([hidden])")

    def screenshot(self, name: str) -> None:
        """docs/images/browser-NAME.png, in 256 colours (a third of the bytes)."""
        if SCREENSHOTS:
            from PIL import Image

            IMAGES.mkdir(parents=True, exist_ok=True)
            image = Image.open(io.BytesIO(self.page.screenshot())).convert("RGB")
            image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
                IMAGES / f"browser-{name}.png", optimize=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Page]]:
    pages: list[Page] = []

    def make(url: str, **kwargs: Any) -> Page:
        page = Page(browser, url, **kwargs)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.close()


def create_project(c: Any, name: str = PROJECT, *, iteration_time: float = 1.0,
                   optimizer: str | None = None, hyperparameters: dict[str, float] | None = None,
                   training: Any = None) -> None:
    """``create_project`` through the operator protocol; ``training``: an
    ``mlitb.protocol.Training`` (None: the paper's gradient algorithm)."""
    from mlitb.client import open_operator
    from mlitb.protocol import CreateProject

    async def main() -> None:
        with trio.fail_after(10):
            async with open_operator(c.url, c.token, need_token=True) as op:
                await op.request(CreateProject(
                    request_id="-", name=name, spec=tuple(DIGITS_SPEC),  # type: ignore[arg-type]
                    iteration_time=iteration_time, labels=tuple(LABELS), optimizer=optimizer,
                    hyperparameters=hyperparameters or {"learning_rate": 0.05},
                    training=training))

    trio.run(main)


def upload_digits(c: Any, tmp_path: Path, *, train: int = 600, test: int = 120) -> None:
    train_split, test_split, names = digits()
    client = DataClient(c.data_url, token=c.token)
    for split, data, n in (("train", train_split, train), ("test", test_split, test)):
        samples = [(names[int(y)], image[..., 0])
                   for image, y in zip(data.images[:n], data.labels[:n], strict=True)]
        archive = write_archive(tmp_path / f"{split}.zip", samples)
        client.upload(PROJECT, archive, split=split,
                      shape=InputShape(width=8, height=8, channels=1))


def digit_png(index: int = 0, size: int = 64) -> bytes:
    """A test digit as a PNG, larger than the project's 8x8 (the page scales it down)."""
    from PIL import Image

    _, test_split, _ = digits()
    image = Image.fromarray(test_split.images[index, :, :, 0]).resize((size, size))
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG")
    return out.getvalue()


def fetch_config(data_url: str) -> dict[str, Any] | None:
    """The data server's /config.json, or None while it has none (404)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{data_url}/config.json", timeout=10) as response:
            config: dict[str, Any] = json.load(response)
            return config
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def page_url(c: Any, **query: str) -> str:
    from urllib.parse import urlencode

    return f"{c.data_url}/?{urlencode({'master': c.url, **query})}"


def status(c: Any) -> Any:
    return c.master.statistics()[PROJECT]


# -- tests ----------------------------------------------------------------------------------------------
def test_page_loads_without_errors_and_lists_projects(cluster_in_thread: Any, tmp_path: Path,
                                                     open_page: Callable[..., Page]) -> None:
    c = cluster_in_thread
    create_project(c)
    upload_digits(c, tmp_path, train=200, test=40)
    # Once the cluster serves /config.json, the page finds the master without ?master=.
    config = fetch_config(c.data_url)
    if config is not None:
        assert config["master_url"] == c.url
    page = open_page(f"{c.data_url}/" if config is not None else page_url(c))
    card = page.page.wait_for_selector(f"article.project[data-project={PROJECT}]")
    text = card.inner_text()
    assert "200 train · 40 test" in text and "8×8×1" in text
    assert page.page.inner_text("#link-text") == "master connected"
    assert page.page.is_hidden("#banner")
    page.screenshot("projects")
    for view in ("train", "predict", "stats", "download", "projects"):
        page.show(view)
    assert page.errors == []
    # A phone: every view fits the screen's width (wide tables scroll inside their box).
    phone = open_page(page_url(c, project=PROJECT), width=390, height=844)
    phone.page.wait_for_selector(f"article.project[data-project={PROJECT}]")
    for view in ("projects", "train", "predict", "stats", "download"):
        phone.show(view)
        overflow = phone.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (view, overflow)
    phone.show("train")
    phone.page.click("#add-trainer")
    phone.page.wait_for_function("""() => {
        const rate = document.querySelector('article.worker[data-phase=training] .rate strong');
        return rate && rate.textContent !== '–';
    }""")
    phone.screenshot("phone")
    assert phone.errors == []


def test_browser_trainer_and_python_node_train_together(cluster_in_thread: Any, tmp_path: Path,
                                                        open_page: Callable[..., Page]) -> None:
    c = cluster_in_thread
    create_project(c)
    upload_digits(c, tmp_path)
    node = subprocess.Popen(
        [sys.executable, "-m", "mlitb", "node", "join", c.url, "--project", PROJECT,
         "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        page = open_page(page_url(c, project=PROJECT))
        page.show("train")
        page.page.click("#add-trainer")
        page.page.click("#add-stats")

        def both_train() -> bool:
            trainers = [w for w in status(c).workers if w.role == "trainer"]
            by_client = {w.client: w for w in trainers}
            return len(trainers) == 2 and set(by_client) == {"browser", "python"} and all(
                w.state == "training" and (w.samples_per_s or 0) > 0 and w.cached == w.allocated > 0
                for w in trainers)

        wait_until(both_train, "a browser trainer and a Python node training together", 40)
        first = status(c).iteration
        wait_until(lambda: status(c).iteration >= first + 2, "two more iterations", 15)
        recent = [h for h in status(c).history if h.iteration > first]
        assert recent and all(h.samples > 0 for h in recent)
        browser = next(w for w in status(c).workers if w.client == "browser" and w.role == "trainer")
        assert browser.allocated + next(w.allocated for w in status(c).workers
                                        if w.client == "python") == 600
        # The page shows its trainer's state and speed, and the master's view of both.
        card = page.page.wait_for_selector("article.worker[data-phase=training]")
        rate = card.query_selector(".rate strong").inner_text()
        assert rate not in ("–", "0.0"), rate
        page.page.wait_for_selector("#worker-table tr[data-client=python][data-state=training]")
        page.page.wait_for_selector("#worker-table tr[data-client=browser][data-state=training]")
        wait_until(lambda: len(status(c).test_error) >= 1, "a test-error point from the browser", 20)
        if SCREENSHOTS:  # a curve worth showing
            wait_until(lambda: status(c).test_error[-1].error < 0.2 or len(status(c).test_error) > 40,
                       "the test error to fall", 60)
        page.screenshot("train")
        page.show("stats")
        page.page.wait_for_function(
            "() => window.mlitb.status && window.mlitb.status.test_error.length > 0")
        page.page.wait_for_timeout(300)
        # The browser's stats worker evaluates the whole test set, and the page says so.
        assert "(all " in page.page.inner_text("#stats-summary")
        page.screenshot("stats")
        if SCREENSHOTS:  # a prediction of the trained network
            page.show("predict")
            page.page.wait_for_function("() => window.mlitb.tracker && window.mlitb.tracker.hasParams")
            page.page.set_input_files("#image-file", {"name": "digit.png", "mimeType": "image/png",
                                                     "buffer": digit_png(1)})
            page.page.wait_for_selector("#top-labels li[data-label]")
            page.screenshot("predict")
        # Removing the trainer leaves cleanly (close 1000): the master forgets it.
        page.show("train")
        page.page.click("article.worker[data-phase=training] button")
        wait_until(lambda: not any(w.client == "browser" and w.role == "trainer"
                                   for w in status(c).workers), "the browser trainer to leave", 10)
        assert page.errors == []
    finally:
        node.terminate()
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()


def test_browser_trainer_and_python_node_train_one_local_project(
        cluster_in_thread: Any, tmp_path: Path, open_page: Callable[..., Page]) -> None:
    """Local SGD across clients: the browser's Web Worker and a Python node each take Adam inner
    steps on their own share (augmented by random shifts) and return parameter deltas, which the
    master averages. Every result the master accepts is recorded here, so the test sees both
    clients' deltas arrive, not just the master's summary."""
    from mlitb.protocol import ResultKind, Training

    c = cluster_in_thread
    create_project(c, optimizer="adam", hyperparameters={"learning_rate": 0.005},
                   training=Training(algorithm="local", batch_size=16, shift=1))
    project = c.master.projects[PROJECT]
    assert project.training.algorithm == "local"
    accepted: list[tuple[int, Any, int, int]] = []  # (worker id, kind, samples, steps)
    accept = project.accept_result

    def recording(worker_id: int, frame: Any, now: float) -> str | None:
        refused = accept(worker_id, frame, now)
        if refused is None:
            accepted.append((worker_id, frame.kind, frame.samples, frame.steps))
        return refused

    project.accept_result = recording  # type: ignore[method-assign]
    upload_digits(c, tmp_path)
    node = subprocess.Popen(
        [sys.executable, "-m", "mlitb", "node", "join", c.url, "--project", PROJECT,
         "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        page = open_page(page_url(c, project=PROJECT))
        page.show("train")
        page.page.click("#add-trainer")

        def trainers() -> dict[str, Any]:
            return {w.client: w for w in status(c).workers if w.role == "trainer"}

        def both_train() -> bool:
            by_client = trainers()
            return set(by_client) == {"browser", "python"} and all(
                w.state == "training" and (w.samples_per_s or 0) > 0 and w.cached == w.allocated > 0
                for w in by_client.values())

        wait_until(both_train, "a browser trainer and a Python node training a local project", 40)
        first, version = status(c).iteration, status(c).parameter_version
        ids = {client: w.worker_id for client, w in trainers().items()}
        wait_until(lambda: status(c).iteration >= first + 6, "six more iterations", 20)
        assert status(c).parameter_version >= version + 5
        for client, worker_id in ids.items():
            mine = [r for r in list(accepted) if r[0] == worker_id and r[2] > 0]
            assert len(mine) >= 3, (client, accepted)
            assert all(kind is ResultKind.PARAMETER_DELTA and steps >= 1 and samples <= 16 * steps
                       for _, kind, samples, steps in mine), (client, mine)
        recent = [h for h in status(c).history if h.iteration > first]
        assert recent and all(h.samples > 0 for h in recent)
        history = [h.loss for h in status(c).history if h.samples > 0]
        assert len(history) >= 8
        assert sum(history[-3:]) / 3 < 0.8 * sum(history[:3]) / 3, history
        # The page says how its trainer trains.
        card = page.page.wait_for_selector("article.worker[data-phase=training]")
        page.page.wait_for_function("""() => /local steps \\(\\d/.test(
            document.querySelector('article.worker[data-phase=training] .algorithm').textContent)""")
        assert "local steps" in card.inner_text()
        assert page.errors == []
    finally:
        node.terminate()
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()


def test_prediction_on_a_chosen_image_shows_labels(cluster_in_thread: Any, tmp_path: Path,
                                                   open_page: Callable[..., Page]) -> None:
    c = cluster_in_thread
    create_project(c)
    upload_digits(c, tmp_path, train=100, test=20)
    page = open_page(page_url(c, project=PROJECT))
    page.show("predict")
    page.page.wait_for_function("() => window.mlitb.tracker && window.mlitb.tracker.hasParams")
    png = digit_png()
    page.page.set_input_files("#image-file", {"name": "digit.png", "mimeType": "image/png",
                                             "buffer": png})
    page.page.wait_for_selector("#top-labels li[data-label]")
    rows = page.page.query_selector_all("#top-labels li[data-label]")
    assert len(rows) == 5
    labels = [r.get_attribute("data-label") for r in rows]
    assert set(labels) <= set(LABELS)
    shown = [float(r.query_selector(".p").inner_text().rstrip("%")) for r in rows]
    assert shown == sorted(shown, reverse=True) and 0 < shown[0] <= 100
    # The page's input is exactly the data server's conversion of the same file; its prediction
    # equals the numpy engine's with the same parameters.
    from mlitb.dataserver import decode_image
    from mlitb.nn import Net

    expected = decode_image(png, "x", InputShape(width=8, height=8, channels=1)).images[0]
    seen = page.page.evaluate("""() => {
        const c = document.querySelector('#converted');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return Array.from({length: c.width * c.height}, (_, i) => d[4 * i]);
    }""")
    assert seen == expected.reshape(-1).tolist()
    tracker_params = np.array(page.page.evaluate("Array.from(window.mlitb.tracker.net.params)"),
                              dtype=np.float32)
    net = Net(DIGITS_SPEC, params=tracker_params)
    probs = net.predict(np.array(seen, np.float32).reshape(1, 1, 8, 8) / 255 - 0.5)[0]
    assert LABELS[int(np.argmax(probs))] == labels[0]
    assert abs(float(probs.max()) * 100 - shown[0]) < 0.1
    # A camera frame (Chromium's fake camera) goes the same way.
    page.page.click("#camera-start")
    page.page.wait_for_selector("#camera-snap:not([hidden])")
    page.page.wait_for_function("() => document.querySelector('#camera').videoWidth > 0")
    page.page.click("#camera-snap")
    page.page.wait_for_function("() => window.mlitb.image && window.mlitb.image.name.startsWith('camera-')")
    page.page.wait_for_selector("#top-labels li[data-label]")
    page.page.set_input_files("#image-file", {"name": "digit.png", "mimeType": "image/png",
                                             "buffer": png})
    page.page.click("#camera-start")  # stop it
    page.page.wait_for_function("() => window.mlitb.image.name === 'digit.png'")
    assert page.errors == []


def test_teaching_a_new_label_grows_the_output_layer(cluster_in_thread: Any, tmp_path: Path,
                                                     open_page: Callable[..., Page]) -> None:
    c = cluster_in_thread
    create_project(c)
    upload_digits(c, tmp_path, train=100, test=20)
    project = c.master.projects[PROJECT]
    before = project.net.num_params
    page = open_page(page_url(c, project=PROJECT))
    page.show("predict")
    page.page.wait_for_function("() => window.mlitb.tracker && window.mlitb.tracker.hasParams")
    page.page.set_input_files("#image-file", {"name": "smiley.png", "mimeType": "image/png",
                                             "buffer": digit_png(3)})
    page.page.wait_for_selector("#top-labels li[data-label]")
    page.page.fill("#teach-label", "smiley")
    # Teaching needs a credential: without one the page says so and sends nothing.
    page.page.click("#teach-button")
    page.page.wait_for_selector("#teach-result[data-status='needs-token']")
    page.page.fill("#upload-token", c.token)  # the operator token, kept in sessionStorage only
    page.page.click("#teach-button")
    page.page.wait_for_selector("#teach-result[data-status='201']")
    assert "new label" in page.page.inner_text("#teach-result")
    assert page.page.evaluate("sessionStorage.getItem('mlitb.operator')") == c.token
    assert c.token not in page.page.evaluate("location.href + JSON.stringify(localStorage)")
    wait_until(lambda: "smiley" in project.net.labels, "the master to grow the network", 10)
    assert project.net.labels == [*LABELS, "smiley"]
    assert project.net.num_params == before + 32 + 1  # one more output: 32 weights and a bias
    assert c.store.info(PROJECT).labels[-1] == "smiley"
    assert status(c).data.total == 101
    # The page's tracker got project_changed and grew its network the same way.
    page.page.wait_for_function("() => window.mlitb.tracker.labels.includes('smiley')")
    assert page.page.evaluate("window.mlitb.tracker.net.numParams") == before + 33
    assert page.page.evaluate("window.mlitb.tracker.hasParams")
    grown = np.array(page.page.evaluate("Array.from(window.mlitb.tracker.net.params)"), np.float32)
    np.testing.assert_array_equal(grown, project.net.params)
    page.page.wait_for_selector("#top-labels li[data-label]")
    page.screenshot("teach")
    # An image that is not an image is refused with the data server's reason.
    page.page.set_input_files("#image-file", {"name": "notes.png", "mimeType": "image/png",
                                             "buffer": b"not an image"})
    page.page.wait_for_selector("#top-labels li.error")
    assert page.errors == []


def test_download_gives_a_model_mlitb_loads(cluster_in_thread: Any, tmp_path: Path,
                                            open_page: Callable[..., Page]) -> None:
    from mlitb.closure import load_closure
    from mlitb.nn import load_any, load_model

    c = cluster_in_thread
    create_project(c)
    upload_digits(c, tmp_path, train=100, test=20)
    page = open_page(page_url(c, project=PROJECT))
    page.show("download")
    saved = {}
    for fmt in ("model", "closure", "convnetjs"):
        with page.page.expect_download() as info:
            page.page.click(f"button[data-format={fmt}]")
        download = info.value
        assert download.suggested_filename == f"{PROJECT}.{fmt}.json"
        path = tmp_path / download.suggested_filename
        download.save_as(path)
        saved[fmt] = path
    net = load_model(saved["model"])
    np.testing.assert_array_equal(net.params, c.master.projects[PROJECT].net.params)
    assert net.labels == LABELS
    assert load_any(saved["convnetjs"]).num_params == net.num_params
    closure = load_closure(saved["closure"])
    assert closure is not None
    json.loads(saved["closure"].read_text())
    page.page.wait_for_selector("#download-result:has-text('Saved')")
    page.screenshot("download")
    assert page.errors == []


def test_an_unreachable_master_is_shown_clearly(browser: Any, tmp_path: Path,
                                                open_page: Callable[..., Page]) -> None:
    from mlitb.bench.browser import serve_static

    port = free_port()  # nothing listens there
    with serve_static() as base:
        page = open_page(f"{base}/?master=ws://127.0.0.1:{port}")
        page.page.wait_for_selector("#banner:not([hidden])")
        assert "unreachable" in page.page.inner_text("#banner")
        assert f"ws://127.0.0.1:{port}" in page.page.inner_text("#banner")
        assert page.page.inner_text("#link-text") == "master unreachable"
        assert "cannot be reached" in page.page.inner_text("#projects-empty")
        page.screenshot("unreachable")
        # It keeps retrying: the retry button starts another attempt at once.
        page.page.click("#retry")
        page.page.wait_for_selector("#banner:not([hidden])")
    assert all("WebSocket" in e or "ERR_CONNECTION_REFUSED" in e for e in page.errors), page.errors


def test_the_page_finds_the_master_through_config_json(cluster_in_thread: Any,
                                                       open_page: Callable[..., Page]) -> None:
    """A data server given ``client_config`` tells the page where the master is."""
    import threading
    from functools import partial

    from mlitb.dataserver import serve_data_server

    c = cluster_in_thread
    create_project(c)
    box: dict[str, Any] = {}
    ready = threading.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            box["port"] = await nursery.start(partial(
                serve_data_server, c.store, "127.0.0.1", 0, client_config={"master_url": c.url}))
            box["stop"] = nursery.cancel_scope
            box["token"] = trio.lowlevel.current_trio_token()
            ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        page = open_page(f"http://127.0.0.1:{box['port']}/")
        page.page.wait_for_selector(f"article.project[data-project={PROJECT}]")
        assert page.page.inner_text("#master-url") == c.url
        assert page.errors == []
    finally:
        box["token"].run_sync_soon(box["stop"].cancel)
        thread.join(10)


def test_a_project_starts_from_the_masters_model_zoo(cluster_in_thread: Any, tmp_path: Path,
                                                     open_page: Callable[..., Page]) -> None:
    from mlitb.closure import Zoo, closure_from_project, save_closure
    from mlitb.datasets import DIGITS_SPEC
    from mlitb.nn import Net
    from mlitb.optim import make_optimizer
    from mlitb.training import Project

    c = cluster_in_thread
    net = Net(DIGITS_SPEC, seed=1, labels=LABELS)
    trained = Project("digits-90", net, make_optimizer("adam", net.num_params), "adam", 1.0)
    trained.iteration = trained.parameter_version = 25
    save_closure(closure_from_project(trained), tmp_path / "digits-90.closure.json")
    zoo = Zoo(tmp_path / "zoo")
    zoo.add(tmp_path / "digits-90.closure.json")
    c.master.zoo = zoo
    page = open_page(page_url(c))
    card = page.page.wait_for_selector("article.zoo-entry[data-zoo='digits-90']")
    assert "25" in card.inner_text() and "adam" in card.inner_text()
    card.query_selector("input[type=password]").fill("wrong")
    card.query_selector("button[type=submit]").click()
    page.page.wait_for_selector("#zoo-result[data-status='error']")
    assert "operator token" in page.page.inner_text("#zoo-result")
    card.query_selector("input[type=password]").fill(c.token)
    card.query_selector("button[type=submit]").click()
    page.page.wait_for_selector("#zoo-result[data-status='ok']")
    project = wait_until(lambda: c.master.projects.get("digits-90-run"), "the new project", 10)
    assert project.iteration == 25 and (project.net.params == net.params).all()
    page.page.wait_for_selector("article.project[data-project='digits-90-run']")
    page.screenshot("zoo")
    assert page.errors == []


# -- what a new user tripped on (issue 14) ----------------------------------------------------------
def test_the_projects_card_counts_each_role_not_every_connection_as_trainers(
        cluster_in_thread: Any, tmp_path: Path, open_page: Callable[..., Page]) -> None:
    c = cluster_in_thread
    create_project(c)
    upload_digits(c, tmp_path, train=100, test=20)
    page = open_page(page_url(c, project=PROJECT))
    page.show("train")
    page.page.click("#add-stats")  # a stats worker ...
    page.show("predict")  # ... and the Predict view's tracker: no trainer at all
    wait_until(lambda: sorted(w.role for w in status(c).workers) == ["stats", "tracker"],
               "a stats worker and a tracker on the master", 20)
    page.show("projects")
    page.page.wait_for_function("""() => {
        const dd = document.querySelector('article.project[data-project=digits] dd.workers');
        return dd && dd.textContent === '0 trainers · 1 stats · 1 tracker';
    }""")
    card = page.page.inner_text(f"article.project[data-project={PROJECT}]")
    assert "trainers\n" not in card  # no "trainers 2" line
    assert page.errors == []


def test_a_file_that_is_not_an_image_shows_an_error(cluster_in_thread: Any, tmp_path: Path,
                                                   open_page: Callable[..., Page]) -> None:
    c = cluster_in_thread
    create_project(c)
    upload_digits(c, tmp_path, train=100, test=20)
    page = open_page(page_url(c, project=PROJECT))
    page.show("predict")
    page.page.wait_for_function("() => window.mlitb.tracker && window.mlitb.tracker.hasParams")
    page.page.set_input_files("#image-file", {"name": "digit.png", "mimeType": "image/png",
                                             "buffer": digit_png()})
    page.page.wait_for_selector("#top-labels li[data-label]")
    page.page.set_input_files("#image-file", {"name": "notes.txt", "mimeType": "text/plain",
                                             "buffer": b"these are my notes\n"})
    error = page.page.wait_for_selector("#image-error:not([hidden])")
    assert error.inner_text().startswith("notes.txt is not an image (its type is text/plain)")
    assert page.page.query_selector("#top-labels li[data-label]") is None
    assert page.page.evaluate("window.mlitb.image") is None  # nothing left to predict
    # A text file named like an image: the browser cannot decode it, and says so.
    page.page.set_input_files("#image-file", {"name": "fake.png", "mimeType": "image/png",
                                             "buffer": b"not a png at all"})
    page.page.wait_for_function("""() => document.querySelector('#image-error').textContent
        .startsWith('fake.png is not an image this browser can decode')""")
    assert page.page.is_visible("#image-error")
    # A real image again clears the error.
    page.page.set_input_files("#image-file", {"name": "digit.png", "mimeType": "image/png",
                                             "buffer": digit_png()})
    page.page.wait_for_selector("#top-labels li[data-label]")
    assert page.page.is_hidden("#image-error")


def test_a_phone_shows_every_tab_and_the_workers_state_and_speed(
        cluster_in_thread: Any, tmp_path: Path, open_page: Callable[..., Page]) -> None:
    c = cluster_in_thread
    create_project(c)
    upload_digits(c, tmp_path, train=200, test=20)
    phone = open_page(page_url(c, project=PROJECT), width=375, height=740)
    phone.show("train")
    tabs = phone.page.evaluate("""() => [...document.querySelectorAll('.tabs a')].map((a) => {
        const r = a.getBoundingClientRect();
        return [a.textContent, r.left, r.right];
    })""")
    assert [t[0] for t in tabs] == ["Projects", "Train", "Predict", "Stats", "Download", "Design"]
    assert all(left >= 0 and right <= 375 for _, left, right in tabs), tabs
    assert phone.page.evaluate(
        "(() => { const t = document.querySelector('.tabs'); "
        "return t.scrollWidth - t.clientWidth; })()") <= 0  # nothing scrolled out of sight
    phone.page.click("#add-trainer")
    row = "#worker-table tr[data-client=browser][data-state=training]"
    phone.page.wait_for_selector(row)
    phone.page.wait_for_function(f"""() => {{
        const rate = document.querySelector('{row} td.rate');
        return rate && rate.textContent !== '–';
    }}""")
    seen = phone.page.evaluate(f"""() => {{
        const wrap = document.querySelector('#view-train .table-wrap').getBoundingClientRect();
        const cell = (sel) => document.querySelector('{row} ' + sel).getBoundingClientRect();
        const inside = (r) => r.width > 0 && r.left >= wrap.left && r.right <= wrap.right;
        return {{state: inside(cell('td.state')), rate: inside(cell('td.rate')),
                 overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth}};
    }}""")
    assert seen == {"state": True, "rate": True, "overflow": 0}, seen
    phone.screenshot("phone")
    assert phone.errors == []


def test_the_train_view_shows_what_this_browser_gave_and_the_accuracy(
        cluster_in_thread: Any, tmp_path: Path, open_page: Callable[..., Page]) -> None:
    c = cluster_in_thread
    create_project(c)
    upload_digits(c, tmp_path, train=300, test=40)
    page = open_page(page_url(c, project=PROJECT))
    page.show("train")
    page.page.click("#add-trainer")
    wait_until(lambda: any(h.samples > 0 for h in status(c).history),
               "an iteration with the browser's samples", 30)

    def stat(key: str) -> str:
        return str(page.page.inner_text(f"#contribution [data-stat={key}] strong"))

    # The only trainer: it gave every sample of the iteration the master reduced last.
    page.page.wait_for_function("""() => {
        const s = document.querySelector('#contribution [data-stat=share] strong');
        return s && s.textContent === '100.0%';
    }""")
    given = int(stat("given").split()[0].replace(",", ""))
    assert given > 0 and int(stat("results").replace(",", "")) > 0
    assert stat("accuracy").endswith("%") and stat("iteration") != "–"
    card = page.page.wait_for_selector("article.worker[data-phase=training]")
    page.page.wait_for_function("""() => {
        const share = document.querySelector('article.worker dd.share');
        return share && share.textContent.startsWith('100.0% of iteration');
    }""")
    assert int(card.query_selector("dd.given").inner_text().replace(",", "")) > 0
    assert "right, iteration" in card.query_selector("dd.last").inner_text()
    # What the page shows matches the master's history: its samples are the browser's.
    history = status(c).history
    assert sum(h.samples for h in history) >= 1
    page.screenshot("train-contribution")
    assert page.errors == []
