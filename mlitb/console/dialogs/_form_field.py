"""A labelled one-line input with its own error line underneath (shown only when set)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Input, Label, Static


class FormField(Vertical):
    """``field.value`` is the text typed; set ``field.error`` to show a message inline. The
    message stays until the value changes."""

    DEFAULT_CSS = """
    FormField { height: auto; }
    FormField > Horizontal { height: 1; }
    FormField .field-error { display: none; color: $error; padding-left: 18; height: auto; }
    FormField.-invalid .field-error { display: block; }
    """

    error: reactive[str] = reactive("")

    def __init__(self, label: str, value: str = "", *, key: str, placeholder: str = "") -> None:
        super().__init__(id=f"field-{key}")
        self.key = key
        self.label = label
        self.initial = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(self.label, classes="field-label")
            yield Input(self.initial, placeholder=self.placeholder, id=f"input-{self.key}",
                        compact=True)
        yield Static("", classes="field-error")

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    @property
    def value(self) -> str:
        return self.input.value.strip()

    @value.setter
    def value(self, text: str) -> None:
        self.input.value = text

    def on_input_changed(self, event: Input.Changed) -> None:
        self.error = ""  # a new value: the old complaint no longer applies

    def watch_error(self, error: str) -> None:
        self.set_class(bool(error), "-invalid")
        self.query_one(".field-error", Static).update(f"✖ {error}" if error else "")
