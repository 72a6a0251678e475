"""Pure functions that turn protocol values into short strings and Rich text for the widgets."""

from __future__ import annotations

import math

from rich.text import Text

from mlitb.client import MasterUnreachableError, RequestRefusedError
from mlitb.protocol import HistoryPoint, ProjectStatus, StatsPoint, WorkerStatus

DASH = "-"

STATE_STYLES = {
    "running": "bold green",
    "paused": "bold yellow",
    "waiting": "dim",
    "training": "green",
    "caching": "cyan",
    "late": "bold red",
    "idle": "dim",
    "tracking": "blue",
}


def number(value: float | None, digits: int = 4) -> str:
    """A compact number: ``0.0123``, ``1e-08``, ``-`` for None."""
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value:.{digits}g}"


def percent(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value * 100:.{digits}f}%"


def count(value: int | None) -> str:
    """``1,437``; ``12.3k`` from 100,000 on, so it fits a narrow column."""
    if value is None:
        return DASH
    if value >= 100_000:
        return f"{value / 1000:.0f}k" if value < 10_000_000 else f"{value / 1e6:.0f}M"
    return f"{value:,}"


def rate(value: float | None) -> str:
    if value is None:
        return DASH
    if value >= 100_000:
        return f"{value / 1000:,.0f}k"
    return f"{value:,.0f}"


def millis(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def seconds(value: float) -> str:
    """``2 s``, ``0.25 s``, ``12 ms``."""
    if value < 0.1:
        return f"{value * 1000:.0f} ms"
    return f"{value:g} s" if value == round(value, 2) else f"{value:.2f} s"


def clock(value: float) -> str:
    """Master uptime as ``mm:ss`` (``h:mm:ss`` past an hour)."""
    total = int(value)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with an ellipsis when cut."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def latest_loss(project: ProjectStatus) -> float | None:
    return project.history[-1].loss if project.history else None


def latest_test_error(project: ProjectStatus) -> float | None:
    return project.test_error[-1].error if project.test_error else None


def trainers(project: ProjectStatus) -> list[WorkerStatus]:
    return [w for w in project.workers if w.role == "trainer"]


def loss_series(history: tuple[HistoryPoint, ...]) -> tuple[list[float], list[float]]:
    return [float(p.iteration) for p in history], [p.loss for p in history]


def train_error_series(history: tuple[HistoryPoint, ...]) -> tuple[list[float], list[float]]:
    points = [p for p in history if p.accuracy is not None]
    return [float(p.iteration) for p in points], [1.0 - (p.accuracy or 0.0) for p in points]


def test_error_series(points: tuple[StatsPoint, ...], test_count: int = 0, *,
                      whole: bool = True) -> tuple[list[float], list[float]]:
    """The points over the whole test set (``whole``), or those over a subset of it: a stats
    worker evaluates a fixed subset per report and the whole set every few reports."""
    chosen = [p for p in points if (p.samples >= test_count) == whole]
    return [float(p.iteration) for p in chosen], [p.error for p in chosen]


def training_line(project: ProjectStatus) -> str:
    """The algorithm, and what its schedule and augmentation are, in a few words."""
    t = project.training
    if t.algorithm == "local":
        text = f"local steps (batch {t.batch_size}, outer {t.outer_optimizer})"
    else:
        text = "gradient"
    if t.schedule != "constant" and t.horizon is not None:
        text += f" · {t.schedule} over {t.horizon:g} {t.horizon_unit}"
    augment = [f"shift {t.shift}"] * bool(t.shift) + ["flip"] * t.flip
    text += f" · {' + '.join(augment)}" if augment else ""
    # float32 is the paper's wire: only a compressed one is worth a word.
    return text + (f" · {t.wire} wire" if t.wire != "float32" else "")


NEUTRAL = {"l1_decay": 0.0, "l2_decay": 0.0, "lr_decay": 1.0, "lr_min": 0.0}
"""Hyperparameter values that change nothing: the summary leaves them out."""
SHORT = {"learning_rate": "lr"}


def hyperparameter_line(project: ProjectStatus) -> str:
    """The hyperparameters that matter, ``name=value`` (all of them are in the edit dialog)."""
    hp = project.hyperparameters
    shown = []
    for key, value in sorted(hp.items(), key=lambda kv: (kv[0] != "learning_rate", kv[0])):
        if NEUTRAL.get(key) == value or key == "eps":
            continue
        if key in ("lr_decay_every", "lr_min") and hp.get("lr_decay", 1.0) == 1.0:
            continue
        shown.append(f"{SHORT.get(key, key)}={number(value, 3)}")
    return "  ".join(shown)


def describe_error(exc: BaseException) -> str:
    """One line for an operator: what went wrong and, where it helps, what to do."""
    if isinstance(exc, RequestRefusedError):
        if exc.code == "forbidden":
            return ("this needs the operator token: start the console with --token or "
                    "MLITB_OPERATOR_TOKEN")
        return str(exc)
    if isinstance(exc, MasterUnreachableError):
        return str(exc)
    return str(exc) or type(exc).__name__
