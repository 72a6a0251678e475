"""Create a project: name, model spec file (or research closure, or an entry of the master's
model zoo), T, optimizer, learning rate."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from mlitb.client import RequestRefusedError
from mlitb.errors import MlitbError, ProtocolError
from mlitb.optim import OPTIMIZERS
from mlitb.protocol import Ack, CreateProject, ListZoo, ZooList

from ._backend import Backend
from ._form_field import FormField
from ._format import describe_error
from ._validate import (
    field_of,
    parse_iteration_time,
    parse_number,
    parse_project_name,
    read_model_file,
)

FIELDS = ["name", "model", "T", "learning_rate"]


class CreateProjectDialog(ModalScreen[str | None]):
    """Dismisses with the new project's name, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="create"):
            yield Static("[b]New project[/]", classes="title")
            with VerticalScroll(classes="fields"):
                yield FormField("name", key="name", placeholder="digits")
                yield FormField("model file", key="model",
                                placeholder="spec.json, model.json or closure.json")
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
        select.set_options([(f"{e.name} ({e.iteration} iterations)", e.name)
                            for e in listing.entries])
        if listing.entries:
            select.prompt = "none: use the model file"

    def _field(self, key: str) -> FormField:
        return self.query_one(f"#field-{key}", FormField)

    def _check(self) -> CreateProject | None:
        """The request, or None after marking every field in error."""
        fields = {key: self._field(key) for key in FIELDS}
        name = spec = closure = iteration_time = rate = None
        try:
            name = parse_project_name(fields["name"].value)
        except ValueError as exc:
            fields["name"].error = str(exc)
        chosen = self.query_one("#zoo", Select).value
        zoo = chosen if isinstance(chosen, str) else None
        if zoo is None:
            try:
                spec, closure = read_model_file(fields["model"].value)
            except ValueError as exc:
                fields["model"].error = str(exc)
        try:
            iteration_time = parse_iteration_time(fields["T"].value)
        except ValueError as exc:
            fields["T"].error = str(exc)
        try:
            text = fields["learning_rate"].value
            rate = float(parse_number(text)) if text else None
        except ValueError as exc:
            fields["learning_rate"].error = str(exc)
        if name is None or iteration_time is None or (
                spec is None and closure is None and zoo is None) or (
                fields["learning_rate"].value and rate is None):
            return None
        optimizer = str(self.query_one("#optimizer", Select).value)
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
