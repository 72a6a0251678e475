"""Pictures of every console screen (pytest-textual-snapshot), from deterministic data.

The app runs over a ``ReplayBackend`` fed with ``sample_status()`` (closed formulas, no clock),
so each screen draws the same on every run. Snapshots live in
tests/__snapshots__/test_console_snapshots/; after a deliberate change to the look, review and
accept them with ``pytest tests/test_console_snapshots.py --snapshot-update``.

The same scenarios make the screenshots in docs/operator-guide.md:
``MLITB_CONSOLE_SCREENSHOTS=docs/images pytest tests/test_console_snapshots.py -k docs``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from mlitb.console import ConsoleApp, LinkState, ReplayBackend, sample_status
from mlitb.console.dialogs._form_field import FormField

URL = "ws://lab-pc:8000"
RunBefore = Callable[[Pilot[None]], Awaitable[None]]


@dataclass
class Scenario:
    """One screen: the app to build, the terminal size, and the keys / steps that reach it."""

    name: str
    project: str | None = None
    size: tuple[int, int] = (80, 24)
    press: tuple[str, ...] = ()
    link: LinkState | None = None
    snapshots: bool = True
    run_before: RunBefore | None = field(default=None, repr=False)

    def app(self) -> ConsoleApp:
        snapshots = [sample_status()] if self.snapshots else []
        link = self.link or LinkState("connected", URL, authorized=True,
                                      data_url="http://lab-pc:8001")
        return ConsoleApp(ReplayBackend(snapshots, url=URL, link=link), project=self.project,
                          refresh_interval=0, save_directory=Path("/home/lab/models"))


async def _settle(pilot: Pilot[None]) -> None:
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


async def bad_hyperparameters(pilot: Pilot[None]) -> None:
    """The edit dialog after the master refused a learning rate, with T out of range too."""
    await _settle(pilot)
    await pilot.press("e")
    await _settle(pilot)
    screen = pilot.app.screen
    screen.query_one("#field-learning_rate", FormField).value = "-1"
    await pilot.press("enter")  # refused by the (replayed) master's optimizer
    await _settle(pilot)
    screen.query_one("#field-T", FormField).value = "45"
    await pilot.press("enter")  # refused by the console itself
    await _settle(pilot)


async def filled_create(pilot: Pilot[None]) -> None:
    """A spec the engine accepts (its layer table shows) for a name the master refuses."""
    import json
    import tempfile

    from mlitb.datasets import CIFAR10_SPEC

    await _settle(pilot)
    await pilot.press("n")
    await _settle(pilot)
    screen = pilot.app.screen
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)  # the field shows the same relative path on every machine
        try:
            Path(folder, "cifar10-spec.json").write_text(json.dumps(CIFAR10_SPEC))
            screen.query_one("#field-name", FormField).value = "cifar10"
            screen.query_one("#field-model", FormField).value = "cifar10-spec.json"
            screen.query_one("#field-learning_rate", FormField).value = "0.01"
            await pilot.pause(0.5)  # the layer table, once typing pauses
            await pilot.press("enter")  # the (replayed) master: cifar10 exists
            await _settle(pilot)
        finally:
            os.chdir(here)


async def lost_connection(pilot: Pilot[None]) -> None:
    """Data on screen, then the master goes away: the console says it reconnects by itself."""
    from mlitb.console._app_messages import LinkChanged

    await _settle(pilot)
    pilot.app.post_message(LinkChanged(LinkState(
        "lost", URL, "the master closed the connection (code 1001: shutdown)", attempt=2,
        retry_in=1.0)))
    await _settle(pilot)


SCENARIOS = [
    Scenario("projects"),
    Scenario("project-workers", project="digits"),
    Scenario("project-curves", project="digits", press=("2",)),
    Scenario("project-data", project="digits", press=("3",)),
    Scenario("project-events", project="digits", press=("4",)),
    Scenario("project-wide", project="digits", size=(160, 48)),
    Scenario("projects-wide", size=(120, 30)),
    Scenario("edit-inline-errors", project="digits", run_before=bad_hyperparameters),
    Scenario("create-project", size=(100, 36), run_before=filled_create),
    Scenario("upload", press=("u",)),
    Scenario("save-model", project="digits", press=("s",)),
    Scenario("remove-worker", project="digits", press=("down", "x")),
    Scenario("palette", project="digits", press=("ctrl+p",)),
    Scenario("lost-connection", project="digits", run_before=lost_connection),
    Scenario("wrong-token", snapshots=False, link=LinkState(
        "refused", URL, "the master refused the operator token (check --token / "
        "MLITB_OPERATOR_TOKEN)")),
    Scenario("unreachable", snapshots=False, link=LinkState(
        "unreachable", URL, "cannot reach the master at ws://lab-pc:8000: [Errno 111] Connect "
        "call failed ('10.0.0.7', 8000)", attempt=3, retry_in=2.0)),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_screen(scenario: Scenario, snap_compare: Any) -> None:
    assert snap_compare(scenario.app(), press=scenario.press, terminal_size=scenario.size,
                        run_before=scenario.run_before)


def test_snapshots_are_deterministic() -> None:
    """The same scenario twice gives the same picture (what makes the snapshots meaningful)."""
    from textual._doc import take_svg_screenshot

    scenario = SCENARIOS[1]
    pictures = [take_svg_screenshot(scenario.app(), terminal_size=scenario.size)
                for _ in range(2)]
    assert pictures[0] == pictures[1]


@pytest.mark.skipif(not os.environ.get("MLITB_CONSOLE_SCREENSHOTS"),
                    reason="set MLITB_CONSOLE_SCREENSHOTS=DIR to write the docs' screenshots")
def test_write_docs_screenshots() -> None:
    """docs/images/console-*.svg, with Textual's own ``save_screenshot``."""
    folder = Path(os.environ["MLITB_CONSOLE_SCREENSHOTS"])
    folder.mkdir(parents=True, exist_ok=True)

    async def shoot(scenario: Scenario) -> None:
        app = scenario.app()
        async with app.run_test(size=scenario.size) as pilot:
            if scenario.run_before is not None:
                await scenario.run_before(pilot)
            await _settle(pilot)
            await pilot.press(*scenario.press)
            await _settle(pilot)
            app.save_screenshot(f"console-{scenario.name}.svg", str(folder))

    for scenario in SCENARIOS:
        asyncio.run(shoot(scenario))

