"""The operator view (Design tab, mlitb/browser/design.js) in headless Chromium against a real master
and data server: the operator token typed once (a wrong one refused), a network designed layer
by layer with the engine's shapes, parameter counts and refusals, a project created from it, a
zip uploaded through the page (bytes, then the server's decoding stage), a real Python node
(``mlitb node join``) training it and the page's curve; pause/resume, live changes, removing a
worker and deleting the project, with the master's refusals shown next to the field.

Needs Playwright and Chromium like tests/test_browser_client.py (skips and says why without
them); the CIFAR-10 test takes the shared zip from a set-up fixture and skips without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_browser_client import (  # noqa: F401 (open_page: a fixture of the client tests)
    Page,
    open_page,
    page_url,
    wait_until,
)

from mlitb.dataserver import write_archive
from mlitb.datasets import CIFAR10_FAST_SPEC, CIFAR10_SPEC, DIGITS_SPEC, digits
from mlitb.errors import ModelFormatError, OptimizerError
from mlitb.nn import Net
from mlitb.optim import make_optimizer
from mlitb.protocol import Training
from mlitb.recipes import cifar10_recipe, digits_recipe

LOSS_BLUE = (0x24, 0x56, 0xa6)  # the training-loss series' colour in app.js


# -- helpers --------------------------------------------------------------------------------------
def design_view(page: Page, token: str) -> None:
    """Open the Design tab and sign in with ``token`` (the right one: the views appear)."""
    page.show("design")
    page.page.fill("#op-token", token)
    page.page.click("#op-login button[type=submit]")
    page.page.wait_for_selector("#op-views:not([hidden])")


def rows(page: Page) -> list[dict[str, Any]]:
    return page.page.evaluate("() => window.mlitb.design.rows")  # type: ignore[no-any-return]


def layer(page: Page, index: int) -> Any:
    return page.page.locator(f"#layers tr.layer[data-index='{index}']")


def layer_error(page: Page, index: int) -> str:
    el = page.page.locator(f"#layers tr.layer-error[data-index='{index}']")
    return "" if el.is_hidden() else el.inner_text().strip()


def add_layer(page: Page, kind: str) -> None:
    page.page.select_option("#add-type", kind)
    page.page.click("#add-layer")


def set_field(page: Page, index: int, key: str, value: str) -> None:
    field = layer(page, index).locator(f"[data-key={key}]")
    if field.evaluate("el => el.tagName") == "SELECT":
        field.select_option(value)
    else:
        field.fill(value)


def python_error(spec: list[dict[str, Any]]) -> str:
    """What the numpy engine says about ``spec``."""
    try:
        Net(spec)
    except ModelFormatError as error:
        return str(error)
    raise AssertionError(f"the numpy engine took {spec}")


def optimizer_error(name: str, **hyperparameters: float) -> str:
    """What mlitb/optim.py says about these hyperparameters."""
    try:
        make_optimizer(name, 1, **hyperparameters)
    except OptimizerError as error:
        return str(error)
    raise AssertionError(f"{name} took {hyperparameters}")


def curve_pixels(page: Page, canvas: str, colour: tuple[int, int, int]) -> int:
    """How many pixels of ``canvas`` are drawn in ``colour``: a curve is there, not just axes."""
    return int(page.page.evaluate("""([selector, [r, g, b]]) => {
        const c = document.querySelector(selector), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (Math.abs(d[i] - r) < 12 && Math.abs(d[i + 1] - g) < 12 && Math.abs(d[i + 2] - b) < 12) n++;
        }
        return n;
    }""", [canvas, list(colour)]))


def watch_upload_stages(page: Page) -> None:
    """Record every stage #upload-status passes through (window.uploadStages) and what it said
    (window.uploadTexts)."""
    page.page.evaluate("""() => {
        window.uploadStages = [];
        window.uploadTexts = [];
        const el = document.querySelector('#upload-status');
        new MutationObserver(() => {
            const s = el.dataset.stage;
            if (s && window.uploadStages[window.uploadStages.length - 1] !== s) window.uploadStages.push(s);
            window.uploadTexts.push(el.textContent);
        }).observe(el, {attributes: true, childList: true, characterData: true, subtree: true});
    }""")


def upload(page: Page, path: Path, split: str, timeout_ms: int = 60_000) -> str:
    watch_upload_stages(page)
    page.page.set_input_files("#zip-file", str(path))
    page.page.select_option("#zip-split", split)
    page.page.click("#upload-button")
    page.page.wait_for_selector(
        "#upload-status[data-stage=done], #upload-status[data-stage=failed]", timeout=timeout_ms)
    return str(page.page.inner_text("#upload-status"))


def node(url: str, project: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mlitb", "node", "join", url, "--project",
                             project, "--workers", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def nodes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop(process)


# -- tests ----------------------------------------------------------------------------------------
def test_a_wrong_operator_token_is_refused_and_the_right_one_kept_in_the_tab_only(
        cluster_in_thread: Any, open_page: Callable[..., Page]) -> None:
    c = cluster_in_thread
    page = open_page(page_url(c))
    page.show("design")
    assert page.page.is_hidden("#op-views")
    page.page.fill("#op-token", "not-the-token")
    page.page.click("#op-login button[type=submit]")
    page.page.wait_for_selector("#op-state[data-state=refused]")
    assert "Refused" in page.page.inner_text("#op-state")
    assert page.page.is_hidden("#op-views")
    assert page.page.evaluate("() => sessionStorage.getItem('mlitb.operator')") is None
    # The right one: the views appear; the token stays in this tab's sessionStorage only.
    design_view(page, c.token)
    assert page.page.evaluate("() => sessionStorage.getItem('mlitb.operator')") == c.token
    assert c.token not in page.page.evaluate("() => JSON.stringify(localStorage) + location.href")
    # A reload signs in from sessionStorage, without typing it again.
    page.page.reload()
    page.page.wait_for_selector("body[data-ready=true]")
    page.show("design")
    page.page.wait_for_selector("#op-views:not([hidden])")
    assert page.errors == []


def test_the_presets_are_the_engines_nets_and_a_spec_goes_out_and_back_as_json(
        cluster_in_thread: Any, open_page: Callable[..., Page], tmp_path: Path) -> None:
    c = cluster_in_thread
    page = open_page(page_url(c))
    presets = page.page.evaluate(
        "async () => (await import('./lib/designer.js')).PRESETS")
    assert presets["cifar10"]["spec"] == CIFAR10_SPEC
    assert presets["cifar10-fast"]["spec"] == CIFAR10_FAST_SPEC
    assert presets["digits"]["spec"] == DIGITS_SPEC
    design_view(page, c.token)
    page.page.select_option("#preset", "cifar10-fast")
    page.page.click("#preset-load")
    assert rows(page) == CIFAR10_FAST_SPEC
    assert page.page.inner_text("#net-summary") == \
        f"{Net(CIFAR10_FAST_SPEC).num_params:,} parameters"
    page.page.select_option("#preset", "digits")
    page.page.click("#preset-load")
    assert rows(page) == DIGITS_SPEC
    # The loss row carries the fc layer desugaring puts before it: 32*10 + 10.
    assert layer(page, 4).locator(".params").inner_text() == "330"
    assert page.page.inner_text("#net-summary") == f"{Net(DIGITS_SPEC).num_params:,} parameters"
    # Reorder: the pool after the fc layer gets a 1x1 input, which the engine refuses.
    layer(page, 2).locator("button.down").click()
    moved = [DIGITS_SPEC[i] for i in (0, 1, 3, 2, 4)]
    assert rows(page) == moved
    assert layer_error(page, 3) == python_error(moved)
    layer(page, 3).locator("button.up").click()
    assert rows(page) == DIGITS_SPEC and layer_error(page, 3) == ""
    # Remove: without the pool, the fc layer sees 8x8x8 and has four times the weights.
    layer(page, 2).locator("button.remove").click()
    assert [r["type"] for r in rows(page)] == ["input", "conv", "fc", "softmax"]
    assert layer(page, 2).locator(".params").inner_text() == f"{8 * 8 * 8 * 32 + 32:,}"
    page.page.click("#preset-load")
    assert rows(page) == DIGITS_SPEC
    with page.page.expect_download() as info:
        page.page.click("#spec-export")
    exported = tmp_path / "out.json"
    info.value.save_as(exported)
    assert json.loads(exported.read_text()) == DIGITS_SPEC
    # Import: a model file's layers (what `mlitb model download` writes) replace the rows.
    model = {"format": "mlitb-model", "layers": Net(CIFAR10_SPEC).spec()}
    page.page.set_input_files("#spec-file", {"name": "model.json", "mimeType": "application/json",
                                            "buffer": json.dumps(model).encode()})
    page.page.wait_for_function("() => window.mlitb.design.rows.length > 8")
    assert rows(page) == Net(CIFAR10_SPEC).spec()
    assert page.page.inner_text("#net-summary") == "22,466 parameters"
    # A file that is not a spec is refused with a reason; the rows stay.
    page.page.set_input_files("#spec-file", {"name": "bad.json", "mimeType": "application/json",
                                            "buffer": b"{not json"})
    page.page.wait_for_selector("#spec-io[data-status=error]")
    assert "bad.json: not valid JSON" in page.page.inner_text("#spec-io")
    assert rows(page) == Net(CIFAR10_SPEC).spec()
    assert page.errors == []
    # The recipes are mlitb/recipes.py's; choosing one fills the settings, and the project gets it.
    recipes = page.page.evaluate("async () => (await import('./lib/designer.js')).RECIPES")
    python = {"cifar10-local": cifar10_recipe("local"), "cifar10-gradient": cifar10_recipe("gradient"),
              "digits-local": digits_recipe("local"), "digits-gradient": digits_recipe("gradient")}
    assert set(recipes) == set(python)
    for key, (optimizer, hyperparameters, training, iteration_time) in python.items():
        js = recipes[key]
        assert (js["optimizer"], js["hyperparameters"], js["iterationTime"]) == \
            (optimizer, hyperparameters, iteration_time), key
        assert Training(**js["training"]) == training, key
    page.page.select_option("#preset", "digits")
    page.page.click("#preset-load")
    page.page.select_option("#create-recipe", "digits-local")
    assert page.page.input_value("[data-setting='training.batch_size']") == "16"
    page.page.fill("#create-name", "recipe")
    page.page.click("#create")
    page.page.wait_for_selector("#create-result[data-status=ok]")
    optimizer, hyperparameters, training, iteration_time = digits_recipe("local")
    project = c.master.projects["recipe"]
    assert (project.optimizer_name, project.training, project.iteration_time) == \
        (optimizer, training, iteration_time)
    assert {k: project.optimizer.hyperparameters()[k] for k in hyperparameters} == hyperparameters
    # On a phone the view fits the width (the layer table scrolls inside its box).
    phone = open_page(page_url(c), width=375, height=740)
    design_view(phone, c.token)
    assert phone.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
    assert phone.errors == []


def test_design_the_cifar10_net_from_scratch_create_upload_and_a_node_trains_it(
        cluster_in_thread: Any, cifar10_test_zip: Path, open_page: Callable[..., Page],
        nodes: list[subprocess.Popen[bytes]]) -> None:
    c = cluster_in_thread
    page = open_page(page_url(c))
    design_view(page, c.token)
    page.page.click("#clear-layers")
    assert rows(page) == []
    add_layer(page, "input")  # 32x32x3 is its initial shape
    add_layer(page, "softmax")
    for kind in ("conv", "pool", "conv", "pool", "conv", "pool"):
        add_layer(page, kind)  # each goes before the loss layer
    # As one types: the shape and the parameter count of each layer.
    assert layer(page, 1).locator(".shape").inner_text() == "32×32×16"
    assert layer(page, 1).locator(".params").inner_text() == f"{5 * 5 * 3 * 16 + 16:,}"
    set_field(page, 3, "filters", "20")
    assert layer(page, 3).locator(".params").inner_text() == f"{5 * 5 * 16 * 20 + 20:,}"
    set_field(page, 5, "filters", "20")
    assert layer(page, 6).locator(".shape").inner_text() == "4×4×20"
    assert rows(page) == CIFAR10_SPEC
    assert page.page.inner_text("#net-summary") == "22,466 parameters"
    page.page.evaluate("document.querySelector('#designer').scrollIntoView()")
    page.screenshot("design")
    # Bad fields are refused inline, with the numpy engine's own words, and block creating.
    set_field(page, 3, "filters", "abc")
    bad = [dict(r) for r in CIFAR10_SPEC]
    bad[3]["filters"] = "abc"
    assert layer_error(page, 3) == python_error(bad)
    # The message counts desugared layers (a relu follows each conv): the row says which it is.
    assert layer(page, 3).locator(".desugared").inner_text() == "layers 4–5"
    assert layer(page, 3).locator("[data-key=filters]").get_attribute("aria-invalid") == "true"
    assert page.page.is_disabled("#create")
    page.page.evaluate("document.querySelector('#layers tr.layer[data-index=\"2\"]').scrollIntoView()")
    page.screenshot("design-refused")
    set_field(page, 3, "filters", "20")
    set_field(page, 1, "sx", "40")  # does not fit a 32x32 input even with pad 2
    bad = [dict(r) for r in CIFAR10_SPEC]
    bad[1]["sx"] = 40
    assert layer_error(page, 1) == python_error(bad)
    set_field(page, 1, "sx", "5")
    assert layer_error(page, 1) == "" and page.page.is_enabled("#create")
    # The project. A hyperparameter is checked as it is typed, with the master's words.
    page.page.fill("#create-name", "cifar")
    page.page.select_option("#create-optimizer", "adam")
    page.page.fill("[data-setting='hyperparameters.learning_rate']", "-1")
    note = page.page.wait_for_selector(
        "[data-error-for='hyperparameters.learning_rate']:not([hidden])")
    assert note.inner_text() == optimizer_error("adam", learning_rate=-1)
    assert page.page.is_disabled("#create")
    page.page.fill("[data-setting='hyperparameters.learning_rate']", "0.001")
    assert page.page.is_hidden("[data-error-for='hyperparameters.learning_rate']")
    # What only the master checks: its refusal shows next to the field it names.
    page.page.fill("#create-t", "45")
    page.page.click("#create")
    note = page.page.wait_for_selector("[data-error-for=iteration_time]:not([hidden])")
    assert "create_project.iteration_time: must be between" in note.inner_text()
    assert "cifar" not in c.master.statistics()
    page.page.fill("#create-t", "1")
    page.page.fill("[data-setting='hyperparameters.learning_rate']", "0.001")
    page.page.click("#create")
    page.page.wait_for_selector("#create-result[data-status=ok]")
    project = c.master.projects["cifar"]
    assert project.net.num_params == 22_466 and project.optimizer_name == "adam"
    assert project.iteration_time == 1.0
    # Upload through the page: the bytes, then the data server's decoding stage, then done.
    page.page.wait_for_selector("#operate-project:text('cifar')")
    # Chromium's upload throttled to ~8 MB/s, so the bytes take a second and show as they go.
    cdp = page.context.new_cdp_session(page.page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                  "downloadThroughput": -1,
                                                  "uploadThroughput": 8_000_000})
    text = upload(page, cifar10_test_zip, "train")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                  "downloadThroughput": -1, "uploadThroughput": -1})
    assert "stored 10,000 train images of 10 labels" in text, text
    stages = page.page.evaluate("() => window.uploadStages")
    assert stages[0] == "sending" and "decoding" in stages and stages[-1] == "done", stages
    total = f"{cifar10_test_zip.stat().st_size / 1e6:.1f}"
    sent = [t for t in page.page.evaluate("() => window.uploadTexts")
            if t.startswith("sent ") and t.endswith(f"of {total} MB")
            and not t.startswith(f"sent {total}")]
    assert sent, page.page.evaluate("() => window.uploadTexts")
    assert any("the data server is decoding and storing the images" in t
               for t in page.page.evaluate("() => window.uploadTexts"))
    wait_until(lambda: c.master.statistics()["cifar"].data.total == 10_000,
               "the ids registered", 10)
    # A real Python node trains it; the Stats view draws the training curve.
    nodes.append(node(c.url, "cifar"))
    wait_until(lambda: sum(1 for h in c.master.statistics()["cifar"].history if h.samples > 0) >= 3,
               "three iterations trained by the node", 90)
    page.page.wait_for_selector("#op-workers tr[data-worker] .badge.training")
    page.page.evaluate("document.querySelector('#create-form').scrollIntoView()")
    page.screenshot("design-run")
    page.show("stats")
    page.page.wait_for_function(
        "() => window.mlitb.status && window.mlitb.status.history.filter(p => p.samples > 0).length >= 3")
    page.page.wait_for_timeout(300)
    assert curve_pixels(page, "#loss-chart", LOSS_BLUE) > 50
    assert page.errors == []


def digits_zip(tmp_path: Path, split: str = "train", n: int = 300) -> Path:
    train, test, names = digits()
    data = train if split == "train" else test
    samples = [(names[int(y)], image[..., 0]) for image, y in
               zip(data.images[:n], data.labels[:n], strict=True)]
    return write_archive(tmp_path / f"digits-{split}.zip", samples)


def test_run_a_project_from_the_page_with_the_consoles_refusals(
        cluster_in_thread: Any, open_page: Callable[..., Page], tmp_path: Path,
        nodes: list[subprocess.Popen[bytes]]) -> None:
    c = cluster_in_thread
    page = open_page(page_url(c))
    design_view(page, c.token)
    page.page.select_option("#preset", "digits")
    page.page.click("#preset-load")
    page.page.fill("#create-name", "digits")
    page.page.fill("#create-t", "1")
    # Training settings: a bad one is refused by the master's decoder, next to its field.
    page.page.select_option("[data-setting='training.schedule']", "cosine")
    page.page.click("#create")
    note = page.page.wait_for_selector("[data-error-for='training.horizon']:not([hidden])")
    assert "needs a horizon" in note.inner_text()
    page.page.fill("[data-setting='training.horizon']", "100000")
    page.page.click("#create")
    page.page.wait_for_selector("#create-result[data-status=ok]")
    assert c.master.projects["digits"].training.schedule == "cosine"
    # A name in use: the master's project_exists, under the name.
    page.page.click("#create")
    note = page.page.wait_for_selector("[data-error-for=name]:not([hidden])")
    assert "exists already" in note.inner_text()
    page.page.wait_for_selector("#operate-project:text('digits')")
    assert "stored 300 train images" in upload(page, digits_zip(tmp_path), "train")
    assert "stored 60 test images" in upload(page, digits_zip(tmp_path, "test", 60), "test")
    wait_until(lambda: c.master.statistics()["digits"].data.test == 60, "the test ids", 10)
    nodes.append(node(c.url, "digits"))

    def stats() -> Any:
        return c.master.statistics()["digits"]

    wait_until(lambda: any(w.role == "trainer" and w.state == "training" for w in stats().workers),
               "the node training", 40)
    # Pause and resume.
    page.page.click("#op-pause[data-action=pause]")
    wait_until(lambda: stats().state == "paused", "the project paused", 10)
    page.page.click("#op-pause[data-action=resume]")
    wait_until(lambda: stats().state != "paused", "the project resumed", 10)
    # Live changes: T and a hyperparameter; a T out of range is refused with the master's words.
    page.page.fill("#live-fields [data-live=iteration_time]", "45")
    page.page.click("#live-apply")
    page.page.wait_for_selector("#live-result[data-status=error]")
    assert "iteration_time: must be between" in page.page.inner_text("#live-result")
    assert stats().iteration_time == 1.0
    page.page.fill("#live-fields [data-live=iteration_time]", "2")
    page.page.fill("#live-fields [data-live=learning_rate]", "0.02")
    page.page.click("#live-apply")
    page.page.wait_for_selector("#live-result[data-status=ok]")
    wait_until(lambda: stats().iteration_time == 2.0
               and stats().hyperparameters["learning_rate"] == pytest.approx(0.02),
               "T and the learning rate changed", 10)
    # Live training settings: the schedule and its warmup change, the rest (the horizon) stays;
    # a warmup out of range is refused with the master's words and changes nothing.
    page.page.fill("#live-fields [data-live='training.warmup']", "2")
    page.page.click("#live-apply")
    page.page.wait_for_selector("#live-result[data-status=error]")
    assert "warmup" in page.page.inner_text("#live-result")
    assert c.master.projects["digits"].training.schedule == "cosine"
    page.page.select_option("#live-fields [data-live='training.schedule']", "linear")
    page.page.fill("#live-fields [data-live='training.warmup']", "0.2")
    page.page.click("#live-apply")
    page.page.wait_for_selector("#live-result[data-status=ok]")
    wait_until(lambda: c.master.projects["digits"].training.schedule == "linear",
               "the schedule changed", 10)
    changed = c.master.projects["digits"].training
    assert changed.warmup == pytest.approx(0.2) and changed.horizon == 100000
    # Remove the node's worker: it is told so (close 4003) and leaves.
    worker = next(w.worker_id for w in stats().workers if w.role == "trainer")
    page.page.click(f"#op-workers tr[data-worker='{worker}'] button.remove-worker")
    page.page.wait_for_selector("#op-result[data-status=ok]")
    wait_until(lambda: all(w.worker_id != worker for w in stats().workers),
               "the worker removed", 10)
    # Delete: a second click confirms; the project is gone from the master and the page.
    page.page.click("#op-delete")
    assert "cifar" not in page.page.inner_text("#op-delete")
    assert "for good" in page.page.inner_text("#op-delete")
    assert "digits" in c.master.statistics()
    page.page.click("#op-delete")
    page.page.wait_for_selector("#op-result[data-status=ok]")
    wait_until(lambda: "digits" not in c.master.statistics(), "the project deleted", 10)
    assert page.errors == []



def test_create_time_labels_deterministic_mode_and_tokens(
        cluster_in_thread: Any, open_page: Callable[..., Page]) -> None:
    """Labels, deterministic mode and both tokens set at creation; the tokens the page made are
    shown once and are the ones the master checks; a bad label count is refused at its field."""
    c = cluster_in_thread
    page = open_page(page_url(c))
    design_view(page, c.token)
    page.page.select_option("#preset", "digits")
    page.page.click("#preset-load")
    page.page.fill("#create-name", "locked")
    page.page.fill("#create-labels", "a, b")
    page.page.click("#create")
    note = page.page.wait_for_selector("[data-error-for=labels]:not([hidden])")
    assert "labels" in note.inner_text()
    assert "locked" not in c.master.projects
    names = [f"d{i}" for i in range(10)]
    page.page.fill("#create-labels", ", ".join(names))
    page.page.fill("#create-samples", "200")
    page.page.check("#create-join-token")
    page.page.check("#create-contributor-token")
    page.page.click("#create")
    page.page.wait_for_selector("#create-result[data-status=ok]")
    project = c.master.projects["locked"]
    assert project.net.labels == names
    assert project.deterministic and project.samples_per_iteration == 200
    join = page.page.inner_text("#create-tokens [data-token=join]").strip()
    contribute = page.page.inner_text("#create-tokens [data-token=contributor]").strip()
    assert len(join) == len(contribute) == 24 and join != contribute
    access = c.master.access.get("locked")
    assert access.may_join(join) and not access.may_join(contribute) and not access.open
    assert access.may_contribute(contribute)
    shown = page.page.inner_text("#create-tokens")
    assert f"--project locked --token {join}" in shown and "Shown once" in shown
    assert page.errors == []


def test_a_project_starts_from_a_zoo_entry_in_the_designer(
        cluster_in_thread: Any, open_page: Callable[..., Page], tmp_path: Path) -> None:
    from mlitb.closure import Zoo, closure_from_project, save_closure
    from mlitb.training import Project

    c = cluster_in_thread
    labels = [str(k) for k in range(10)]
    net = Net(DIGITS_SPEC, seed=1, labels=labels)
    trained = Project("digits-90", net, make_optimizer("adam", net.num_params), "adam", 1.0)
    trained.iteration = trained.parameter_version = 25
    save_closure(closure_from_project(trained), tmp_path / "digits-90.closure.json")
    zoo = Zoo(tmp_path / "zoo")
    zoo.add(tmp_path / "digits-90.closure.json")
    c.master.zoo = zoo
    page = open_page(page_url(c))
    design_view(page, c.token)
    page.page.wait_for_selector("#preset option[value='zoo:digits-90']", state="attached")
    page.page.select_option("#preset", "zoo:digits-90")
    page.page.click("#preset-load")
    assert page.page.is_hidden("#layers-area")
    assert f"{net.num_params:,} parameters" in page.page.inner_text("#zoo-mode-text")
    assert page.page.input_value("#create-optimizer") == ""  # the closure's
    # Its hyperparameters are adam's, checked as typed.
    page.page.fill("[data-setting='hyperparameters.beta1']", "1")
    page.page.wait_for_selector("[data-error-for='hyperparameters.beta1']:not([hidden])")
    page.page.fill("[data-setting='hyperparameters.beta1']", "")
    page.page.fill("#create-name", "continued")
    page.page.click("#create")
    page.page.wait_for_selector("#create-result[data-status=ok]")
    project = c.master.projects["continued"]
    assert project.iteration == 25 and project.optimizer_name == "adam"
    assert (project.net.params == net.params).all()
    # Back to designing: the table returns with its rows.
    page.page.click("#zoo-mode-leave")
    assert page.page.is_visible("#layers-area") and len(rows(page)) == len(CIFAR10_SPEC)
    assert page.errors == []
