"""The console's widgets: tables (projects, workers) over one keyed table, the link bar, a
project's summary, timing and allocation views, the event log and the metric plots."""

from ._allocation_view import AllocationView
from ._event_log import EventLog
from ._keyed_table import Column, KeyedTable
from ._link_bar import LinkBar
from ._metric_plot import MetricPlot, Series
from ._project_summary import ProjectSummary
from ._projects_table import ProjectsTable
from ._timing_view import TimingView
from ._workers_table import WorkersTable

__all__ = ["AllocationView", "Column", "EventLog", "KeyedTable", "LinkBar", "MetricPlot",
           "ProjectSummary", "ProjectsTable", "Series", "TimingView", "WorkersTable"]
