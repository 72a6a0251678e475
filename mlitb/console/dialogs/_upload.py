"""Upload a dataset zip (folder names are the labels) to a project, with a progress bar.

Two stages: the bytes going out (the bar fills), then the data server decoding and storing the
images (50,000 CIFAR-10 images take seconds): the bar turns into a moving one and a spinner with
the seconds spent says so, until the answer arrives.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, Input, Label, ProgressBar, Select, Static

from mlitb.errors import MlitbError

from .._app_messages import UploadProgress
from .._backend import Backend
from .._display import describe_error
from ._form_field import FormField

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class UploadCancelledError(MlitbError):
    """The operator closed the upload dialog while the upload was under way."""


class UploadDialog(ModalScreen[None]):
    """Train data feeds the trainers; test data feeds the stats workers' test-error curve."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, project: str, backend: Backend) -> None:
        super().__init__()
        self.project = project
        self.backend = backend
        self.result: dict[str, object] | None = None
        self._cancelled = threading.Event()
        self.stage = ""
        """``sending``, ``decoding`` (every byte sent, the server's answer pending), ``done``,
        ``failed``; empty before an upload."""
        self._decoding_since = 0.0
        self._sent_mb = 0.0
        self._ticks = 0
        self._spinner: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="upload"):
            yield Static(f"[b]Upload a dataset to {self.project}[/]\nA zip whose folder names "
                         f"are the labels; images are resized to the project's input.",
                         classes="title")
            yield FormField("zip file", key="archive", placeholder="train.zip")
            with Horizontal(classes="select-row"):
                yield Label("split", classes="field-label")
                yield Select([("train (for trainers)", "train"),
                              ("test (for the test-error curve)", "test")],
                             value="train", allow_blank=False, id="split", compact=True)
            yield ProgressBar(total=None, show_eta=False, id="progress")
            yield Static("", id="upload-status")
            with Horizontal(classes="buttons"):
                yield Button("Upload (enter)", variant="primary", id="upload-button",
                             compact=True)
                yield Button("Close (esc)", id="close", compact=True)

    def on_mount(self) -> None:
        self.query_one("#input-archive", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.upload()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "upload-button":
            self.upload()
        else:
            self.action_close()

    def action_close(self) -> None:
        self._cancelled.set()  # an upload in flight stops at its next block: nothing is stored
        self.dismiss(None)

    def on_upload_progress(self, message: UploadProgress) -> None:
        if self.stage not in ("sending", "decoding"):
            return  # a report that arrives after the answer
        bar = self.query_one(ProgressBar)
        if message.sent < message.total:
            bar.update(total=max(1, message.total), progress=message.sent)
            self.query_one("#upload-status", Static).update(
                f"sent {message.sent / 1e6:.1f} of {message.total / 1e6:.1f} MB")
            return
        if self.stage == "decoding":
            return
        self.stage = "decoding"  # every byte is out: the server decodes until it answers
        self._sent_mb = message.total / 1e6
        self._decoding_since = time.monotonic()
        bar.update(total=None)  # a moving bar: no more bytes to count
        self._spinner = self.set_interval(0.25, self._show_decoding)
        self._show_decoding()

    def _show_decoding(self) -> None:
        frame = SPINNER[self._ticks % len(SPINNER)]
        self._ticks += 1
        spent = time.monotonic() - self._decoding_since
        self.query_one("#upload-status", Static).update(
            f"{frame} uploaded {self._sent_mb:.1f} MB; the data server is decoding and storing "
            f"the images … {spent:.0f} s")

    def _stop_spinner(self, stage: str) -> None:
        self.stage = stage
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None

    def _progress(self, sent: int, total: int) -> None:
        if self._cancelled.is_set():  # raised in the upload's thread: the request is abandoned
            raise UploadCancelledError("the upload was cancelled")
        try:  # called from the upload's thread; post_message is thread-safe
            self.post_message(UploadProgress(sent, total))
        except RuntimeError:  # the app has closed
            pass

    @work(exclusive=True, group="upload")
    async def upload(self) -> None:
        field = self.query_one("#field-archive", FormField)
        status = self.query_one("#upload-status", Static)
        path = Path(field.value).expanduser()
        if not field.value:
            field.error = "enter the path of a zip file"
            return
        if not path.is_file():
            field.error = f"no such file: {path}"
            return
        field.error = ""
        split = str(self.query_one("#split", Select).value)
        button = self.query_one("#upload-button", Button)
        button.disabled = True
        self.query_one(ProgressBar).display = True
        self.query_one(ProgressBar).update(total=None, progress=0)
        status.update(f"uploading {path.name} …")
        self.stage = "sending"
        try:
            result = await self.backend.upload(self.project, path, split,  # type: ignore[arg-type]
                                               self._progress)
        except MlitbError as exc:
            self._stop_spinner("failed")
            status.update(f"[b red]✖ {describe_error(exc)}[/]")
            button.disabled = False
            return
        self._stop_spinner("done")
        self.result = result
        counts = result.get("counts")
        labels = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) \
            if isinstance(counts, dict) else ""
        status.update(f"[b green]✔[/] stored {result.get('count', '?')} {split} images in "
                      f"{self.project}" + (f" ({labels})" if labels else ""))
        bar = self.query_one(ProgressBar)
        bar.update(total=1, progress=1)
        self.notify(f"uploaded {path.name} to {self.project}")
