"""Checks of what the operator typed, before anything goes to the master (pure functions).

Each raises ``ValueError`` with the message shown inline under the field. The master checks
again (it has the last word); its refusals are shown under the field they name.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from mlitb.errors import MlitbError
from mlitb.optim import make_optimizer
from mlitb.protocol import MAX_ITERATION_TIME, MIN_ITERATION_TIME

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def parse_number(text: str) -> float | int:
    """A finite number; integers stay integers (``lr_decay_every`` wants one)."""
    if not text:
        raise ValueError("enter a number")
    try:
        value: float | int = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError("must be finite")
    return value


def parse_iteration_time(text: str) -> float:
    value = float(parse_number(text))
    if not MIN_ITERATION_TIME <= value <= MAX_ITERATION_TIME:
        raise ValueError(f"T must be between {MIN_ITERATION_TIME:g} and "
                         f"{MAX_ITERATION_TIME:g} seconds")
    return value


def parse_project_name(text: str) -> str:
    if not NAME.fullmatch(text):
        raise ValueError("1-64 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit")
    return text


def read_model_file(text: str) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """A layer spec (JSON list, or a model file with ``layers``) or a research closure:
    returns ``(spec, None)`` or ``(None, closure)``."""
    if not text:
        raise ValueError("enter the path of a model spec (JSON) or a research closure")
    path = Path(text).expanduser()
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path.name} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and data.get("format") == "mlitb-closure":
        return None, data
    if isinstance(data, dict) and isinstance(data.get("layers"), list):
        data = data["layers"]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ValueError(f"{path.name}: a model spec is a JSON list of layer objects "
                         f"(or a model file with 'layers', or a research closure)")
    return data, None


def check_model(spec: list[dict[str, Any]] | None,
                closure: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The engine's own check of a spec (or of a closure's net): its layer table (type,
    output shape, parameters), or ``ValueError`` with the engine's message, e.g.
    ``layer 1 (conv): field 'filters' is required``."""
    from mlitb.nn import layer_table

    if closure is not None:
        model = closure.get("model")
        layers = model.get("layers") if isinstance(model, dict) else None
        if not isinstance(layers, list):
            raise ValueError("this research closure has no model.layers")
        spec = layers
    if spec is None:
        raise ValueError("no model")
    try:
        return layer_table(spec)
    except MlitbError as exc:
        raise ValueError(str(exc)) from None
    except (TypeError, KeyError) as exc:  # a field of the wrong JSON type deep in a layer
        raise ValueError(f"not a valid model spec: {exc}") from None


def check_learning_rate(optimizer: str, rate: float) -> None:
    """``ValueError`` with the optimizer's message when it would refuse ``rate``."""
    try:
        make_optimizer(optimizer, 1, learning_rate=rate)
    except MlitbError as exc:
        raise ValueError(str(exc)) from None


def field_of(message: str, fields: list[str]) -> str | None:
    """Which field a master's message is about (it starts with ``field:`` or ``msg.field:``)."""
    head = message.split(":", 1)[0].strip()
    name = head.rsplit(".", 1)[-1]
    if name == "iteration_time":
        name = "T"
    return name if name in fields else None
