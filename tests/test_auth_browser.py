"""Issue 11 in real Chromium: the page over https:// (the master over wss://, a CA made by the
test) with a browser trainer; a join link (``?join=TOKEN``) read once into sessionStorage and
removed from the address bar, trainers refused without it; a contributor link's teach."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import trio
from test_browser_client import (
    LABELS,
    PROJECT,
    WAIT_MS,
    Page,
    digit_png,
    upload_digits,
    wait_until,
)

from mlitb.datasets import DIGITS_SPEC

OPERATOR = "browser-operator-token"
JOIN = "browser-join-token-1"
CONTRIBUTE = "browser-contributor-token-1"


@dataclass
class Cluster:
    master: Any
    url: str
    data_url: str
    token: str


@contextmanager
def run_cluster(tmp_path: Path, **options: Any) -> Iterator[Cluster]:
    from mlitb.cluster import open_store, serve_cluster
    from mlitb.master import Master

    master = Master(operator_token=OPERATOR)
    store = open_store(tmp_path / "data")
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            box["address"] = await nursery.start(lambda task_status: serve_cluster(
                master, store, "127.0.0.1", 0, 0, task_status=task_status, **options))
            box["trio"] = trio.lowlevel.current_trio_token()
            box["stop"] = nursery.cancel_scope
            ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10), "the cluster did not start"
    address = box["address"]
    c = Cluster(master, address.master_url, address.data_url, OPERATOR)

    def create() -> None:
        master.create_project(PROJECT, DIGITS_SPEC, iteration_time=1.0, labels=LABELS,
                              hyperparameters={"learning_rate": 0.05})

    trio.from_thread.run_sync(create, trio_token=box["trio"])
    box["run"] = lambda fn: trio.from_thread.run_sync(fn, trio_token=box["trio"])
    c.run = box["run"]  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        box["trio"].run_sync_soon(box["stop"].cancel)
        thread.join(10)


class TlsPage(Page):
    """A page in a context that trusts the test's self-signed certificate."""

    def __init__(self, browser: Any, url: str) -> None:  # noqa: D107 (as Page, plus the flag)
        self.context = browser.new_context(viewport={"width": 1200, "height": 860},
                                           ignore_https_errors=True)
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready=true]")


def trainers(c: Cluster) -> list[Any]:
    return [w for w in c.master.statistics()[PROJECT].workers if w.role == "trainer"]


def test_the_page_over_https_trains_over_wss(browser: Any, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    trustme = pytest.importorskip("trustme", reason="needs the trustme package (test extras)")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    monkeypatch.setenv("MLITB_CAFILE", str(cafile))  # the test's uploads trust the CA
    with run_cluster(tmp_path, certfile=str(certfile), keyfile=str(keyfile)) as c:
        assert c.url.startswith("wss://") and c.data_url.startswith("https://")
        upload_digits(c, tmp_path, train=300, test=60)
        # No ?master=: the page reads config.json over https and so finds the wss:// master.
        page = TlsPage(browser, f"{c.data_url}/?{urlencode({'project': PROJECT})}")
        try:
            assert page.page.evaluate("location.protocol") == "https:"
            assert page.page.evaluate("window.mlitb.link.url").startswith("wss://")
            page.show("train")
            page.page.click("#add-trainer")
            wait_until(lambda: any(w.client == "browser" and w.state == "training"
                                   and (w.samples_per_s or 0) > 0 for w in trainers(c)),
                       "a browser trainer training over wss://", 60)
            assert page.errors == []
        finally:
            page.close()


def test_a_join_link_is_read_once_and_lets_the_tab_train(browser: Any,
                                                          tmp_path: Path) -> None:
    with run_cluster(tmp_path) as c:
        c.run(lambda: c.master.set_access(PROJECT, join_token=JOIN,  # type: ignore[attr-defined]
                                          contributor_token=CONTRIBUTE))
        upload_digits(c, tmp_path, train=300, test=60)
        base = f"{c.data_url}/?{urlencode({'master': c.url, 'project': PROJECT})}"
        # Without the join link: the trainer is refused with the reason, and stops.
        page = Page(browser, base)
        try:
            page.show("train")
            page.page.click("#add-trainer")
            card = page.page.wait_for_selector("article.worker[data-phase=stopped]")
            assert "join token" in card.inner_text()
            assert not trainers(c)
        finally:
            page.close()
        # With it: read once, gone from the address bar, kept in this tab's sessionStorage.
        page = Page(browser, f"{base}&join={JOIN}&contribute={CONTRIBUTE}#train")
        try:
            href = page.page.evaluate("location.href")
            assert JOIN not in href and CONTRIBUTE not in href and f"project={PROJECT}" in href
            assert JOIN in page.page.evaluate("sessionStorage.getItem('mlitb.join')")
            assert JOIN not in page.page.evaluate("JSON.stringify(localStorage)")
            page.show("train")
            page.page.click("#add-trainer")
            # Its data is private to its trainers: the batches need the join token too.
            wait_until(lambda: any(w.client == "browser" and w.state == "training"
                                   and w.cached == w.allocated > 0 for w in trainers(c)),
                       "the invited tab to fetch its data and train", 60)
            # The contributor link's token lets this tab teach (no operator token typed).
            page.show("predict")
            page.page.set_input_files("#image-file", {"name": "digit.png",
                                                     "mimeType": "image/png",
                                                     "buffer": digit_png(3)})
            page.page.fill("#teach-label", "3")
            page.page.click("#teach-button")
            page.page.wait_for_selector("#teach-result[data-status='201']")
            assert page.errors == []
        finally:
            page.close()
