"""One project: its workers, curves, data allocation and events, and the actions on it.

In a small terminal the four panels share the space below the summary and are switched with
tabs (or the keys 1-4); from 150x44 on they are all on view at once, in a grid.
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Horizontal, VerticalScroll
from textual.widgets import Footer, Header, Tab, Tabs

from mlitb.errors import MlitbError
from mlitb.protocol import Ack, RemoveWorker, Status

from .._display import describe_error, loss_series, test_error_series, train_error_series
from ..dialogs._confirm import ConfirmDialog
from ..widgets._allocation_view import AllocationView
from ..widgets._event_log import EventLog
from ..widgets._link_bar import LinkBar
from ..widgets._metric_plot import MetricPlot, Series
from ..widgets._project_summary import ProjectSummary
from ..widgets._timing_view import TimingView
from ..widgets._workers_table import WorkersTable
from ._base import ConsoleScreen

PANELS = ("workers", "curves", "data", "events")


class ProjectScreen(ConsoleScreen):
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (150, "-wide")]  # noqa: RUF012 (Textual's)
    VERTICAL_BREAKPOINTS = [(0, "-short"), (44, "-tall")]  # noqa: RUF012
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("p", "pause", "Pause"),
        Binding("p", "resume", "Resume"),
        Binding("e", "edit", "Edit"),
        Binding("x", "remove_worker", "Remove"),
        Binding("u", "upload", "Upload"),
        Binding("s", "save_model", "Save"),
        Binding("1", "panel('workers')", "Workers", show=False),
        Binding("2", "panel('curves')", "Curves", show=False),
        Binding("3", "panel('data')", "Data", show=False),
        Binding("4", "panel('events')", "Events", show=False),
    ]
    COMMANDS_LIST = (
        ("back", "Back to projects", "Return to the list of projects"),
        ("pause", "Pause project", "Pause this project's training"),
        ("resume", "Resume project", "Resume this project's training"),
        ("edit", "Edit hyperparameters and T", ("Change hyperparameters or the iteration time, "
         "live")),
        ("remove_worker", "Remove worker", ("Disconnect the highlighted worker; its data goes "
         "back to the pool")),
        ("upload", "Upload dataset", "Upload a zip of images (folders are labels)"),
        ("save_model", "Save model", "Save the model, research closure or ConvNetJS net"),
        ("delete", "Delete project", "Delete this project"),
        ("panel('workers')", "Show workers", "The workers table (key 1)"),
        ("panel('curves')", "Show curves", "Training loss and test error (key 2)"),
        ("panel('data')", "Show data allocation", "How the data is spread over workers (key 3)"),
        ("panel('events')", "Show events", "Joins, losses, re-allocations, errors (key 4)"),
    )

    def __init__(self, project: str) -> None:
        super().__init__()
        self.project = project
        self._events_seen = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield ProjectSummary(id="summary")
        yield TimingView(id="timing")
        yield Tabs(Tab("1 Workers", id="workers"), Tab("2 Curves", id="curves"),
                   Tab("3 Data", id="data"), Tab("4 Events", id="events"), id="tabs")
        with Container(id="panels"):
            yield WorkersTable(id="panel-workers", classes="panel -active")
            with Horizontal(id="panel-curves", classes="panel"):
                yield MetricPlot("training loss", id="loss-plot")
                yield MetricPlot("error", scale=100.0, unit="%", id="error-plot")
            with VerticalScroll(id="panel-data", classes="panel"):
                yield AllocationView(id="allocation")
            yield EventLog(id="panel-events", classes="panel")
        yield LinkBar(id="link")
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"mlitb console — {self.project}"
        for panel, title in zip(PANELS, ("workers", "curves", "data allocation", "events")):
            self.query_one(f"#panel-{panel}").border_title = title  # shown in wide terminals
        self.query_one(WorkersTable).focus()

    def current_project(self) -> str | None:
        return self.project

    # -- panels ------------------------------------------------------------------------------------
    def action_panel(self, panel: str) -> None:
        self.query_one(Tabs).active = panel

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        active = event.tab.id
        for panel in PANELS:
            self.query_one(f"#panel-{panel}").set_class(panel == active, "-active")
        if active == "workers":
            self.query_one(WorkersTable).focus()

    def action_back(self) -> None:
        self.dismiss()

    def after_delete(self, name: str) -> None:
        if self.is_current:
            self.dismiss()

    # -- status -----------------------------------------------------------------------------------
    def show_status(self, status: Status) -> None:
        project = next((p for p in status.projects if p.name == self.project), None)
        summary = self.query_one(ProjectSummary)
        summary.gone = project is None
        new_events = self.console.events.since(self._events_seen, self.project)
        self._events_seen = self.console.events.last
        self.query_one(EventLog).add(new_events)
        if project is None:
            return
        summary.project = project
        timing = self.query_one(TimingView)
        timing.timing = project.timing
        timing.iteration_time = project.iteration_time
        self.query_one(WorkersTable).show(project.workers)
        allocation = self.query_one(AllocationView)
        allocation.data = project.data
        allocation.members = project.workers
        self.query_one("#loss-plot", MetricPlot).show(
            [Series("loss", *loss_series(project.history), color="cyan")])
        self.query_one("#error-plot", MetricPlot).show(
            [Series("test", *test_error_series(project.test_error, project.data.test),
                    color="red"),
             Series("test subset", *test_error_series(project.test_error, project.data.test,
                                                      whole=False), color="magenta"),
             Series("train", *train_error_series(project.history), color="green")])

    # -- remove a worker -----------------------------------------------------------------------
    def action_remove_worker(self) -> None:
        worker = self.query_one(WorkersTable).selected_worker()
        if worker is None:
            self.notify("no worker selected", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._remove(worker)

        self.app.push_screen(ConfirmDialog(f"Remove worker {worker}? Its data goes back to "
                                           f"the pool.", "Remove"), confirmed)

    @work(group="request")
    async def _remove(self, worker: int) -> None:
        try:
            await self.backend.request(RemoveWorker(request_id="-", worker_id=worker), Ack)
        except MlitbError as exc:
            self.notify(describe_error(exc), title="remove worker", severity="error")
            return
        self.notify(f"removed worker {worker}")
