"""The research closure: one JSON object with everything needed to use and retrain a model.

``closure_from_project`` takes a snapshot of a master's project; ``closure_to_dict`` /
``closure_from_dict`` convert to and from the JSON object, and ``save_closure`` / ``load_closure``
write and read files (atomically). Reading checks everything (the JSON Schema shipped beside this
module, then base64, lengths, hashes, finiteness and consistency) and raises ``ClosureError``
naming the field that is wrong. docs/closure.md describes the format field by field.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .. import __version__
from .._files import atomic_write
from ..errors import ClosureError, ModelFormatError, OptimizerError
from ..nn import Net, model_from_dict
from ..optim import Hyperparameter, Optimizer, make_optimizer
from ..protocol import HistoryPoint, StatsPoint, Training
from ..training import (
    BudgetConfig,
    BudgetError,
    Project,
    Recorder,
    ReplayOrigin,
    ReplayRecord,
    ReplayStep,
    TrainingError,
    make_outer,
    parse_share,
    training_from_json,
    training_to_json,
)
from ._canonical import canonical_json
from ._manifest import DataManifest, SplitManifest, manifest_from_store
from ._schema import validate

FORMAT: Final = "mlitb-closure"
VERSION: Final = 1
SOFTWARE: Final = "mlitb"
ALLOCATION: Final = "pie-cutter"
_LE_F32: Final = np.dtype("<f4")
F32Array = npt.NDArray[np.float32]


# -- the in-memory form ------------------------------------------------------------------------
@dataclass(frozen=True)
class LoopSettings:
    """How the project's event loop runs (docs/architecture.md, "One iteration of a project")."""

    iteration_time: float
    """T, seconds per iteration."""
    samples_per_iteration: int | None = None
    """Work counted in samples (shared out over the trainers) instead of seconds; None: seconds."""
    deterministic: bool = False
    """Deterministic mode: sample budgets, fixed seeds, a fixed reduction order."""
    allocation: str = ALLOCATION
    """The data allocation policy (only ``pie-cutter`` exists)."""
    budget_config: dict[str, float] = field(default_factory=dict)
    """The latency/work-budget policy's knobs (``mlitb.training.BudgetConfig`` fields)."""
    seeds: dict[str, int] = field(default_factory=dict)
    """Named random seeds (e.g. ``init``), as the master records them."""
    paused: bool = False
    """An operator paused the project; a master restarted from this closure keeps it paused."""
    training: Training = field(default_factory=Training)
    """How the project trains: the algorithm, schedule and augmentation (``mlitb.training``)."""
    samples_trained: int = 0
    """Samples the project's steps have covered so far (the schedule's progress)."""
    seconds_trained: float = 0.0
    """Seconds of iterations that stepped so far (the schedule's progress in seconds)."""

    def __post_init__(self) -> None:
        if self.deterministic and self.samples_per_iteration is None:
            raise ClosureError("loop.deterministic: a deterministic run counts work in samples, "
                               "but loop.samples_per_iteration is null")

    @property
    def budget_policy(self) -> str:
        """``samples`` when work is counted in samples, else ``latency`` (seconds)."""
        return "latency" if self.samples_per_iteration is None else "samples"


