"""Create a project: name, model spec file (or research closure, or an entry of the master's
model zoo), T, optimizer, learning rate.

The model is checked by the engine as the path is typed: its layers' output shapes and
parameter counts, or the engine's own refusal, show under the field before anything is sent.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from mlitb.client import RequestRefusedError
from mlitb.errors import MlitbError, ProtocolError
from mlitb.optim import OPTIMIZERS
from mlitb.protocol import MAX_PARAMETERS, Ack, CreateProject, ListZoo, ZooEntry, ZooList

from .._backend import Backend
from .._display import describe_error
from ._form_field import FormField
from ._validate import (
    check_learning_rate,
    check_model,
    field_of,
    parse_iteration_time,
    parse_number,
    parse_project_name,
    read_model_file,
)

FIELDS = ["name", "model", "T", "learning_rate"]
CHECK_DELAY = 0.25
"""Seconds of no typing in the model field before the file is read and checked again."""


def layer_summary(table: list[dict[str, Any]]) -> Table:
    """The layers as ``closure inspect`` lists them, with the total (in red over what one
    frame carries)."""
    out = Table(box=None, padding=(0, 1), show_edge=False, header_style="dim")
    out.add_column("#", justify="right")
    out.add_column("layer")
    out.add_column("output", justify="right")
    out.add_column("parameters", justify="right")
    for i, layer in enumerate(table):
        shape = "×".join(str(s) for s in layer["out_shape"])
        count = int(layer["parameters"])
        out.add_row(str(i), str(layer["type"]), shape, f"{count:,}" if count else "")
    total = sum(int(layer["parameters"]) for layer in table)
    style = "red" if total > MAX_PARAMETERS else "bold"
    out.add_row("", Text("total", style="bold"), "", Text(f"{total:,}", style=style))
    return out


class CreateProjectDialog(ModalScreen[str | None]):
    """Dismisses with the new project's name, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend
        self.zoo_entries: dict[str, ZooEntry] = {}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="create"):
            yield Static("[b]New project[/]", classes="title")
            with VerticalScroll(classes="fields"):
                yield FormField("name", key="name", placeholder="digits")
                yield FormField("model file", key="model",
                                placeholder="spec.json, model.json or closure.json")
                yield Static("", id="model-summary")
                with Horizontal(classes="select-row"):
                    yield Label("or zoo entry", classes="field-label")
                    yield Select([], prompt="none (the master's zoo is empty)", id="zoo",
                                 compact=True)
                yield FormField("T (seconds)", "2", key="T")
                with Horizontal(classes="select-row"):
                    yield Label("optimizer", classes="field-label")
                    yield Select([(o, o) for o in OPTIMIZERS], value="adagrad",
                                 allow_blank=False, id="optimizer", compact=True)
                yield FormField("learning rate", key="learning_rate",
                                placeholder="the optimizer's default")
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Create (enter)", variant="primary", id="create-button",
                             compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#input-name", Input).focus()
        self.load_zoo()

    @work(exclusive=True, group="zoo")
    async def load_zoo(self) -> None:
        """Offer the master's model zoo (closures a project can continue from)."""
        try:
            listing = await self.backend.request(ListZoo(request_id="-"), ZooList)
        except MlitbError:
            return  # no zoo to offer: the model file is the way
        select = self.query_one("#zoo", Select)
        self.zoo_entries = {e.name: e for e in listing.entries}
        select.set_options([(f"{e.name} ({e.iteration} iterations)", e.name)
                            for e in listing.entries])
        if listing.entries:
            select.prompt = "none: use the model file"

    def _field(self, key: str) -> FormField:
        return self.query_one(f"#field-{key}", FormField)

    def _zoo(self) -> str | None:
        chosen = self.query_one("#zoo", Select).value
        return chosen if isinstance(chosen, str) else None

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "input-model":
            self.check_model_soon()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "zoo":
            self.check_model_soon()

    @work(exclusive=True, group="model")
    async def check_model_soon(self) -> None:
        """Check the model once typing pauses (a newer keystroke cancels this one)."""
        await asyncio.sleep(CHECK_DELAY)
        if self.is_attached and self.app.screen is self:  # not dismissed meanwhile
            self._check_model()

    def _check_model(self) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None] | None:
        """Show the model's layer table, or the engine's refusal under the field; the model
        as ``read_model_file`` gives it, or None (a zoo entry, no model yet, or refused)."""
        summary = self.query_one("#model-summary", Static)
        zoo = self._zoo()
        if zoo is not None:
            entry = self.zoo_entries.get(zoo)
            summary.update("" if entry is None else
                           f"zoo entry [b]{entry.name}[/]: {entry.parameter_count:,} parameters, "
                           f"input {'×'.join(map(str, entry.input_shape))}, "
                           f"{len(entry.labels)} labels, {entry.iteration} iterations trained")
            return None
        field = self._field("model")
        summary.update("")
        if not field.value:
            return None
        try:
            model = read_model_file(field.value)
            table = check_model(*model)
        except ValueError as exc:
            field.error = str(exc)
            return None
        field.error = ""
        summary.update(layer_summary(table))
        total = sum(int(layer["parameters"]) for layer in table)
        if total > MAX_PARAMETERS:
            field.error = (f"{total:,} parameters: a project carries at most "
                           f"{MAX_PARAMETERS:,}")
            return None
        return model

    def _check(self) -> CreateProject | None:
        """The request, or None after marking every field in error."""
        fields = {key: self._field(key) for key in FIELDS}
        name = spec = closure = iteration_time = rate = None
        try:
            name = parse_project_name(fields["name"].value)
        except ValueError as exc:
            fields["name"].error = str(exc)
        zoo = self._zoo()
        if zoo is None:
            model = self._check_model()
            if model is not None:
                spec, closure = model
            elif not fields["model"].value:
                fields["model"].error = ("enter the path of a model spec (JSON) or a research "
                                         "closure")
        try:
            iteration_time = parse_iteration_time(fields["T"].value)
        except ValueError as exc:
            fields["T"].error = str(exc)
        optimizer = str(self.query_one("#optimizer", Select).value)
        try:
            text = fields["learning_rate"].value
            rate = float(parse_number(text)) if text else None
            if rate is not None:
                check_learning_rate(optimizer, rate)
        except ValueError as exc:
            rate = None
            fields["learning_rate"].error = str(exc)
        if name is None or iteration_time is None or (
                spec is None and closure is None and zoo is None) or (
                fields["learning_rate"].value and rate is None):
            return None
        return CreateProject(request_id="-", name=name,
                             spec=tuple(spec) if spec is not None else None, closure=closure,
                             zoo=zoo,
                             iteration_time=iteration_time, optimizer=optimizer,
                             hyperparameters={} if rate is None else {"learning_rate": rate})

    def _show_error(self, exc: MlitbError) -> None:
        message = describe_error(exc)
        if isinstance(exc, RequestRefusedError) and exc.code == "project_exists":
            self._field("name").error = message
            return
        key = field_of(message, FIELDS)
        if key is None and isinstance(exc, RequestRefusedError) and exc.code == "invalid_value":
            # The master names the layer ("layer 2 (conv): ...") or the spec: the model file.
            key = "learning_rate" if message.startswith("learning_rate") else "model"
        if key is not None:
            self._field(key).error = message
        else:
            self.query_one("#form-error", Static).update(f"✖ {message}")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.create()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "create-button":
            self.create()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @work(exclusive=True, group="create")
    async def create(self) -> None:
        self.query_one("#form-error", Static).update("")
        message = self._check()
        if message is None:
            return
        try:
            await self.backend.request(message, Ack)
        except (RequestRefusedError, ProtocolError) as exc:
            self._show_error(exc)
            return
        except MlitbError as exc:
            self.query_one("#form-error", Static).update(f"✖ {describe_error(exc)}")
            return
        self.dismiss(message.name)
