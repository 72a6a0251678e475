"""Save a project's model to a file: mlitb's model file, a research closure, or ConvNetJS.

The dialog asks for a directory (the console's working directory to start with, in full) and a
file name, shows the absolute path it will write, and the notification names that path.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from mlitb.errors import MlitbError
from mlitb.protocol import GetModel, Model

from .._backend import Backend
from .._display import describe_error
from ._form_field import FormField

FORMATS = (("model (spec, parameters, labels)", "model"),
           ("research closure (+ optimizer state, data manifest)", "closure"),
           ("ConvNetJS Net.toJSON()", "convnetjs"))


def default_path(project: str, fmt: str) -> str:
    return f"{project}.{fmt}.json"


def target_path(directory: str, name: str) -> Path:
    """The absolute path to write: ``name`` in ``directory`` (an absolute ``name`` wins)."""
    return (Path(directory or ".").expanduser() / Path(name).expanduser()).resolve()


def write_model(model: dict[str, Any], fmt: str, path: Path) -> int:
    """Check what came over the wire, then write it; returns the parameter count."""
    from mlitb.closure import closure_from_dict, save_closure
    from mlitb.nn import load_any, save_model

    try:
        if fmt == "closure":
            checked = closure_from_dict(model)
            save_closure(checked, path)
            return int(checked.net().num_params)
        net = load_any(model)
        if fmt == "convnetjs":
            path.write_text(json.dumps(model))
        else:
            save_model(net, path)
        return int(net.num_params)
    except OSError as exc:
        raise MlitbError(f"cannot write {path}: {exc.strerror or exc}") from None


class SaveModelDialog(ModalScreen[Path | None]):
    """Dismisses with the path written, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, project: str, backend: Backend, directory: Path | None = None) -> None:
        super().__init__()
        self.project = project
        self.backend = backend
        self.directory = (directory or Path.cwd()).resolve()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="save"):
            yield Static(f"[b]Save the model of {self.project}[/]", classes="title")
            with Horizontal(classes="select-row"):
                yield Label("format", classes="field-label")
                yield Select(FORMATS, value="model", allow_blank=False, id="format",
                             compact=True)
            yield FormField("directory", str(self.directory), key="directory")
            yield FormField("file", default_path(self.project, "model"), key="path")
            yield Static("", id="target", classes="hint")
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Save (enter)", variant="primary", id="save-button", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#input-path", Input).focus()
        self._show_target()

    def target(self) -> Path:
        return target_path(self.query_one("#field-directory", FormField).value,
                           self.query_one("#field-path", FormField).value)

    def _show_target(self) -> None:
        self.query_one("#target", Static).update(f"writes {self.target()}")

    def on_input_changed(self, event: Input.Changed) -> None:
        self._show_target()

    def on_select_changed(self, event: Select.Changed) -> None:
        field = self.query_one("#field-path", FormField)
        defaults = {default_path(self.project, fmt) for _, fmt in FORMATS}
        if field.value in defaults:  # not edited by hand: follow the format
            field.value = default_path(self.project, str(event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save-button":
            self.save()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @work(exclusive=True, group="save")
    async def save(self) -> None:
        field = self.query_one("#field-path", FormField)
        directory = self.query_one("#field-directory", FormField)
        error = self.query_one("#form-error", Static)
        error.update("")
        if not field.value:
            field.error = "enter a file name"
            return
        path = self.target()
        if not path.parent.is_dir():
            where = directory if not Path(field.value).expanduser().is_absolute() else field
            where.error = f"no such directory: {path.parent}"
            return
        if path.is_dir():
            field.error = f"{path} is a directory: enter a file name"
            return
        fmt = str(self.query_one("#format", Select).value)
        error.update("asking the master for the model …")
        try:
            reply = await self.backend.request(GetModel(request_id="-", project=self.project,
                                                        format=fmt),  # type: ignore[arg-type]
                                               Model)
            count = await asyncio.to_thread(write_model, reply.model, fmt, path)
        except MlitbError as exc:
            error.update(f"✖ {describe_error(exc)}")
            return
        self.notify(f"saved {self.project} ({count:,} parameters) to {path}")
        self.dismiss(path)
