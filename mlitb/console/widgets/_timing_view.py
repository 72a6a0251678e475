"""The last iteration's time, phase by phase, as one bar scaled to T."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from mlitb.protocol import Timing

from .._display import seconds

PHASES = (("compute", "green"), ("wait", "yellow"), ("reduce", "magenta"),
          ("broadcast", "cyan"))


def timing_text(timing: Timing, iteration_time: float, width: int) -> Text:
    """``width`` cells: a bar of the phases (``·`` for idle time up to T), then the legend."""
    legend = Text()
    for name, color in PHASES:
        legend.append(" ■ ", style=color)
        legend.append(f"{name} {seconds(getattr(timing, name))}")
    bar_width = max(10, width - legend.cell_len - 2)
    total = max(iteration_time, sum(getattr(timing, n) for n, _ in PHASES), 1e-9)
    bar = Text()
    used = 0
    for name, color in PHASES:
        cells = round(getattr(timing, name) / total * bar_width)
        cells = min(cells, bar_width - used)
        bar.append("█" * cells, style=color)
        used += cells
    bar.append("·" * (bar_width - used), style="dim")
    return Text.assemble("▕", bar, "▏", legend)


class TimingView(Widget):
    """Redraws when ``timing`` or ``iteration_time`` change."""

    DEFAULT_CSS = "TimingView { height: 1; }"

    timing: reactive[Timing] = reactive(Timing)
    iteration_time: reactive[float] = reactive(2.0)

    def render(self) -> Text:
        return timing_text(self.timing, self.iteration_time, self.size.width)
