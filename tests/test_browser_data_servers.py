"""A browser trainer and several data servers: it takes the data servers the master announces
(``welcome.data_urls``), follows the ``data_servers`` updates, and moves to the next one when
the one it uses goes away. Real processes (``mlitb master --no-data-server``, two
``mlitb data-server`` on one Redis), headless Chromium; skips with its reason without
Playwright, Chromium or redis-server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from helpers.procs import (
    Proc,
    digits_zips,
    operator_call,
    project_status,
    start_data_server,
    start_master,
    wait_until,
)
from test_browser_client import (  # noqa: F401 (open_page: a fixture of the client tests)
    Page,
    open_page,
)

from mlitb.dataserver import DataClient
from mlitb.datasets import DIGITS_SPEC
from mlitb.protocol import CreateProject

TOKEN = "browser-data-servers-token"


def trainer_data_url(page: Page) -> str | None:
    return page.page.evaluate(  # type: ignore[no-any-return]
        "() => { const w = window.mlitb.pool.list()[0]; return w && w.status.dataUrl || null; }")


def trainer_logs(page: Page) -> str:
    return page.page.evaluate(  # type: ignore[no-any-return]
        "() => window.mlitb.pool.list().flatMap(w => w.logs.map(l => `${l.level} ${l.text}`))"
        ".join('\\n')")


def test_a_browser_trainer_moves_to_the_data_server_that_stays(
        tmp_path: Path, redis_url: str, open_page: Callable[..., Page]) -> None:
    master, url = start_master(tmp_path / "master", TOKEN, "--no-data-server")
    procs: tuple[Proc, ...] = (master,)
    try:
        operator_call(url, TOKEN, lambda op: op.request(CreateProject(
            request_id="-", name="digits", spec=tuple(DIGITS_SPEC), iteration_time=0.5)))
        servers = {}
        for name in ("a", "b"):
            proc, data_url = start_data_server(url, TOKEN, tmp_path / name, "--store", redis_url)
            procs += (proc,)
            servers[data_url] = proc
        (first_zip, second_zip), _ = digits_zips(tmp_path, parts=2)
        first = DataClient(next(iter(servers)), token=TOKEN).upload("digits", first_zip)
        # The page comes from one data server; its trainer uses the one the master announces.
        page_server = next(iter(servers))
        page = open_page(f"{page_server}/?{urlencode({'master': url, 'project': 'digits'})}")
        page.show("train")
        page.page.click("#add-trainer")

        def trainer() -> Any:
            workers = [w for w in project_status(url, TOKEN, "digits").workers
                       if w.role == "trainer" and w.client == "browser"]
            return workers[0] if workers else None

        wait_until(lambda: (w := trainer()) is not None and w.cached == first["count"],
                   "the browser trainer to cache the first upload", 60, procs)
        used = wait_until(lambda: trainer_data_url(page), "the trainer's data server", 10, procs)
        in_use = next(u for u in servers if u.rstrip("/") == used.rstrip("/"))
        other = next(u for u in servers if u != in_use)
        # The data server it uses goes away: the master announces the other one alone, the
        # trainer follows, and data uploaded through the other reaches it.
        servers[in_use].stop()
        wait_until(lambda: (trainer_data_url(page) or "").rstrip("/") == other.rstrip("/"),
                   "the trainer to move to the data server that stays", 30, procs)
        second = DataClient(other, token=TOKEN).upload("digits", second_zip)
        total = first["count"] + second["count"]
        try:
            wait_until(lambda: (w := trainer()) is not None and w.cached == total,
                       "the second upload cached from the other data server", 60, procs)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- the trainer ({trainer()}):\n"
                                 f"{trainer_logs(page)}") from None
        before = project_status(url, TOKEN, "digits").iteration
        wait_until(lambda: project_status(url, TOKEN, "digits").iteration > before + 2,
                   "training to go on", 30, procs)
        errors = [e for e in page.errors if "Failed to load resource" not in e
                  and "ERR_CONNECTION_REFUSED" not in e]
        assert errors == []
    finally:
        for proc in reversed(procs):
            proc.stop()
