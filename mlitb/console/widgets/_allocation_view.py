"""How the training data is spread over the trainers, and what is left unallocated.

A summary line, one bar of the whole dataset (a segment per trainer, the unallocated rest
shaded), then a bar per trainer: cached ids solid, allocated but not yet cached ids light.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from mlitb.protocol import DataCounts, WorkerStatus

from .._display import clip, count

SEGMENT_COLORS = ("green", "cyan", "magenta", "yellow", "blue", "bright_green", "bright_cyan",
                  "bright_magenta")
MAX_ROWS = 200


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def allocation_text(data: DataCounts, workers: Sequence[WorkerStatus], width: int) -> Text:
    trainers = [w for w in workers if w.role == "trainer"]
    width = max(20, width)
    out = Text()
    out.append(f"{count(data.total)} training ids", style="bold")
    out.append(f": allocated {_share(data.allocated, data.total)} · cached "
               f"{_share(data.cached, data.total)} · unallocated ")
    out.append(count(data.unallocated), style="bold yellow" if data.unallocated else "")
    out.append(f" · +{count(data.test)} test\n")
    if data.total == 0:
        out.append("no training data yet: upload a dataset zip (u)", style="dim")
        return out
    # The whole dataset: a segment per trainer, then the unallocated ids.
    bar_width = width
    used = 0
    for k, w in enumerate(trainers):
        cells = min(bar_width - used, round(w.allocated / data.total * bar_width))
        out.append("█" * cells, style=SEGMENT_COLORS[k % len(SEGMENT_COLORS)])
        used += cells
    rest = bar_width - used
    out.append("░" * rest, style="yellow" if data.unallocated else "dim")
    out.append("\n")
    if not trainers:
        out.append("no trainers connected: every id waits to be allocated", style="dim")
        return out
    # One row per trainer, scaled to the largest share.
    label_width = 18
    numbers_width = 14
    row_width = max(5, width - label_width - numbers_width)
    largest = max(1, max(w.allocated for w in trainers))
    out.append(f"{'trainer':<{label_width}}", style="dim")
    out.append(f"{'█ cached  ▒ not yet cached':<{row_width}}", style="dim")
    out.append(f" {'ids':>6} {'cached':>6}\n", style="dim")
    for k, w in enumerate(trainers[:MAX_ROWS]):
        color = SEGMENT_COLORS[k % len(SEGMENT_COLORS)]
        cells = round(w.allocated / largest * row_width)
        solid = round(min(w.cached, w.allocated) / largest * row_width)
        label = clip(f"#{w.worker_id} {w.host}", label_width - 1)
        out.append(f"{label:<{label_width}}")
        out.append("█" * solid, style=color)
        out.append("▒" * (cells - solid), style=color)
        out.append(" " * (row_width - cells))
        out.append(f" {count(w.allocated):>6} {_share(w.cached, w.allocated):>6}\n",
                   style="" if w.cached >= w.allocated else "dim")
    if len(trainers) > MAX_ROWS:
        rest_workers = trainers[MAX_ROWS:]
        out.append(f"… and {len(rest_workers)} more trainers holding "
                   f"{count(sum(w.allocated for w in rest_workers))} ids\n", style="dim")
    return out


class AllocationView(Widget):
    """Redraws when ``data`` or ``members`` (the workers) change; as tall as its rows."""

    DEFAULT_CSS = "AllocationView { height: auto; }"

    data: reactive[DataCounts | None] = reactive(None, layout=True)
    members: reactive[tuple[WorkerStatus, ...]] = reactive((), layout=True)

    def render(self) -> Text:
        if self.data is None:
            return Text("no status yet", style="dim")
        return allocation_text(self.data, self.members, self.size.width)
