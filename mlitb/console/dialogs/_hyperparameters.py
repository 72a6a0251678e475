"""Edit a running project's hyperparameters and T; errors appear under the field they concern."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from mlitb.client import RequestRefusedError
from mlitb.errors import MlitbError, ProtocolError
from mlitb.protocol import Ack, ProjectStatus, SetHyperparameters

from .._backend import Backend
from .._display import describe_error, number
from ._form_field import FormField
from ._validate import field_of, parse_iteration_time, parse_number

T_FIELD = "T"


class HyperparametersDialog(ModalScreen[bool]):
    """Only changed values are sent; the master applies them from the next iteration."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, project: ProjectStatus, backend: Backend) -> None:
        super().__init__()
        self.project = project
        self.backend = backend
        self.names = sorted(project.hyperparameters)

    def compose(self) -> ComposeResult:
        p = self.project
        with Vertical(classes="dialog", id="hyperparameters"):
            yield Static(f"[b]{p.name}[/] · {p.optimizer} · applied from the next iteration",
                         classes="title")
            with VerticalScroll(classes="fields"):
                yield FormField("T (seconds)", f"{p.iteration_time:g}", key=T_FIELD)
                for name in self.names:
                    yield FormField(name, number(p.hyperparameters[name], 6), key=name)
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Apply (enter)", variant="primary", id="apply", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one(f"#input-{T_FIELD}", Input).focus()

    def _field(self, key: str) -> FormField:
        return self.query_one(f"#field-{key}", FormField)

    def _changes(self) -> tuple[dict[str, float], float | None] | None:
        """What changed, or None after marking the fields in error."""
        ok = True
        changes: dict[str, float] = {}
        iteration_time: float | None = None
        t_field = self._field(T_FIELD)
        try:
            t = parse_iteration_time(t_field.value)
            if t != self.project.iteration_time:
                iteration_time = t
        except ValueError as exc:
            t_field.error = str(exc)
            ok = False
        for name in self.names:
            field = self._field(name)
            try:
                value = parse_number(field.value)
                current = self.project.hyperparameters[name]
                # Untouched fields show the value rounded: only an edited text is a change.
                if field.value != number(current, 6) and float(value) != current:
                    changes[name] = value
            except ValueError as exc:
                field.error = str(exc)
                ok = False
        return (changes, iteration_time) if ok else None  # errors from the master stay

    def _show_error(self, message: str) -> None:
        key = field_of(message, [T_FIELD, *self.names])
        if key is not None:
            self._field(key).error = message.split(":", 1)[1].strip() if ":" in message \
                else message
            self.query_one("#form-error", Static).update("")
        else:
            self.query_one("#form-error", Static).update(f"✖ {message}")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.apply()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply":
            self.apply()
        else:
            self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)

    @work(exclusive=True, group="apply")
    async def apply(self) -> None:
        self.query_one("#form-error", Static).update("")
        found = self._changes()
        if found is None:
            return
        changes, iteration_time = found
        if not changes and iteration_time is None:
            self.query_one("#form-error", Static).update("✖ nothing changed")
            return
        message = SetHyperparameters(request_id="-", project=self.project.name,
                                     hyperparameters=changes,
                                     iteration_time=iteration_time)
        try:
            await self.backend.request(message, Ack)
        except (RequestRefusedError, ProtocolError) as exc:  # a field's value was refused
            self._show_error(describe_error(exc))
            return
        except MlitbError as exc:
            self._show_error(describe_error(exc))
            return
        what = ", ".join(f"{k}={number(float(v), 4)}" for k, v in changes.items())
        if iteration_time is not None:
            what = (what + ", " if what else "") + f"T={iteration_time:g} s"
        self.notify(f"updated {self.project.name}: {what}")
        self.dismiss(True)
