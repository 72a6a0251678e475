"""A live curve (textual-plotext) that redraws only when its data changed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textual_plotext import PlotextPlot


@dataclass(frozen=True)
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: str = "green"
    marker: str = "braille"


class MetricPlot(PlotextPlot):
    """``show(series)`` replaces the curves; the title carries the latest value of the first."""

    def __init__(self, title: str, *, scale: float = 1.0, unit: str = "",
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.scale = scale
        self.unit = unit
        self._signature: tuple[object, ...] | None = None
        self.points = 0
        """Points of the first series on display (tests watch a curve grow)."""
        self.show(())

    def show(self, series: Sequence[Series]) -> None:
        signature = tuple((s.label, len(s.xs), s.xs[-1] if s.xs else None,
                           s.ys[-1] if s.ys else None) for s in series)
        if signature == self._signature:
            return
        self._signature = signature
        plt = self.plt
        plt.clear_data()
        first = series[0] if series else None
        self.points = len(first.xs) if first is not None else 0
        if first is not None and first.ys:
            latest = first.ys[-1] * self.scale
            plt.title(f"{self.title}  {latest:.3g}{self.unit}")
        else:
            plt.title(f"{self.title}  (no points yet)")
        for s in series:
            if s.xs:
                plt.plot(list(s.xs), [y * self.scale for y in s.ys], label=s.label,
                         color=s.color, marker=s.marker)
        self.refresh()
