"""A master stand-in: plays recorded status snapshots and answers requests the way a master would.

For snapshot tests and screenshots (deterministic: no clock, no network) and for trying the
console offline (``mlitb console --replay``). Requests change the replayed state and post a new
snapshot; hyperparameters are checked by the real optimizer code, specs by the real network
code, so the errors read exactly like a master's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from textual.app import App

from mlitb.client import MasterUnreachableError, RequestRefusedError
from mlitb.errors import ClosureError, MlitbError, ModelFormatError, OptimizerError
from mlitb.protocol import (
    Ack,
    ClientMessage,
    CreateProject,
    DataCounts,
    DeleteProject,
    Event,
    GetModel,
    ListProjects,
    ListZoo,
    Model,
    Pause,
    ProjectList,
    ProjectStatus,
    ProjectSummary,
    RemoveWorker,
    Resume,
    SetHyperparameters,
    Split,
    Status,
    ZooList,
    encode_text,
)

from ._app_messages import LinkChanged, LinkState, StatusReceived
from ._backend import Progress

M = TypeVar("M")
REPLAY_URL = "ws://replay.invalid:8000"


class ReplayBackend:
    """Posts ``snapshots`` in order when started; ``link`` is the connection state shown
    (default: connected, with the operator token)."""

    def __init__(self, snapshots: Sequence[Status], *, url: str = REPLAY_URL,
                 link: LinkState | None = None, upload_delay: float = 0.0) -> None:
        self.url = url
        self.snapshots = list(snapshots)
        self.link = link or LinkState("connected", url, authorized=True,
                                      data_url="http://replay.invalid:8001")
        self.upload_delay = upload_delay
        self.requests: list[ClientMessage] = []
        self._app: App[Any] | None = None
        self._time = max((s.time for s in self.snapshots), default=0.0)
        last = self.snapshots[-1] if self.snapshots else Status(time=0.0)
        self.projects: dict[str, ProjectStatus] = {p.name: p for p in last.projects}

    def start(self, app: App[Any]) -> None:
        self._app = app
        app.post_message(LinkChanged(self.link))
        for snapshot in self.snapshots:
            app.post_message(StatusReceived(snapshot))

    async def stop(self) -> None:
        self._app = None

    def _publish(self, kind: str, message: str, project: str | None = None,
                 worker_id: int | None = None) -> None:
        self._time += 1.0
        event = Event(time=self._time, kind=kind, message=message,  # type: ignore[arg-type]
                      project=project, worker_id=worker_id)
        if self._app is not None:
            self._app.post_message(StatusReceived(Status(
                time=self._time, projects=tuple(self.projects.values()), events=(event,))))

    def _project(self, name: str) -> ProjectStatus:
        if name not in self.projects:
            raise RequestRefusedError("unknown_project", f"no project named {name!r}")
        return self.projects[name]

    async def request(self, message: ClientMessage, expect: type[M]) -> M:
        if not self.link.online:
            raise MasterUnreachableError(f"not connected to the master at {self.url}")
        encode_text(message)  # the same validation a live request gets
        self.requests.append(message)
        if not self.link.authorized and getattr(type(message), "TOKEN", False):
            raise RequestRefusedError("forbidden", f"{type(message).TYPE}: needs the operator "
                                      f"token in the hello")
        reply = self._answer(message)
        if not isinstance(reply, expect):
            raise MlitbError(f"expected {expect.__name__}, got {type(reply).__name__}")
        await asyncio.sleep(0)
        return reply

    def _answer(self, message: ClientMessage) -> object:
        ack = Ack(request_id=getattr(message, "request_id", "-"))
        if isinstance(message, (Pause, Resume)):
            project = self._project(message.project)
            state = "paused" if isinstance(message, Pause) else "running"
            self.projects[project.name] = replace(project, state=state)  # type: ignore[arg-type]
            self._publish(state if state == "paused" else "resumed",
                          f"project {project.name} {'paused' if state == 'paused' else 'resumed'}",
                          project.name)
            return ack
        if isinstance(message, SetHyperparameters):
            return self._configure(message)
        if isinstance(message, RemoveWorker):
            for project in list(self.projects.values()):
                kept = tuple(w for w in project.workers if w.worker_id != message.worker_id)
                if len(kept) != len(project.workers):
                    self.projects[project.name] = replace(project, workers=kept)
                    self._publish("removed", f"worker {message.worker_id} removed by an operator",
                                  project.name, message.worker_id)
                    return ack
            raise RequestRefusedError("unknown_worker", f"no worker with id {message.worker_id}")
        if isinstance(message, CreateProject):
            return self._create(message)
        if isinstance(message, DeleteProject):
            self._project(message.project)
            del self.projects[message.project]
            self._publish("deleted", f"project {message.project} deleted", message.project)
            return ack
        if isinstance(message, ListProjects):
            return ProjectList(request_id=message.request_id, projects=tuple(
                ProjectSummary(name=p.name, state=p.state, iteration=p.iteration,
                               iteration_time=p.iteration_time, optimizer=p.optimizer,
                               input_shape=(1, 8, 8), labels=tuple(str(k) for k in range(10)),
                               workers=len(p.workers), data=p.data)
                for p in self.projects.values()))
        if isinstance(message, GetModel):
            return self._model(message)
        if isinstance(message, ListZoo):
            return ZooList(request_id=message.request_id, entries=())
        return ack

    def _configure(self, message: SetHyperparameters) -> Ack:
        from mlitb.optim import make_optimizer

        project = self._project(message.project)
        merged = {**project.hyperparameters, **message.hyperparameters}
        try:
            make_optimizer(project.optimizer, 1, **{k: _plain(k, v) for k, v in merged.items()})
        except OptimizerError as exc:
            raise RequestRefusedError("invalid_value", str(exc)) from None
        self.projects[project.name] = replace(
            project, hyperparameters=merged,
            iteration_time=message.iteration_time or project.iteration_time)
        changes = ", ".join(f"{k}={v:g}" for k, v in message.hyperparameters.items())
        if message.iteration_time:
            changes += f" T={message.iteration_time:g} s"
        self._publish("configured", f"project {project.name}: {changes.strip(', ')}",
                      project.name)
        return Ack(request_id=message.request_id)

    def _create(self, message: CreateProject) -> Ack:
        from mlitb.closure import closure_from_dict
        from mlitb.nn import Net
        from mlitb.optim import make_optimizer

        if message.name in self.projects:
            raise RequestRefusedError("project_exists", f"project {message.name!r} exists "
                                      f"already")
        try:
            if message.spec is not None:
                net = Net([dict(layer) for layer in message.spec])
            elif message.closure is not None:
                net = closure_from_dict(message.closure).net()
            else:
                raise RequestRefusedError("invalid_value", "the replayed master has no zoo")
            make_optimizer(message.optimizer or "adagrad", net.num_params,
                           **dict(message.hyperparameters))
        except (ModelFormatError, OptimizerError, ClosureError) as exc:
            raise RequestRefusedError("invalid_value", str(exc)) from None
        self.projects[message.name] = ProjectStatus(
            name=message.name, state="waiting", iteration=0, parameter_version=0,
            iteration_time=message.iteration_time or 2.0,
            optimizer=message.optimizer or "adagrad",
            hyperparameters=dict(message.hyperparameters),
            data=DataCounts(total=0, allocated=0, cached=0, unallocated=0))
        self._publish("created", f"project {message.name} created ({net.num_params} "
                      f"parameters)", message.name)
        return Ack(request_id=message.request_id)

    def _model(self, message: GetModel) -> Model:
        from mlitb.datasets import DIGITS_SPEC
        from mlitb.nn import Net, model_to_dict, to_convnetjs

        self._project(message.project)
        if message.format == "closure":
            raise RequestRefusedError("invalid_value", "a replayed master has no research "
                                      "closures; choose model or convnetjs")
        net = Net(DIGITS_SPEC, seed=0)
        model = to_convnetjs(net) if message.format == "convnetjs" else model_to_dict(net)
        return Model(request_id=message.request_id, project=message.project,
                     format=message.format, model=model)

    async def upload(self, project: str, archive: Path, split: Split,
                     progress: Progress) -> dict[str, Any]:
        self._project(project)
        try:
            total = archive.stat().st_size
        except OSError as exc:
            raise MlitbError(f"cannot read {archive}: {exc.strerror}") from None
        for step in range(1, 5):
            progress(total * step // 4, total)
            await asyncio.sleep(self.upload_delay)
        self._publish("data", f"project {project}: 100 {split} ids registered", project)
        return {"count": 100, "labels": [str(k) for k in range(10)],
                "counts": {str(k): 10 for k in range(10)}}


def _plain(name: str, value: float) -> float | int | bool:
    """Status reports every hyperparameter as a number; the optimizer wants ints and bools back."""
    if name == "nesterov":
        return bool(value)
    if name == "lr_decay_every" and float(value).is_integer():
        return int(value)
    return value