def _frozen(array: npt.NDArray[Any]) -> F32Array:
    out = np.array(array, dtype=np.float32)  # a copy the closure owns
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class Closure:
    """A research closure in memory. Arrays are read-only copies; ``net()`` and
    ``optimizer()`` build fresh, independent objects from them."""

    name: str
    spec: list[dict[str, Any]]
    """The net's full layer definitions (``Net.spec()``)."""
    labels: tuple[str, ...]
    """The label map: output i is class ``labels[i]``; empty for a regression net."""
    parameters: F32Array
    optimizer_name: str
    hyperparameters: dict[str, Hyperparameter]
    """As ``Optimizer.hyperparameters()``: the *current* learning rate, after any decay."""
    optimizer_step: int
    optimizer_state: dict[str, F32Array]
    """The optimizer's accumulators by slot name (``Optimizer.SLOTS``)."""
    loop: LoopSettings
    iteration: int = 0
    parameter_version: int = 0
    data: DataManifest | None = None
    history: tuple[HistoryPoint, ...] = ()
    test_error: tuple[StatsPoint, ...] = ()
    decay_multipliers: tuple[F32Array, F32Array] | None = None
    """(l1, l2) per-parameter decay multipliers, only where they differ from the layers'."""
    created: str = ""
    updated: str = ""
    software_name: str = SOFTWARE
    software_version: str = __version__
    replay: ReplayRecord | None = None
    """The replay record of a deterministic run (``mlitb closure replay``); written only with a
    data manifest, whose training samples its shares index."""
    outer_step: int = 0
    outer_velocity: F32Array | None = None
    """A ``local`` project's outer optimizer (``mlitb.training.make_outer``): its step count
    and momentum; None for ``gradient`` projects."""

    def __post_init__(self) -> None:
        now = _timestamp(datetime.now(UTC))
        if not self.updated:
            object.__setattr__(self, "updated", self.created or now)
        if not self.created:
            object.__setattr__(self, "created", self.updated)
        object.__setattr__(self, "parameters", _frozen(self.parameters))
        object.__setattr__(self, "optimizer_state",
                           {k: _frozen(v) for k, v in self.optimizer_state.items()})
        if self.decay_multipliers is not None:
            l1, l2 = self.decay_multipliers
            object.__setattr__(self, "decay_multipliers", (_frozen(l1), _frozen(l2)))
        if self.outer_velocity is not None:
            object.__setattr__(self, "outer_velocity", _frozen(self.outer_velocity))

    @property
    def num_params(self) -> int:
        return int(self.parameters.size)

    @property
    def parameters_sha256(self) -> str:
        """Hex SHA-256 of the parameters as little-endian float32 bytes."""
        return hashlib.sha256(_le_bytes(self.parameters)).hexdigest()

    def net(self) -> Net:
        """A new Net with the closure's layers, labels and parameters."""
        try:
            return Net(self.spec, labels=list(self.labels) or None,
                       params=self.parameters.copy())
        except ModelFormatError as exc:
            raise ClosureError(f"model: {exc}") from None

    def optimizer(self) -> Optimizer:
        """A new optimizer in the recorded state: stepping it and ``net()``'s parameters with
        the same gradients gives bit-identical results to continuing the original run."""
        if self.decay_multipliers is None:
            l1, l2 = self.net().decay_multipliers()
        else:
            l1, l2 = (m.copy() for m in self.decay_multipliers)
        try:
            opt = make_optimizer(self.optimizer_name, self.num_params, **self.hyperparameters,
                                 l1_mul=l1, l2_mul=l2)
            opt.load_state({**{k: v.copy() for k, v in self.optimizer_state.items()},
                            "step": self.optimizer_step})
        except OptimizerError as exc:
            raise ClosureError(f"optimizer: {exc}") from None
        return opt

    def outer(self) -> Optimizer | None:
        """A new outer optimizer in the recorded state (``local`` projects), else None."""
        if self.loop.training.algorithm != "local":
            return None
        outer = make_outer(self.loop.training, self.num_params)
        velocity = self.outer_velocity if self.outer_velocity is not None else \
            np.zeros(self.num_params, np.float32)
        try:
            outer.load_state({"velocity": velocity.copy(), "step": self.outer_step})
        except OptimizerError as exc:
            raise ClosureError(f"optimizer.outer: {exc}") from None
        return outer

    def model_dict(self) -> dict[str, Any]:
        """The model alone, in our model format (``mlitb.nn.model_from_dict`` reads it)."""
        raw = _le_bytes(self.parameters)
        return {"format": "mlitb-model", "version": 1, "layers": [dict(d) for d in self.spec],
                "labels": list(self.labels), "num_params": self.num_params,
                "parameters": base64.b64encode(raw).decode("ascii"),
                "sha256": hashlib.sha256(raw).hexdigest()}

    def content_sha256(self) -> str:
        """The hash ``closure_to_dict`` writes as ``content_sha256``."""
        return str(closure_to_dict(self)["content_sha256"])

    def replace(self, **changes: Any) -> Closure:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


# -- helpers -----------------------------------------------------------------------------------
def _timestamp(when: datetime) -> str:
    when = when.astimezone(UTC)
    frac = f".{when.microsecond:06d}" if when.microsecond else ""
    return when.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def parse_time(text: str, where: str = "time") -> datetime:
    """An ISO 8601 UTC time as the closure writes it (``2025-06-01T12:00:00Z``)."""
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, TypeError):
        raise ClosureError(f"{where}: {text!r:.40} is not a valid ISO 8601 UTC time") from None


def _le_bytes(array: npt.NDArray[Any]) -> bytes:
    return np.ascontiguousarray(array, dtype=_LE_F32).tobytes()


