"""Operator requests: what the master does for each, and the answer it sends back."""

from __future__ import annotations

from dataclasses import replace

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import ClosureError, OptimizerError
from ..nn import model_to_dict, to_convnetjs
from ..optim import Hyperparameter, from_wire
from ..protocol import (
    Ack,
    CreateProject,
    DataRegistered,
    DeleteProject,
    GetModel,
    ListProjects,
    ListZoo,
    Message,
    Model,
    Pause,
    ProjectList,
    RegisterData,
    RegisterDataServer,
    RemoveWorker,
    Resume,
    SetAccess,
    SetOperatorToken,
    SetHyperparameters,
    Subscribe,
    Unsubscribe,
    ZooEntry,
    ZooList,
)
from ..training import TrainingError
from ._connection import Connection, RequestError

if TYPE_CHECKING:
    from ..closure import Closure
    from ._server import Master


def answer_request(master: Master, conn: Connection, msg: Message) -> Message:
    """Carry out ``msg`` (already checked: the sender may send it) and return the answer.
    Raises ``RequestError`` for well-formed requests the master refuses."""
    request_id: str = getattr(msg, "request_id")
    if isinstance(msg, CreateProject):
        if msg.closure is not None or msg.zoo is not None:
            master.create_project_from_closure(
                msg.closure if msg.closure is not None else _zoo_entry(master, msg.zoo or ""),
                msg.name, iteration_time=msg.iteration_time,
                optimizer=msg.optimizer, hyperparameters=_hyperparameters(msg.hyperparameters),
                samples_per_iteration=msg.samples_per_iteration, labels=msg.labels,
                training=msg.training)
            _access(master, msg)
            return Ack(request_id=request_id)
        master.create_project(msg.name, [dict(d) for d in msg.spec or ()],
                              iteration_time=msg.iteration_time or 2.0,
                              optimizer=msg.optimizer or "adagrad",
                              hyperparameters=_hyperparameters(msg.hyperparameters),
                              labels=msg.labels,
                              samples_per_iteration=msg.samples_per_iteration,
                              training=msg.training)
        _access(master, msg)
    elif isinstance(msg, DeleteProject):
        master.delete_project(msg.project)
    elif isinstance(msg, (Pause, Resume)):
        project = master.project(msg.project)
        project.paused = isinstance(msg, Pause)
        master.log_event("paused" if project.paused else "resumed",
                      f"project {project.name} {'paused' if project.paused else 'resumed'}",
                      project.name)
        master.wake(project.name)
        master.save_soon(project.name)  # a restarted master keeps the project as it is
    elif isinstance(msg, SetHyperparameters):
        project = master.project(msg.project)
        try:
            if msg.training is not None:
                project.check_training(msg.training)
            if msg.hyperparameters:
                project.set_hyperparameters(**from_wire(msg.hyperparameters))
            if msg.training is not None:
                project.set_training(msg.training)
        except (OptimizerError, TrainingError) as exc:
            raise RequestError("invalid_value", str(exc)) from None
        if msg.iteration_time is not None:
            project.iteration_time = msg.iteration_time
        if msg.iteration_time is not None or msg.training is not None or (
                msg.hyperparameters and project.outer is not None):
            # Workers read T, the training settings and (local) the inner optimizer's
            # hyperparameters from their project info.
            master.broadcast_project_changed(project)
        master.save_soon(project.name)
        master.log_event("configured", f"project {project.name}: "
                      + ", ".join(f"{k}={v:g}" for k, v in msg.hyperparameters.items())
                      + (f" T={msg.iteration_time:g} s" if msg.iteration_time else "")
                      + (" training settings" if msg.training is not None else ""),
                      project.name)
    elif isinstance(msg, SetOperatorToken):
        master.set_operator_token(msg.operator_token, drop_operators=msg.drop_operators,
                                  keep=conn)
    elif isinstance(msg, SetAccess):
        master.set_access(msg.project, join_token=msg.join_token,
                          contributor_token=msg.contributor_token, keep=msg.keep)
        if msg.drop_members:
            for member in [c for c in master.connections.values()
                           if c.project == msg.project and c.role != "operator"]:
                member.say_bye("removed", "the project's join token changed: join again")
                master.forget(member, log_event=False)
    elif isinstance(msg, RemoveWorker):
        target = master.connections.get(msg.worker_id)
        if target is None or target.role == "operator":
            raise RequestError("unknown_worker", f"no worker with id {msg.worker_id}")
        target.say_bye("removed", "removed by an operator")
        master.forget(target, log_event=False)
        master.log_event("removed", f"worker {msg.worker_id} removed by an operator",
                      target.project, msg.worker_id)
    elif isinstance(msg, RegisterData):
        names = list(msg.label_names)
        project = master.register_data(msg.project, msg.split, msg.ids, names)
        return DataRegistered(request_id=request_id, project=project.name,
                              labels=tuple(project.net.labels), train=project.allocator.total,
                              test=len(project.test_ids))
    elif isinstance(msg, RegisterDataServer):
        master.register_data_server(conn, msg.url, msg.store)
    elif isinstance(msg, Subscribe):
        master.subscribe(conn, msg.project, msg.interval)
    elif isinstance(msg, Unsubscribe):
        conn.subscription = None
    elif isinstance(msg, ListZoo):
        return ZooList(request_id=request_id, entries=tuple(_zoo_listing(master)))
    elif isinstance(msg, ListProjects):
        summaries = tuple(p.summary() for p in master.projects.values())
        if conn.authorized:  # the token hashes, for standalone data servers
            summaries = tuple(replace(s, join_sha256=master.access.get(s.name).join_hash,
                                      contributor_sha256=master.access.get(s.name)
                                      .contributor_hash) for s in summaries)
        return ProjectList(request_id=request_id, projects=summaries)
    elif isinstance(msg, GetModel):
        project = master.project(msg.project)
        if msg.format == "closure":
            model = master.closure_of(project.name)
        elif msg.format == "convnetjs":
            model = to_convnetjs(project.net)
        else:
            model = model_to_dict(project.net)
        return Model(request_id=request_id, project=project.name, format=msg.format,
                     model=model)
    return Ack(request_id=request_id)


