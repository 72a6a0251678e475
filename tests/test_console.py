"""The operator console without a master: its pure parts, and the app driven by Pilot over a
``ReplayBackend`` (recorded status snapshots, requests answered like a master would).

Live tests against a real master and real nodes are in test_console_live.py; pictures of every
screen in test_console_snapshots.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import typer
from textual.pilot import Pilot
from typer.testing import CliRunner

from mlitb.client import MasterUnreachableError, RequestRefusedError
from mlitb.console import ConsoleApp, LinkState, ReplayBackend, sample_status
from mlitb.console._app_messages import StatusReceived
from mlitb.console._bridge import TrioGuest
from mlitb.console._display import describe_error, hyperparameter_line, number, seconds
from mlitb.console._event_store import EventStore
from mlitb.console._sample import sample_project
from mlitb.console.dialogs._create import CreateProjectDialog
from mlitb.console.dialogs._form_field import FormField
from mlitb.console.dialogs._hyperparameters import HyperparametersDialog
from mlitb.console.dialogs._save import SaveModelDialog
from mlitb.console.dialogs._upload import UploadDialog
from mlitb.console.dialogs._validate import (
    field_of,
    parse_iteration_time,
    parse_number,
    read_model_file,
)
from mlitb.console.screens._project import ProjectScreen
from mlitb.console.screens._projects import ProjectsScreen
from mlitb.console.widgets._link_bar import LinkBar, describe_link
from mlitb.console.widgets._metric_plot import MetricPlot
from mlitb.console.widgets._workers_table import WorkersTable
from mlitb.datasets import DIGITS_SPEC
from mlitb.protocol import CreateProject, Event, Pause, SetHyperparameters, Status

DEADLINE = 30.0


async def until(pilot: Pilot[None], condition: Callable[[], object], what: str,
                timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def text_of(screen: object, selector: str) -> str:
    """What a Static shows, as plain text (its content may be markup or a rich Table)."""
    import io

    from rich.console import Console
    from rich.text import Text

    content = screen.query_one(selector).content  # type: ignore[attr-defined]
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(Text.from_markup(content) if isinstance(content, str) else content)
    return console.export_text()


async def open_create_dialog(pilot: Pilot[None], app: ConsoleApp
                             ) -> tuple[CreateProjectDialog, Callable[[str], FormField]]:
    """Press n; the dialog and a lookup of its fields by key."""
    await pilot.pause()
    await pilot.press("n")
    await until(pilot, lambda: isinstance(app.screen, CreateProjectDialog), "dialog")
    dialog = app.screen
    assert isinstance(dialog, CreateProjectDialog)
    return dialog, lambda key: dialog.query_one(f"#field-{key}", FormField)


def replay_app(**kwargs: object) -> tuple[ConsoleApp, ReplayBackend]:
    backend = ReplayBackend([sample_status()])
    return ConsoleApp(backend, refresh_interval=0, **kwargs), backend  # type: ignore[arg-type]


# -- pure parts -----------------------------------------------------------------------------------
def test_parse_number_keeps_integers_and_refuses_junk() -> None:
    assert parse_number("5") == 5 and isinstance(parse_number("5"), int)
    assert parse_number("1e-3") == 0.001
    for bad, message in (("", "enter a number"), ("abc", "not a number"), ("inf", "finite")):
        with pytest.raises(ValueError, match=message):
            parse_number(bad)


def test_iteration_time_bounds() -> None:
    assert parse_iteration_time("1.5") == 1.5
    with pytest.raises(ValueError, match="between 0.25 and 30"):
        parse_iteration_time("45")


def test_read_model_file_takes_specs_model_files_and_closures(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(DIGITS_SPEC))
    assert read_model_file(str(spec)) == (DIGITS_SPEC, None)
    model = tmp_path / "model.json"
    model.write_text(json.dumps({"format": "mlitb-model", "layers": DIGITS_SPEC}))
    assert read_model_file(str(model))[0] == DIGITS_SPEC
    closure = tmp_path / "closure.json"
    closure.write_text(json.dumps({"format": "mlitb-closure", "version": 1}))
    assert read_model_file(str(closure)) == (None, {"format": "mlitb-closure", "version": 1})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_model_file(str(bad))
    with pytest.raises(ValueError, match="cannot read"):
        read_model_file(str(tmp_path / "missing.json"))


def test_field_of_maps_master_messages_to_fields() -> None:
    fields = ["T", "learning_rate"]
    assert field_of("learning_rate: must be finite and in [0, inf), got -1.0", fields) \
        == "learning_rate"
    assert field_of("set_hyperparameters.iteration_time: must be in [1, 30]", fields) == "T"
    assert field_of("something else entirely", fields) is None


def test_formatting() -> None:
    assert number(0.0001) == "0.0001" and number(None) == "-" and number(1e-8) == "1e-08"
    assert seconds(2.0) == "2 s" and seconds(0.004) == "4 ms"
    line = hyperparameter_line(sample_project())
    assert line.startswith("lr=0.01") and "l2_decay=0.0001" in line and "eps" not in line
    assert "operator token" in describe_error(RequestRefusedError("forbidden", "pause: no"))


def test_the_console_reconnects_with_the_clients_backoff() -> None:
    """One reconnect policy for every client (mlitb/_backoff.py): the console's from 0.5 s to
    at most 8 s, jittered to [delay/2, delay]."""
    import random

    from mlitb._backoff import Backoff
    from mlitb.console._link import BACKOFF_FIRST, BACKOFF_MAX

    backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX, random.Random(0))
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    delays = [backoff.next() for _ in ceilings]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays


def test_link_texts_say_what_happens_next() -> None:
    url = "ws://lab:8000"
    assert "read-only" in describe_link(LinkState("connected", url)).plain
    lost = describe_link(LinkState("lost", url, "the master closed", attempt=2, retry_in=1.0))
    assert "reconnecting by itself" in lost.plain and "1 s" in lost.plain
    refused = describe_link(LinkState("refused", url, "the master refused the operator token"))
    assert "not retrying" in refused.plain


def test_event_store_numbers_and_filters() -> None:
    store = EventStore(maxlen=3)
    events = [Event(time=float(k), kind="data", message=f"e{k}", project=p)
              for k, p in enumerate(["a", "b", None, "a"])]
    store.extend(events)
    assert store.last == 4 and len(store) == 3
    assert [e.message for e in store.since(0, "a")] == ["e2", "e3"]
    assert [e.message for e in store.since(3)] == ["e3"]
    # After a reconnect the master repeats the events it holds: they are not stored twice.
    assert store.extend(events[1:]) == 0 and store.last == 4
    assert store.extend([replace(events[0], time=9.0)]) == 1


# -- the trio bridge ----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_trio_guest_runs_tasks_and_stops_cleanly() -> None:
    import trio

    async with asyncio.timeout(DEADLINE):
        guest = TrioGuest()
        seen: list[str] = []

        async def main() -> None:
            await trio.sleep(0.01)
            seen.append("main")
            await trio.sleep_forever()

        guest.start(main)
        await guest.wait_started()

        async def task(word: str) -> None:
            await trio.lowlevel.checkpoint()
            seen.append(word)

        guest.start_soon(task, "task")
        while len(seen) < 2:
            await asyncio.sleep(0.01)
        await guest.stop()
        assert sorted(seen) == ["main", "task"] and not guest.running
    trio.run(trio.sleep, 0)  # trio's thread state was released


# -- the app over a replay ----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_projects_screen_lists_every_project_and_opens_one() -> None:
    async with asyncio.timeout(DEADLINE):
        app, _ = replay_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, ProjectsScreen)
            table = screen.query_one("#projects")
            assert table.row_count == 3  # type: ignore[attr-defined]
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ProjectScreen), "project view")
            assert app.screen.query_one(WorkersTable).keys == [str(i) for i in range(11, 17)]
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, ProjectsScreen), "back")


@pytest.mark.asyncio
async def test_status_updates_are_throttled_but_every_event_is_kept() -> None:
    async with asyncio.timeout(DEADLINE):
        backend = ReplayBackend([])
        app = ConsoleApp(backend, refresh_interval=0.3)
        async with app.run_test(size=(80, 24)) as pilot:
            base = sample_status()
            for k in range(20):
                app.post_message(StatusReceived(replace(
                    base, time=float(k), events=(Event(time=float(k), kind="data",
                                                       message=f"event {k}"),))))
            await until(pilot, lambda: app.snapshots_received == 20, "20 snapshots")
            await until(pilot, lambda: app.status is not None and app.status.time == 19.0,
                        "the newest snapshot", timeout=2)
            assert app.snapshots_applied <= 3  # the first at once, the newest after 0.3 s
            assert len(app.events) == 20


@pytest.mark.asyncio
async def test_workers_table_updates_cells_in_place_for_500_workers() -> None:
    async with asyncio.timeout(DEADLINE):
        project = sample_project(workers=500)
        app = ConsoleApp(ReplayBackend([Status(time=1.0, projects=(project,))]),
                         project="digits", refresh_interval=0)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ProjectScreen)
                        and app.screen.query_one(WorkersTable).row_count == 501, "501 rows")
            screen = app.screen
            assert isinstance(screen, ProjectScreen)
            table = screen.query_one(WorkersTable)
            keys = table.keys
            # One worker gets faster, one leaves: two cells and one row change, nothing else.
            workers = list(project.workers)
            workers[3] = replace(workers[3], samples_per_s=9999.0)
            del workers[10]
            screen.show_status(Status(time=2.0, projects=(replace(project,
                                                                   workers=tuple(workers)),)))
            assert table.updates == 2
            assert table.keys == [k for k in keys if k != str(workers[9].worker_id + 1)]
            # Every worker changes: each row is updated, none rebuilt, quickly.
            moved = tuple(replace(w, allocated=w.allocated + 1) for w in workers)
            start = time.perf_counter()
            screen.show_status(Status(time=3.0, projects=(replace(project, workers=moved),)))
            elapsed = time.perf_counter() - start
            assert table.updates == len(moved)
            assert elapsed < 0.5, f"updating 500 workers took {elapsed:.2f} s"


@pytest.mark.asyncio
async def test_panels_switch_with_keys_and_curves_show_the_history() -> None:
    async with asyncio.timeout(DEADLINE):
        app, _ = replay_app(project="digits")
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ProjectScreen), "project view")
            await pilot.press("2")
            await pilot.pause()
            screen = app.screen
            assert screen.query_one("#panel-curves").has_class("-active")
            assert not screen.query_one("#panel-workers").has_class("-active")
            assert screen.query_one("#loss-plot", MetricPlot).points == 120
            assert screen.query_one("#error-plot", MetricPlot).points == 12
            await pilot.press("4")
            await pilot.pause()
            assert screen.query_one("#panel-events").count == 11  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_wide_terminal_shows_every_panel_at_once() -> None:
    async with asyncio.timeout(DEADLINE):
        app, _ = replay_app(project="digits")
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ProjectScreen), "project view")
            await pilot.pause()
            screen = app.screen
            assert screen.has_class("-wide") and screen.has_class("-tall")
            for panel in ("workers", "curves", "data", "events"):
                assert screen.query_one(f"#panel-{panel}").display


@pytest.mark.asyncio
async def test_pause_resume_and_remove_worker_reach_the_backend() -> None:
    async with asyncio.timeout(DEADLINE):
        app, backend = replay_app(project="digits")
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ProjectScreen), "project view")
            await pilot.press("p")
            await until(pilot, lambda: backend.projects["digits"].state == "paused", "paused")
            await until(pilot, lambda: app.status is not None and
                        app.status.projects[0].state == "paused", "paused on screen")
            await pilot.press("p")
            await until(pilot, lambda: backend.projects["digits"].state == "running", "resumed")
            await pilot.press("down", "x")
            await pilot.pause()
            await pilot.press("y")
            await until(pilot, lambda: 12 not in [w.worker_id for w in
                                                  backend.projects["digits"].workers], "removed")
            table = app.screen.query_one(WorkersTable)
            await until(pilot, lambda: "12" not in table.keys, "the row gone")
            assert isinstance(backend.requests[0], Pause)


@pytest.mark.asyncio
async def test_hyperparameter_edit_validates_inline_and_applies() -> None:
    async with asyncio.timeout(DEADLINE):
        app, backend = replay_app(project="digits")
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ProjectScreen), "project view")
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, HyperparametersDialog), "dialog")
            dialog = app.screen

            def field(key: str) -> FormField:
                return dialog.query_one(f"#field-{key}", FormField)

            # Typed nonsense and an out-of-range T are caught before anything is sent.
            field("T").value = "45"
            field("learning_rate").value = "fast"
            await pilot.press("enter")
            await until(pilot, lambda: field("learning_rate").error, "inline error")
            assert "between 0.25 and 30" in field("T").error
            assert "not a number" in field("learning_rate").error
            assert not backend.requests
            # A value the optimizer refuses: the master's message, under its field.
            field("T").value = "3"
            field("learning_rate").value = "-1"
            await pilot.press("enter")
            await until(pilot, lambda: "got -1" in field("learning_rate").error,
                        "the refusal inline")
            assert field("T").error == ""
            assert app.screen is dialog
            # A good change goes through and closes the dialog.
            field("learning_rate").value = "0.02"
            await pilot.press("enter")
            await until(pilot, lambda: app.screen is not dialog, "dialog closed")
            sent = backend.requests[-1]
            assert isinstance(sent, SetHyperparameters)
            assert sent.hyperparameters == {"learning_rate": 0.02}
            assert sent.iteration_time == 3.0
            assert backend.projects["digits"].hyperparameters["learning_rate"] == 0.02


@pytest.mark.asyncio
async def test_create_project_checks_the_spec_file_then_creates(tmp_path: Path) -> None:
    async with asyncio.timeout(DEADLINE):
        app, backend = replay_app()
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps(DIGITS_SPEC))
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps([{"type": "input", "out_sx": 8, "out_sy": 8, "out_depth": 1},
                                   {"type": "conv", "sx": 3}]))
        async with app.run_test(size=(80, 24)) as pilot:
            dialog, field = await open_create_dialog(pilot, app)
            field("name").value = "digits"
            field("model").value = str(tmp_path / "missing.json")
            await pilot.press("enter")
            await until(pilot, lambda: field("model").error, "missing file")
            # The engine refuses a bad spec as it is typed, with its own message, and
            # nothing is sent.
            field("model").value = str(bad)
            await until(pilot, lambda: field("model").error
                        == "layer 1 (conv): field 'filters' is required", "bad spec refused")
            await pilot.press("enter")
            await pilot.pause()
            assert not any(isinstance(r, CreateProject) for r in backend.requests)
            assert app.screen is dialog
            # A good spec: its layers, shapes and parameters show; the master's refusal
            # of the name goes under the name.
            field("model").value = str(spec)
            await until(pilot, lambda: field("model").error == "" and "total" in text_of(
                dialog, "#model-summary"), "the layer table")
            table = text_of(dialog, "#model-summary")
            from mlitb.nn import Net

            net = Net(DIGITS_SPEC)
            assert f"{net.num_params:,}" in table
            assert "8×8×8" in table and "softmax" in table
            await pilot.press("enter")
            await until(pilot, lambda: field("name").error, "name in use")
            assert "exists" in field("name").error
            field("name").value = "fresh"
            await pilot.press("enter")
            await until(pilot, lambda: "fresh" in backend.projects, "created")
            await until(pilot, lambda: app.screen.query_one("#projects").row_count == 4,
                        "a fourth row")


@pytest.mark.asyncio
async def test_create_project_refuses_a_learning_rate_and_a_net_too_large(
        tmp_path: Path) -> None:
    from mlitb.protocol import MAX_PARAMETERS

    async with asyncio.timeout(DEADLINE):
        app, backend = replay_app()
        huge = tmp_path / "huge.json"
        huge.write_text(json.dumps([{"type": "input", "out_sx": 64, "out_sy": 64,
                                     "out_depth": 3},
                                    {"type": "fc", "num_neurons": 100_000},
                                    {"type": "softmax", "num_classes": 10}]))
        async with app.run_test(size=(100, 40)) as pilot:
            dialog, field = await open_create_dialog(pilot, app)
            field("name").value = "huge"
            field("model").value = str(huge)
            await until(pilot, lambda: f"at most {MAX_PARAMETERS:,}" in field("model").error,
                        "too many parameters")
            # shown, never allocated: the fc layer alone has 1.2 billion
            assert f"{64 * 64 * 3 * 100_000 + 100_000:,}" in text_of(dialog, "#model-summary")
            spec = tmp_path / "spec.json"
            spec.write_text(json.dumps(DIGITS_SPEC))
            field("model").value = str(spec)
            field("learning_rate").value = "-0.5"
            await pilot.press("enter")
            await until(pilot, lambda: field("learning_rate").error, "refused rate")
            assert "got -0.5" in field("learning_rate").error
            assert not any(isinstance(r, CreateProject) for r in backend.requests)


@pytest.mark.asyncio
async def test_delete_asks_first() -> None:
    async with asyncio.timeout(DEADLINE):
        app, backend = replay_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("down", "down", "d")
            await pilot.pause()
            await pilot.press("n")
            await pilot.pause()
            assert "mnist-small" in backend.projects
            await pilot.press("d")
            await pilot.pause()
            await pilot.press("y")
            await until(pilot, lambda: "mnist-small" not in backend.projects, "deleted")


@pytest.mark.asyncio
async def test_upload_shows_progress_and_the_result(tmp_path: Path) -> None:
    async with asyncio.timeout(DEADLINE):
        app, _ = replay_app()
        archive = tmp_path / "train.zip"
        archive.write_bytes(b"PK" + bytes(4000))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("u")
            await until(pilot, lambda: isinstance(app.screen, UploadDialog), "dialog")
            dialog = app.screen
            assert isinstance(dialog, UploadDialog)
            dialog.query_one("#field-archive", FormField).value = str(tmp_path / "nope.zip")
            await pilot.press("enter")
            await until(pilot, lambda: dialog.query_one("#field-archive", FormField).error,
                        "no such file")
            dialog.query_one("#field-archive", FormField).value = str(archive)
            await pilot.press("enter")
            await until(pilot, lambda: dialog.result is not None, "the upload")
            bar = dialog.query_one("#progress")
            assert bar.percentage == 1.0  # type: ignore[attr-defined]
            assert "stored 100 train images" in str(dialog.query_one("#upload-status")
                                                    .render())



@pytest.mark.asyncio
async def test_closing_the_upload_dialog_abandons_the_upload(tmp_path: Path) -> None:
    from mlitb.console.dialogs._upload import UploadCancelledError

    async with asyncio.timeout(DEADLINE):
        app, backend = replay_app()
        backend.upload_delay = 0.5
        archive = tmp_path / "train.zip"
        archive.write_bytes(b"PK" + bytes(4000))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("u")
            await until(pilot, lambda: isinstance(app.screen, UploadDialog), "dialog")
            dialog = app.screen
            assert isinstance(dialog, UploadDialog)
            dialog.query_one("#field-archive", FormField).value = str(archive)
            await pilot.press("enter")
            await pilot.pause()
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, UploadDialog), "closed")
            # The upload's next progress report (in its thread, for a live master) raises.
            with pytest.raises(UploadCancelledError):
                dialog._progress(1, 2)
            assert dialog.result is None


@pytest.mark.asyncio
async def test_save_model_writes_a_loadable_file(tmp_path: Path) -> None:
    from mlitb.nn import load_model

    async with asyncio.timeout(DEADLINE):
        app, _ = replay_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, SaveModelDialog), "dialog")
            dialog = app.screen
            target = tmp_path / "digits.json"
            dialog.query_one("#field-path", FormField).value = str(target)
            await pilot.press("enter")
            await until(pilot, target.exists, "the file")
            assert load_model(target).num_params > 0


@pytest.mark.asyncio
async def test_command_palette_lists_every_action_of_the_screen() -> None:
    async with asyncio.timeout(DEADLINE):
        app, _ = replay_app(project="digits")
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ProjectScreen), "project view")
            for screen in app.screen_stack[1:]:
                titles = {c.title for c in app.get_system_commands(screen)}
                listed = screen.COMMANDS_LIST  # type: ignore[attr-defined]
                actions = {action for action, _, _ in listed}
                bound = {b.action for b in screen.BINDINGS}  # type: ignore[union-attr]
                assert bound <= actions, f"{bound - actions} missing from the palette"
                applies = {title for action, title, _ in listed  # Pause xor Resume
                           if screen.check_action(action, ()) is not False}
                assert applies <= titles and len(listed) - len(applies) == 1
            # Running one from the palette's callback works like the key.
            command = next(c for c in app.get_system_commands(app.screen)
                           if c.title == "Show curves")
            await command.callback()  # type: ignore[misc]
            await pilot.pause()
            assert app.screen.query_one("#panel-curves").has_class("-active")


@pytest.mark.asyncio
async def test_read_only_console_says_an_action_needs_the_token() -> None:
    async with asyncio.timeout(DEADLINE):
        backend = ReplayBackend([sample_status()], link=LinkState(
            "connected", "ws://replay.invalid:8000", authorized=False))
        app = ConsoleApp(backend, refresh_interval=0)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert "read-only" in str(app.screen.query_one(LinkBar).render())
            await pilot.press("p")
            await until(pilot, lambda: backend.requests, "the request")
            await pilot.pause()
            messages = [n.message for n in app._notifications]
            assert any("needs the operator token" in m for m in messages), messages
            assert backend.projects["digits"].state == "running"


@pytest.mark.asyncio
async def test_unreachable_and_refused_states_say_so_on_the_projects_screen() -> None:
    async with asyncio.timeout(DEADLINE):
        for state, words in ((LinkState("unreachable", "ws://h:1", "cannot reach the master at "
                                        "ws://h:1: connection refused", attempt=1,
                                        retry_in=0.5), "Cannot reach the master"),
                             (LinkState("refused", "ws://h:1", "the master refused the operator "
                                        "token"), "did not accept the operator token")):
            app = ConsoleApp(ReplayBackend([], link=state), refresh_interval=0)
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.pause()
                assert words in str(app.screen.query_one("#projects-empty").render())
        with pytest.raises(MasterUnreachableError):
            await ReplayBackend([], link=LinkState("lost", "ws://h:1")).request(
                Pause(request_id="-", project="p"), object)


def test_cli_console_command_is_registered_and_checks_the_url() -> None:
    from mlitb.cli._console import register_console

    app = typer.Typer()
    register_console(app)

    @app.command()
    def other() -> None:  # a second command, so typer keeps 'console' as a sub-command
        pass

    runner = CliRunner()
    result = runner.invoke(app, ["console", "--help"])
    assert result.exit_code == 0
    for word in ("--token", "MLITB_OPERATOR_TOKEN", "MLITB_MASTER", "--replay"):
        assert word in result.output
    result = runner.invoke(app, ["console", "http://wrong:8000"])
    assert result.exit_code == 1
    assert "must start with ws://" in result.output



@pytest.mark.asyncio
async def test_typing_in_a_dialog_never_triggers_key_bindings() -> None:
    async with asyncio.timeout(DEADLINE):
        app, backend = replay_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, CreateProjectDialog), "dialog")
            await pilot.press("q", "p", "d", "e")
            await pilot.pause()
            assert app.is_running and isinstance(app.screen, CreateProjectDialog)
            assert app.screen.query_one("#field-name", FormField).value == "qpde"
            # The dialog only asked for the master's zoo; no key reached an action.
            assert [type(r).__name__ for r in backend.requests] == ["ListZoo"]


def test_the_curve_tells_the_whole_test_set_from_a_subset_and_the_summary_the_algorithm():
    from mlitb.console._display import test_error_series, training_line
    from mlitb.protocol import StatsPoint, Training

    points = tuple(StatsPoint(iteration=i, parameter_version=i, samples=n, error=e)
                   for i, n, e in ((1, 360, 0.5), (2, 100, 0.4), (3, 100, 0.3), (4, 360, 0.2)))
    assert test_error_series(points, 360) == ([1.0, 4.0], [0.5, 0.2])
    assert test_error_series(points, 360, whole=False) == ([2.0, 3.0], [0.4, 0.3])
    status = sample_status().projects[0]
    local = replace(status, training=Training(
        algorithm="local", batch_size=16, schedule="cosine", horizon=60,
        horizon_unit="seconds", shift=4, flip=True))
    assert training_line(local) == ("local steps (batch 16, outer average) · cosine over 60 "
                                    "seconds · shift 4 + flip")
    assert training_line(status) == "gradient"
    assert training_line(replace(status, training=Training(wire="int8"))) == "gradient · int8 wire"


# -- what a new user tripped on (issue 14) -------------------------------------------------------
def cifar_status() -> Status:
    """The sample, with a CIFAR-10-sized paused project whose name is long."""
    base = sample_status()
    cifar = replace(base.projects[1], name="cifar10-with-a-rather-long-name",
                    data=replace(base.projects[1].data, total=50_000, test=10_000))
    return replace(base, projects=(base.projects[0], cifar, base.projects[2]))


def table_lines(table: object, rows: int) -> list[str]:
    return [table.render_line(y).text for y in range(rows)]  # type: ignore[attr-defined]


@pytest.mark.asyncio
@pytest.mark.parametrize("width", [80, 160])
async def test_projects_table_columns_fit_their_content_at_any_width(width: int) -> None:
    async with asyncio.timeout(DEADLINE):
        app = ConsoleApp(ReplayBackend([cifar_status()]), refresh_interval=0)
        async with app.run_test(size=(width, 24)) as pilot:
            table = app.screen.query_one("#projects")
            await until(pilot, lambda: table.row_count == 3, "the rows")  # type: ignore[attr-defined]
            await pilot.pause()
            lines = table_lines(table, 4)
            cifar = lines[2]
            assert " 10,000 " in cifar and " 50,000 " in cifar, lines
            assert "test err" in lines[0]
            if width == 80:
                assert "cifar10-with-a-…" in cifar and len(cifar.rstrip()) <= 80
            else:  # a wide terminal shows the whole name
                assert "cifar10-with-a-rather-long-name " in cifar


@pytest.mark.asyncio
async def test_the_pause_key_says_resume_while_the_project_is_paused() -> None:
    async with asyncio.timeout(DEADLINE):
        app, backend = replay_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.screen.query_one("#projects").row_count == 3,
                        "the rows")  # type: ignore[attr-defined]

            def label() -> str:
                return app.screen.active_bindings["p"].binding.description

            assert label() == "Pause"  # digits runs
            await pilot.press("down")  # cifar10 is paused
            await until(pilot, lambda: label() == "Resume", "Resume in the footer")
            titles = {c.title for c in app.get_system_commands(app.screen)}
            assert "Resume project" in titles and "Pause project" not in titles
            await pilot.press("p")
            await until(pilot, lambda: backend.projects["cifar10"].state == "running",
                        "resumed")
            await until(pilot, lambda: label() == "Pause", "Pause again once it runs")
            await pilot.press("enter")  # the project view follows the state too
            await until(pilot, lambda: isinstance(app.screen, ProjectScreen), "project view")
            await pilot.press("p")
            await until(pilot, lambda: label() == "Resume", "Resume in the project view")
            assert backend.projects["cifar10"].state == "paused"


@pytest.mark.asyncio
async def test_escape_closes_the_keys_panel_before_anything_else() -> None:
    from textual.widgets import HelpPanel

    async with asyncio.timeout(DEADLINE):
        app, _ = replay_app(project="digits")
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ProjectScreen), "project view")
            app.action_show_help_panel()
            await until(pilot, lambda: app.screen.query(HelpPanel), "the keys panel")
            await pilot.press("escape")
            await until(pilot, lambda: not app.screen.query(HelpPanel), "the panel closed")
            assert isinstance(app.screen, ProjectScreen)  # Esc did not also go back
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, ProjectsScreen), "back")
            app.action_show_help_panel()  # on the projects screen too
            await until(pilot, lambda: app.screen.query(HelpPanel), "the keys panel")
            await pilot.press("escape")
            await until(pilot, lambda: not app.screen.query(HelpPanel), "the panel closed")


@pytest.mark.asyncio
async def test_save_asks_for_a_directory_and_names_the_absolute_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlitb.nn import load_model

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    chosen = tmp_path / "models"
    chosen.mkdir()
    async with asyncio.timeout(DEADLINE):
        app, _ = replay_app()
        async with app.run_test(size=(80, 30)) as pilot:
            await pilot.pause()
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, SaveModelDialog), "dialog")
            dialog = app.screen
            directory = dialog.query_one("#field-directory", FormField)
            assert directory.value == str(cwd.resolve())  # in full, not "."
            directory.value = str(tmp_path / "missing")
            await pilot.press("enter")
            await until(pilot, lambda: directory.error, "no such directory")
            assert "no such directory" in directory.error
            directory.value = str(chosen)
            await until(pilot, lambda: str(chosen / "digits.model.json") in str(
                dialog.query_one("#target").render()), "the path it will write")
            await pilot.press("enter")
            target = chosen / "digits.model.json"
            await until(pilot, target.exists, "the file")
            assert load_model(target).num_params > 0
            assert not list(cwd.iterdir())
            await until(pilot, lambda: any(str(target.resolve()) in n.message
                                           for n in app._notifications), "the full path")


@pytest.mark.asyncio
async def test_upload_shows_the_server_decoding_once_every_byte_is_sent(tmp_path: Path) -> None:
    async with asyncio.timeout(DEADLINE):
        app, backend = replay_app()
        backend.upload_delay = 0.4  # the replay answers a while after the last byte
        archive = tmp_path / "train.zip"
        archive.write_bytes(b"PK" + bytes(4000))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("u")
            await until(pilot, lambda: isinstance(app.screen, UploadDialog), "dialog")
            dialog = app.screen
            assert isinstance(dialog, UploadDialog)
            dialog.query_one("#field-archive", FormField).value = str(archive)
            await pilot.press("enter")
            await until(pilot, lambda: dialog.stage == "decoding", "the decoding stage")
            bar = dialog.query_one("#progress")
            assert bar.total is None  # type: ignore[attr-defined]  # moving, not stuck at 100%
            status = str(dialog.query_one("#upload-status").render())
            assert "the data server is decoding and storing the images" in status
            await until(pilot, lambda: dialog.result is not None, "the answer")
            assert dialog.stage == "done" and bar.percentage == 1.0  # type: ignore[attr-defined]
            assert "stored 100" in str(dialog.query_one("#upload-status").render())