def _vector_json(array: npt.NDArray[Any], where: str) -> dict[str, str]:
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ClosureError(f"{where}: {bad.size} value(s) are NaN or infinite (the first at index "
                           f"{int(bad[0])}); such a closure could not be read back")
    raw = _le_bytes(array)
    return {"data": base64.b64encode(raw).decode("ascii"),
            "sha256": hashlib.sha256(raw).hexdigest()}


def _decode(text: str, digest: str, size: int, where: str, hash_where: str) -> F32Array:
    """Base64 little-endian float32 -> a fresh array, its length, hash and finiteness checked."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ClosureError(f"{where}: is not valid base64") from None
    if len(raw) != 4 * size:
        raise ClosureError(f"{where}: holds {len(raw)} bytes, but {size} float32 values need "
                           f"{4 * size} (a truncated value, or one of another net?)")
    if hashlib.sha256(raw).hexdigest() != digest:
        raise ClosureError(f"{where}: SHA-256 of the bytes does not match {hash_where} (the "
                           "bytes were changed or corrupted)")
    values = np.frombuffer(raw, dtype=_LE_F32).astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ClosureError(f"{where}: {bad.size} value(s) are NaN or infinite (the first at "
                           f"index {int(bad[0])})")
    return values


def _vector(obj: Mapping[str, str], size: int, where: str) -> F32Array:
    return _decode(obj["data"], obj["sha256"], size, f"{where}.data", f"{where}.sha256")


def _budget_config(values: Mapping[str, float]) -> dict[str, float]:
    """Validated and completed by ``BudgetConfig``."""
    try:
        config = BudgetConfig(**{k: float(v) for k, v in values.items()})
    except TypeError:
        known = {f.name for f in dataclasses.fields(BudgetConfig)}
        unknown = sorted(set(values) - known)
        raise ClosureError(f"loop.budget.config.{unknown[0]}: unknown budget setting (known: "
                           f"{', '.join(sorted(known))})") from None
    except BudgetError as exc:
        raise ClosureError(f"loop.budget.config: {exc}") from None
    return {k: float(v) for k, v in dataclasses.asdict(config).items()}


# -- snapshot of a project ---------------------------------------------------------------------
def closure_from_project(project: Project,
                         manifest: DataManifest | Mapping[str, Any] | None = None, *,
                         seeds: Mapping[str, int] | None = None, created: str | None = None,
                         now: datetime | None = None) -> Closure:
    """A closure of ``project`` as it is now (copies: the project may keep training).

    ``manifest``: the project's data, as a ``DataManifest`` or the data server's
    ``Store.manifest(name)`` dict. ``seeds``: named seeds the master used (default: the
    project's ``seeds``). ``created``: the first closure's creation time, kept across autosaves
    (default: the project's ``created``, else ``now``). A deterministic project's replay record
    comes along (``project.replay_record()``).
    """
    net, opt = project.net, project.optimizer
    if opt.num_params != net.num_params:
        raise ClosureError(f"project {project.name}: the optimizer has {opt.num_params} "
                           f"parameters, the net {net.num_params}")
    state = opt.state()
    step = int(state.pop("step"))
    l1, l2 = net.decay_multipliers()
    decay = None
    if not (np.array_equal(opt.l1_mul, l1) and np.array_equal(opt.l2_mul, l2)):
        decay = (opt.l1_mul, opt.l2_mul)
    if isinstance(manifest, Mapping):
        manifest = manifest_from_store(manifest)
    samples = project.samples_per_iteration
    loop = LoopSettings(
        iteration_time=float(project.iteration_time), samples_per_iteration=samples,
        deterministic=bool(getattr(project, "deterministic", samples is not None)),
        budget_config={k: float(v) for k, v in dataclasses.asdict(project.budgets.config).items()},
        seeds=dict(seeds if seeds is not None else getattr(project, "seeds", {}) or {}),
        paused=bool(getattr(project, "paused", False)),
        training=getattr(project, "training", None) or Training(),
        samples_trained=int(getattr(project, "samples_trained", 0)),
        seconds_trained=float(getattr(project, "seconds_trained", 0.0)))
    outer = getattr(project, "outer", None)
    outer_step, outer_velocity = 0, None
    if outer is not None:
        outer_state = outer.state()
        outer_step = int(outer_state["step"])
        outer_velocity = outer_state["velocity"]
    updated = _timestamp(now or datetime.now(UTC))
    created = created or getattr(project, "created", None)
    record_of = getattr(project, "replay_record", None)
    replay = record_of() if record_of is not None else None
    return Closure(
        name=project.name, spec=net.spec(), labels=tuple(net.labels), parameters=net.params,
        optimizer_name=project.optimizer_name, hyperparameters=opt.hyperparameters(),
        optimizer_step=step,
        optimizer_state={k: v for k, v in state.items() if isinstance(v, np.ndarray)},
        loop=loop, iteration=project.iteration, parameter_version=project.parameter_version,
        data=manifest, history=tuple(project.history), test_error=tuple(project.test_error),
        decay_multipliers=decay, created=created or updated, updated=updated, replay=replay,
        outer_step=outer_step, outer_velocity=outer_velocity)


def project_from_closure(closure: Closure, name: str | None = None, *,
                         keep_record: bool = False) -> Project:
    """A project continuing ``closure``: its net, optimizer and state, loop settings,
    iteration counters and history. ``keep_record``: continue its replay record (a master
    restarted on its own autosave); otherwise a deterministic project starts a new one."""
    loop = closure.loop
    project = Project(name or closure.name, closure.net(), closure.optimizer(),
                      closure.optimizer_name, loop.iteration_time,
                      samples_per_iteration=loop.samples_per_iteration, seeds=dict(loop.seeds),
                      budget_config=BudgetConfig(**loop.budget_config)
                      if loop.budget_config else None, training=loop.training)
    project.outer = closure.outer()
    project.samples_trained = loop.samples_trained
    project.seconds_trained = loop.seconds_trained
    project.iteration = closure.iteration
    project.parameter_version = closure.parameter_version
    project.history.extend(closure.history)
    project.test_error.extend(closure.test_error)
    # A trained label map stays as it is: data must name its labels in the same order.
    project.labels_registered = closure.data is not None
    if keep_record and project.recorder is not None and closure.replay is not None:
        project.recorder = Recorder(closure.replay)
    return project


# -- to JSON -------------------------------------------------------------------------------------
def _split_json(split: SplitManifest, index: Mapping[str, int]) -> dict[str, Any]:
    return {"count": split.count, "counts": split.counts(), "sha256": list(split.sha256),
            "label": [index[name] for name in split.labels], "digest": split.digest()}


def _data_json(data: DataManifest | None) -> dict[str, Any] | None:
    if data is None:
        return None
    index = {name: i for i, name in enumerate(data.labels)}
    return {"labels": list(data.labels), "train": _split_json(data.train, index),
            "test": _split_json(data.test, index)}


def _optimizer_state_json(state: Mapping[str, F32Array], where: str) -> dict[str, Any]:
    return {k: _vector_json(v, f"{where}.{k}") for k, v in state.items()}


def _replay_json(r: ReplayRecord) -> dict[str, Any]:
    o = r.origin
    origin: dict[str, Any] = {
        "iteration": o.iteration, "parameter_version": o.parameter_version,
        "parameters": _vector_json(o.parameters, "replay.origin.parameters"),
        "optimizer": {"hyperparameters": dict(o.hyperparameters), "step": o.optimizer_step,
                      "state": _optimizer_state_json(o.optimizer_state,
                                                     "replay.origin.optimizer.state")}}
    if o.outer_velocity is not None:
        origin["outer"] = {"step": o.outer_step, "velocity": _vector_json(
            o.outer_velocity, "replay.origin.outer.velocity")}
    return {"seed": r.seed, "max_batch": r.max_batch, "origin": origin,
            "shares": list(r.shares),
            "steps": [_replay_step_json(s) for s in r.steps]}


def _replay_step_json(s: ReplayStep) -> dict[str, Any]:
    out: dict[str, Any] = {"iteration": s.iteration, "parts": [[k, n] for k, n in s.parts],
                           "sha256": s.sha256}
    if s.lr_scale != 1.0:  # absent: 1.0, as in closures written before schedules
        out["lr_scale"] = s.lr_scale
    return out


def _training_json(training: Training) -> dict[str, Any]:
    """``loop.training`` as written: ``wire`` only when it is not float32, so that a closure
    written before the field existed serializes, and hashes, as it did (its reader takes a
    missing ``wire`` as float32)."""
    out = training_to_json(training)
    if out.get("wire") == "float32":
        del out["wire"]
    return out


def closure_to_dict(closure: Closure) -> dict[str, Any]:
    """The closure as a JSON-ready dict, with its ``content_sha256``. A replay record is
    written only together with a data manifest (its shares index the training samples)."""
    c = closure
    model = c.model_dict()
    _vector_json(c.parameters, "model.parameters")  # refuse NaN: the file could not be read
    optimizer: dict[str, Any] = {
        "name": c.optimizer_name, "hyperparameters": dict(c.hyperparameters),
        "step": c.optimizer_step,
        "state": {k: _vector_json(v, f"optimizer.state.{k}") for k, v in
                  c.optimizer_state.items()}}
    if c.decay_multipliers is not None:
        l1, l2 = c.decay_multipliers
        optimizer["decay_multipliers"] = {
            "l1_mul": _vector_json(l1, "optimizer.decay_multipliers.l1_mul"),
            "l2_mul": _vector_json(l2, "optimizer.decay_multipliers.l2_mul")}
    if c.outer_velocity is not None:
        optimizer["outer"] = {"step": c.outer_step, "velocity": _vector_json(
            c.outer_velocity, "optimizer.outer.velocity")}
    loop = c.loop
    body: dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "created": c.created, "updated": c.updated,
        "software": {"name": c.software_name, "version": c.software_version},
        "name": c.name,
        "model": model,
        "labels": list(c.labels),
        "optimizer": optimizer,
        "loop": {"iteration_time": loop.iteration_time,
                 "samples_per_iteration": loop.samples_per_iteration,
                 "deterministic": loop.deterministic, "allocation": loop.allocation,
                 "budget": {"policy": loop.budget_policy, "config": dict(loop.budget_config)},
                 "seeds": dict(loop.seeds), "paused": loop.paused,
                 "training": _training_json(loop.training),
                 "progress": {"samples": loop.samples_trained,
                              "seconds": loop.seconds_trained}},
        "iteration": c.iteration, "parameter_version": c.parameter_version,
        "data": _data_json(c.data),
        "history": {
            "train": [{"iteration": int(p.iteration), "samples": int(p.samples),
                       "loss": float(p.loss),
                       "accuracy": None if p.accuracy is None else float(p.accuracy)}
                      for p in c.history],
            "test_error": [{"iteration": int(p.iteration),
                            "parameter_version": int(p.parameter_version),
                            "samples": int(p.samples), "error": float(p.error)}
                           for p in c.test_error]},
    }
    if c.replay is not None and c.data is not None:
        body["replay"] = _replay_json(c.replay)
    digest = hashlib.sha256(canonical_json(body)).hexdigest()
    return {"format": FORMAT, "version": VERSION, "content_sha256": digest, **body}


# -- from JSON -----------------------------------------------------------------------------------
def _check_header(d: Any) -> None:
    if not isinstance(d, Mapping):
        raise ClosureError(f"a closure must be a JSON object, got {type(d).__name__}")
    fmt = d.get("format")
    if fmt != FORMAT:
        if fmt == "mlitb-model":
            raise ClosureError("this is an mlitb model file, not a research closure (it has no "
                               "optimizer, loop settings or history)")
        if fmt is None and "layers" in d:
            raise ClosureError("this looks like a ConvNetJS net, not a research closure")
        got = "missing" if "format" not in d else f"{fmt!r:.40}"
        raise ClosureError(f"not an mlitb research closure: field 'format' is {got} "
                           f"(expected {FORMAT!r})")
    version = d.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ClosureError(f"version: must be an integer, got {version!r:.40}")
    if version != VERSION:
        raise ClosureError(f"format version {version} is not supported (this mlitb reads "
                           f"{VERSION})")


def _model(d: Mapping[str, Any]) -> Net:
    m = d["model"]
    _decode(m["parameters"], m["sha256"], m["num_params"], "model.parameters", "model.sha256")
    try:
        net = model_from_dict(m)
    except ModelFormatError as exc:
        raise ClosureError(f"model: {exc}") from None
    if list(d["labels"]) != net.labels:
        raise ClosureError(f"labels: {list(d['labels'])[:6]!r} differ from model.labels "
                           f"{net.labels[:6]!r}")
    return net


def _optimizer(o: Mapping[str, Any], net: Net) -> tuple[Optimizer, dict[str, F32Array],
                                                        tuple[F32Array, F32Array] | None]:
    n = net.num_params
    decay: tuple[F32Array, F32Array] | None = None
    if "decay_multipliers" in o:
        dm = o["decay_multipliers"]
        decay = (_vector(dm["l1_mul"], n, "optimizer.decay_multipliers.l1_mul"),
                 _vector(dm["l2_mul"], n, "optimizer.decay_multipliers.l2_mul"))
        for name, values in zip(("l1_mul", "l2_mul"), decay):
            if (values < 0).any():
                raise ClosureError(f"optimizer.decay_multipliers.{name}: values must be >= 0")
        l1, l2 = decay
    else:
        l1, l2 = net.decay_multipliers()
    hp = dict(o["hyperparameters"])
    try:
        opt = make_optimizer(o["name"], n, **hp, l1_mul=l1.copy(), l2_mul=l2.copy())
    except OptimizerError as exc:
        raise ClosureError(f"optimizer.hyperparameters: {exc}") from None
    missing = sorted(set(opt.hyperparameters()) - set(hp) - ({"nesterov"} if o["name"] ==
                                                               "nesterov" else set()))
    if missing:
        raise ClosureError(f"optimizer.hyperparameters.{missing[0]}: is missing ({o['name']} "
                           f"needs {', '.join(sorted(opt.hyperparameters()))})")
    state_in = o["state"]
    for slot in opt.SLOTS:
        if slot not in state_in:
            raise ClosureError(f"optimizer.state.{slot}: is missing ({o['name']} keeps "
                               f"{', '.join(opt.SLOTS) or 'no state'})")
    for slot in state_in:
        if slot not in opt.SLOTS:
            raise ClosureError(f"optimizer.state.{slot}: unknown for {o['name']} (it keeps "
                               f"{', '.join(opt.SLOTS) or 'no state'})")
    state = {slot: _vector(state_in[slot], n, f"optimizer.state.{slot}") for slot in opt.SLOTS}
    try:
        opt.load_state({**{k: v.copy() for k, v in state.items()}, "step": int(o["step"])})
    except OptimizerError as exc:
        raise ClosureError(f"optimizer.state: {exc}") from None
    return opt, state, decay


def _loop(loop: Mapping[str, Any]) -> LoopSettings:
    samples = loop["samples_per_iteration"]
    samples = None if samples is None else int(samples)
    policy = loop["budget"]["policy"]
    expected = "latency" if samples is None else "samples"
    if policy != expected:
        raise ClosureError(f"loop.budget.policy: is {policy!r}, but loop.samples_per_iteration "
                           f"is {samples} (which needs {expected!r})")
    try:
        training = training_from_json(loop.get("training", {}))
    except TrainingError as exc:
        raise ClosureError(f"loop.{exc}") from None
    progress = loop.get("progress", {})
    return LoopSettings(iteration_time=float(loop["iteration_time"]),
                        samples_per_iteration=samples, deterministic=bool(loop["deterministic"]),
                        allocation=loop["allocation"],
                        budget_config=_budget_config(loop["budget"]["config"]),
                        seeds={k: int(v) for k, v in loop["seeds"].items()},
                        # Optional: closures written before these fields existed.
                        paused=bool(loop.get("paused", False)), training=training,
                        samples_trained=int(progress.get("samples", 0)),
                        seconds_trained=float(progress.get("seconds", 0.0)))


def _split(s: Mapping[str, Any], labels: tuple[str, ...], where: str) -> SplitManifest:
    hashes, indices = s["sha256"], s["label"]
    if not s["count"] == len(hashes) == len(indices):
        raise ClosureError(f"{where}: count is {s['count']}, but sha256 holds {len(hashes)} "
                           f"hashes and label {len(indices)} labels")
    for i, k in enumerate(indices):
        if k >= len(labels):
            raise ClosureError(f"{where}.label[{i}]: {k} is not an index into data.labels "
                               f"({len(labels)} labels)")
    split = SplitManifest(tuple(hashes), tuple(labels[int(k)] for k in indices))
    counts = split.counts()
    if dict(s["counts"]) != counts:
        odd = min(sorted(set(counts) | set(s["counts"])),
                  key=lambda x: counts.get(x) == s["counts"].get(x))
        raise ClosureError(f"{where}.counts: says {s['counts'].get(odd, 0)} sample(s) labelled "
                           f"{odd!r}, but the samples hold {counts.get(odd, 0)}")
    if s["digest"] != split.digest():
        raise ClosureError(f"{where}.digest: does not match the samples (the sha256 or label "
                           "lists were changed)")
    return split


def _data(d: Mapping[str, Any] | None) -> DataManifest | None:
    if d is None:
        return None
    labels = tuple(d["labels"])
    if len(set(labels)) != len(labels):
        raise ClosureError("data.labels: label names must be distinct")
    return DataManifest(labels, _split(d["train"], labels, "data.train"),
                        _split(d["test"], labels, "data.test"))


def _replay(r: Mapping[str, Any], d: Mapping[str, Any], net: Net, optimizer_name: str,
            decay: tuple[F32Array, F32Array] | None, data: DataManifest | None) -> ReplayRecord:
    """The replay record, checked against the rest of the closure."""
    if data is None:
        raise ClosureError("replay: a replay record needs the data manifest its shares index, "
                           "but data is null")
    n = net.num_params
    o = r["origin"]
    params = _vector(o["parameters"], n, "replay.origin.parameters")
    oo = o["optimizer"]
    l1, l2 = decay if decay is not None else net.decay_multipliers()
    try:
        opt = make_optimizer(optimizer_name, n, **dict(oo["hyperparameters"]), l1_mul=l1.copy(),
                             l2_mul=l2.copy())
    except OptimizerError as exc:
        raise ClosureError(f"replay.origin.optimizer.hyperparameters: {exc}") from None
    if set(oo["state"]) != set(opt.SLOTS):
        raise ClosureError(f"replay.origin.optimizer.state: holds {sorted(oo['state'])}, but "
                           f"{optimizer_name} keeps {list(opt.SLOTS)}")
    state = {slot: _vector(oo["state"][slot], n, f"replay.origin.optimizer.state.{slot}")
             for slot in opt.SLOTS}
    outer = o.get("outer")
    origin = ReplayOrigin(iteration=int(o["iteration"]),
                          parameter_version=int(o["parameter_version"]), parameters=params,
                          hyperparameters=opt.hyperparameters(), optimizer_step=int(oo["step"]),
                          optimizer_state=state,
                          outer_step=int(outer["step"]) if outer is not None else 0,
                          outer_velocity=_vector(outer["velocity"], n,
                                                 "replay.origin.outer.velocity")
                          if outer is not None else None)
    if origin.iteration > d["iteration"] or origin.parameter_version > d["parameter_version"]:
        raise ClosureError(f"replay.origin: iteration {origin.iteration}, parameter version "
                           f"{origin.parameter_version} is past the closure's")
    shares = tuple(r["shares"])
    for i, text in enumerate(shares):
        positions = parse_share(text, f"replay.shares[{i}]")
        if positions.size and positions[-1] >= data.train.count:
            raise ClosureError(f"replay.shares[{i}]: position {int(positions[-1])} is past the "
                               f"{data.train.count} training samples of data.train")
    steps = []
    previous = origin.iteration - 1
    for i, step in enumerate(r["steps"]):
        where = f"replay.steps[{i}]"
        it = int(step["iteration"])
        if it <= previous or it >= d["iteration"]:
            raise ClosureError(f"{where}.iteration: {it} must follow {previous} and come before "
                               f"the closure's iteration {d['iteration']}")
        previous = it
        for k, (share, samples) in enumerate(step["parts"]):
            if share >= len(shares):
                raise ClosureError(f"{where}.parts[{k}]: share {share} is not an index into "
                                   f"replay.shares ({len(shares)} shares)")
            if samples < 1:
                raise ClosureError(f"{where}.parts[{k}]: a part needs at least 1 sample")
        steps.append(ReplayStep(it, tuple((int(a), int(b)) for a, b in step["parts"]),
                                step["sha256"], float(step.get("lr_scale", 1.0))))
    if len(steps) != d["parameter_version"] - origin.parameter_version:
        raise ClosureError(f"replay.steps: {len(steps)} steps, but the parameter version went "
                           f"from {origin.parameter_version} to {d['parameter_version']}")
    final = steps[-1].sha256 if steps else hashlib.sha256(_le_bytes(params)).hexdigest()
    if final != d["model"]["sha256"]:
        raise ClosureError("replay: the parameters after the last recorded step do not hash to "
                           "model.sha256")
    return ReplayRecord(origin=origin, shares=shares, steps=tuple(steps), seed=int(r["seed"]),
                        max_batch=int(r["max_batch"]))


def closure_from_dict(d: Any) -> Closure:
    """A Closure from its JSON object, every field checked; ``ClosureError`` names the field
    and what is wrong (a wrong format or version is reported before anything else, a
    ``content_sha256`` mismatch after every other check)."""
    _check_header(d)
    validate(d)
    created = parse_time(d["created"], "created")
    if parse_time(d["updated"], "updated") < created:
        raise ClosureError(f"updated: {d['updated']} is before created {d['created']}")
    net = _model(d)
    o = d["optimizer"]
    opt, state, decay = _optimizer(o, net)
    loop = _loop(d["loop"])
    if d["parameter_version"] > d["iteration"]:
        raise ClosureError(f"parameter_version: {d['parameter_version']} steps in "
                           f"{d['iteration']} iterations (at most one step per iteration)")
    data = _data(d["data"])
    h = d["history"]
    history = tuple(HistoryPoint(iteration=int(p["iteration"]), samples=int(p["samples"]),
                                 loss=float(p["loss"]),
                                 accuracy=None if p["accuracy"] is None else float(p["accuracy"]))
                    for p in h["train"])
    test_error = tuple(StatsPoint(iteration=int(p["iteration"]),
                                  parameter_version=int(p["parameter_version"]),
                                  samples=int(p["samples"]), error=float(p["error"]))
                       for p in h["test_error"])
    replay = _replay(d["replay"], d, net, o["name"], decay, data) if "replay" in d else None
    outer_step, outer_velocity = 0, None
    if "outer" in o:
        if loop.training.algorithm != "local":
            raise ClosureError("optimizer.outer: only a 'local' project has an outer optimizer "
                               f"(loop.training.algorithm is {loop.training.algorithm!r})")
        outer_step = int(o["outer"]["step"])
        outer_velocity = _vector(o["outer"]["velocity"], net.num_params,
                                 "optimizer.outer.velocity")
    if "content_sha256" in d:
        body = {k: v for k, v in d.items() if k != "content_sha256"}
        if hashlib.sha256(canonical_json(body)).hexdigest() != d["content_sha256"]:
            raise ClosureError("content_sha256: does not match the closure's content (a field "
                               "was changed after the closure was written)")
    return Closure(
        name=d["name"], spec=net.spec(), labels=tuple(net.labels), parameters=net.params,
        optimizer_name=o["name"], hyperparameters=opt.hyperparameters(),
        optimizer_step=int(o["step"]), optimizer_state=state, loop=loop,
        iteration=int(d["iteration"]), parameter_version=int(d["parameter_version"]),
        data=data, history=history, test_error=test_error, decay_multipliers=decay,
        created=d["created"], updated=d["updated"], software_name=d["software"]["name"],
        software_version=d["software"]["version"], replay=replay, outer_step=outer_step,
        outer_velocity=outer_velocity)


# -- files -----------------------------------------------------------------------------------------
def save_closure(closure: Closure, path: str | os.PathLike[str]) -> Path:
    """Write the closure to ``path`` atomically (a temporary file in the same directory, flushed
    to disk, then ``os.replace``): readers see the old file or the new one, never a part."""
    text = json.dumps(closure_to_dict(closure), indent=1, ensure_ascii=False, allow_nan=False)
    return atomic_write(path, text + "\n")


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _looks_truncated(text: str) -> bool:
    """True if ``text`` ends inside a string or with brackets still open."""
    skeleton = _STRING.sub("", text)
    if '"' in skeleton:
        return True
    return skeleton.count("{") + skeleton.count("[") > skeleton.count("}") + skeleton.count("]")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ClosureError(f"field {key!r} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ClosureError(f"{name} is not a JSON number")


def parse_closure_json(text: str | bytes) -> Any:
    """Parse closure JSON strictly (no duplicate keys, no NaN/Infinity), telling a truncated
    document from a malformed one."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ClosureError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise ClosureError("the file is empty")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        # Truncated: brackets still open *and* the parser ran out of text (at the end, or in a
        # string that never ends), not stopped early at a mistake such as ``{not json``.
        ran_out = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        if ran_out and _looks_truncated(text):
            raise ClosureError(f"the JSON ends early after {len(text.encode('utf-8'))} bytes: "
                               "the file is truncated") from None
        raise ClosureError(f"not valid JSON at line {exc.lineno}, column {exc.colno}: "
                           f"{exc.msg}") from None


def load_closure(path: str | os.PathLike[str]) -> Closure:
    """Read and check a closure file. ``ClosureError`` messages start with the path; ``OSError``
    (missing, unreadable) passes through."""
    raw = Path(path).read_bytes()
    try:
        return closure_from_dict(parse_closure_json(raw))
    except ClosureError as exc:
        raise ClosureError(f"{os.fspath(path)}: {exc}") from None