def _zoo_entry(master: Master, name: str) -> Closure:
    if master.zoo is None:
        raise RequestError("invalid_value", "create_project.zoo: this master has no model zoo "
                           "(start it with --zoo DIR)")
    try:
        return master.zoo.get(name)
    except ClosureError as exc:
        raise RequestError("invalid_value", f"create_project.zoo: {exc}") from None


def _zoo_listing(master: Master) -> list[ZooEntry]:
    """The readable entries of the master's zoo, as the protocol shows them."""
    if master.zoo is None:
        return []
    listing = []
    for entry in master.zoo.entries():
        closure = entry.closure
        if closure is None:
            continue  # unreadable: ``mlitb zoo list`` on the master's machine says why
        net = closure.net()
        listing.append(ZooEntry(
            name=entry.name, parameter_count=net.num_params, input_shape=net.input_shape,
            labels=tuple(closure.labels), optimizer=closure.optimizer_name,
            iteration=closure.iteration,
            test_error=closure.test_error[-1].error if closure.test_error else None,
            created=closure.created))
    return listing


def _hyperparameters(values: Mapping[str, float]) -> dict[str, Hyperparameter]:
    try:
        return from_wire(values)
    except OptimizerError as exc:
        raise RequestError("invalid_value", f"hyperparameters.{exc}") from None


def _access(master: Master, msg: CreateProject) -> None:
    if msg.join_token is not None or msg.contributor_token is not None:
        master.set_access(msg.name, join_token=msg.join_token,
                          contributor_token=msg.contributor_token)
