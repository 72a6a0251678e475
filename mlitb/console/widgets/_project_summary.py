"""The head of the project view: state, iteration, T, optimizer and hyperparameters, data."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from mlitb.protocol import ProjectStatus

from .._display import count, hyperparameter_line, seconds, state_text, training_line


def summary_text(p: ProjectStatus) -> Text:
    trainers = sum(1 for w in p.workers if w.role == "trainer")
    others = len(p.workers) - trainers
    line = Text.assemble((p.name, "bold"), " ", state_text(p.state),
                         f" · iteration {p.iteration} · T {seconds(p.iteration_time)} · "
                         f"{trainers} trainer{'s' if trainers != 1 else ''}"
                         + (f" +{others}" if others else "") + "\n")
    line.append(f"{p.optimizer} ", style="bold")
    line.append(hyperparameter_line(p))
    line.append(f" · {training_line(p)}")
    line.append(f" · data {count(p.data.total)} train + {count(p.data.test)} test",
                style="dim")
    return line


class ProjectSummary(Widget):
    DEFAULT_CSS = "ProjectSummary { height: auto; }"

    project: reactive[ProjectStatus | None] = reactive(None, layout=True)
    gone: reactive[bool] = reactive(False)

    def render(self) -> Text:
        if self.gone:
            return Text("this project no longer exists on the master (deleted?) — esc: back",
                        style="bold red")
        if self.project is None:
            return Text("waiting for the first status from the master …", style="dim")
        return summary_text(self.project)
