"""The projects a master runs: creation (from a spec or a closure), restore after a restart,
deletion, access tokens, data registration, and their closures on disk.

``ProjectRegistry`` holds no sockets and runs no tasks of its own: what the rest of the master
must act on when a project is added or deleted, or when data arrives, it hears through the hook
methods (``_project_added``, ``_project_deleting``, ``_data_registered``) that ``Master`` fills
in (start or stop the project's loop, tell its members, wake it). Saving is asynchronous (the
closure is written in a thread) and never raises: a failure is an ``error`` event.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import trio

from ..closure import (
    Closure,
    Zoo,
    closure_from_dict,
    closure_from_project,
    closure_to_dict,
    manifest_from_store,
    project_from_closure,
)
from ..errors import ClosureError, MlitbError, ModelFormatError, OptimizerError
from ..nn import Net, layer_table
from ..optim import make_optimizer
from ..protocol import MAX_PARAMETERS, Status, Training
from ..training import LabelConflictError, Project, TrainingError, check_training
from ._access import Access, AccessTable
from ._connection import RequestError
from ._eventlog import EventLog
from ._persist import ProjectFiles, Unreadable

log = logging.getLogger("mlitb.master")

AUTOSAVE_EVERY = 10


class ProjectRegistry:
    """The projects by name, their access tokens, their saved closures and the event log.

    ``operator_token``: the secret operators send in their hello (generated when None).
    ``files``: where projects persist (``ProjectFiles``); with it every project's closure is
    saved every ``autosave_every`` iterations, when its settings change and when the master
    stops, and ``restore()`` brings the projects back after a restart.
    ``zoo``: closures operators and browsers can start projects from.
    """

    def __init__(self, *, operator_token: str | None = None, files: ProjectFiles | None = None,
                 autosave_every: int = AUTOSAVE_EVERY, zoo: Zoo | None = None) -> None:
        if autosave_every < 1:
            raise ValueError(f"autosave_every must be >= 1, got {autosave_every}")
        self.files = files
        self.zoo = zoo
        self.autosave_every = autosave_every
        self._save_locks: dict[str, trio.Lock] = {}
        self.operator_token = operator_token or secrets.token_urlsafe(16)
        # Per-project join and contributor tokens, hashed (DATA_DIR/projects/access.json).
        self.access = AccessTable(files.root if files is not None else None)
        self.projects: dict[str, Project] = {}
        self.events = EventLog(self.uptime)
        # Called with each new project's name (the embedded data server registers stored data).
        self.on_project_created: list[Callable[[str], None]] = []
        # The data manifest of a project (hashes of its samples) for research closures.
        self.manifest_provider: Callable[[str], Any] | None = None

    # -- what the master fills in -----------------------------------------------------------------
    def uptime(self) -> float:
        """Seconds since the master started serving: the time base of events and status."""
        return 0.0

    def _project_added(self, name: str, *, save: bool) -> None:
        """A project was created or restored (``save``: write its closure soon)."""

    def _project_deleting(self, name: str) -> None:
        """Project ``name`` is about to be removed: its members and its loop must end."""

    def _data_registered(self, project: Project, *, grown: bool, new_test: Sequence[int]) -> None:
        """Data was registered: the output layer may have ``grown``; ``new_test`` ids arrived."""

    # -- events -----------------------------------------------------------------------------------
    def log_event(self, kind: str, message: str, project: str | None = None,
                  worker_id: int | None = None) -> None:
        """An event for operators (status subscribers see it) and the log."""
        self.events.log(kind, message, project, worker_id)

    # -- projects ---------------------------------------------------------------------------------
    def create_project(self, name: str, spec: Sequence[dict[str, Any]], *,
                       iteration_time: float = 2.0, optimizer: str = "adagrad",
                       hyperparameters: dict[str, float] | None = None,
                       labels: Sequence[str] = (), seed: int | None = None,
                       samples_per_iteration: int | None = None,
                       training: Training | None = None) -> Project:
        """Create and start a project. ``training``: the algorithm, schedule and augmentation
        (default: the paper's gradient algorithm). Raises RequestError for a name in use or a
        bad spec or setting."""
        if name in self.projects:
            raise RequestError("project_exists", f"project {name!r} exists already")
        try:
            # Counted before anything is allocated: a spec may ask for billions of parameters.
            count = sum(layer["parameters"] for layer in layer_table(spec))
            if count > MAX_PARAMETERS:
                raise ModelFormatError(f"the net has {count:,} parameters; a project carries "
                                       f"at most {MAX_PARAMETERS:,} (one parameters frame)")
            net = Net(spec, seed=seed, labels=list(labels) or None)
            l1, l2 = net.decay_multipliers()
            opt = make_optimizer(optimizer, net.num_params, **(hyperparameters or {}),
                                 l1_mul=l1, l2_mul=l2)
            project = Project(name, net, opt, optimizer, iteration_time,
                              samples_per_iteration=samples_per_iteration,
                              seeds={} if seed is None else {"init": seed}, training=training)
        except (ModelFormatError, OptimizerError, TrainingError) as exc:
            raise RequestError("invalid_value", str(exc)) from None
        self._add(project, f"project {name} created ({net.num_params} parameters, "
                  f"{optimizer}, {project.training.algorithm}, T={iteration_time:g} s"
                  + (f", {samples_per_iteration} samples per iteration, deterministic"
                     if samples_per_iteration is not None else "") + ")")
        return project

    def create_project_from_closure(
            self, closure: Closure | Mapping[str, Any], name: str | None = None, *,
            iteration_time: float | None = None, optimizer: str | None = None,
            hyperparameters: dict[str, float] | None = None,
            samples_per_iteration: int | None = None, labels: Sequence[str] = (),
            training: Training | None = None) -> Project:
        """Create and start a project that continues a research closure (a ``Closure`` or its
        JSON object, checked): its net, optimizer and state, T, loop settings, iteration
        counters and history, under ``name`` (default: the closure's). ``iteration_time``,
        ``samples_per_iteration``: None keeps the closure's. ``optimizer``: None or the
        closure's keeps its state; another starts that optimizer afresh. ``hyperparameters``
        change the (kept or new) optimizer's. ``training``: None keeps the closure's; other
        settings (even another algorithm) start from here, with a fresh outer optimizer. A
        deterministic project starts a new replay record here. Raises RequestError for a name
        in use or a closure that fails its checks.
        """
        try:
            if not isinstance(closure, Closure):
                closure = closure_from_dict(closure)
        except ClosureError as exc:
            raise RequestError("invalid_value", f"create_project.closure: {exc}") from None
        name = name or closure.name
        if name in self.projects:
            raise RequestError("project_exists", f"project {name!r} exists already")
        if labels and tuple(labels) != closure.labels:
            raise RequestError("invalid_value", f"create_project.labels: {list(labels)[:6]} "
                               f"differ from the closure's label map {list(closure.labels)[:6]}")
        changes: dict[str, Any] = {}
        if iteration_time is not None:
            changes["iteration_time"] = iteration_time
        if samples_per_iteration is not None:
            changes["samples_per_iteration"] = samples_per_iteration
        if changes:
            loop = closure.loop
            closure = closure.replace(loop=type(loop)(
                iteration_time=changes.get("iteration_time", loop.iteration_time),
                samples_per_iteration=changes.get("samples_per_iteration",
                                                  loop.samples_per_iteration),
                deterministic=changes.get("samples_per_iteration",
                                          loop.samples_per_iteration) is not None,
                allocation=loop.allocation, budget_config=loop.budget_config, seeds=loop.seeds,
                training=loop.training, samples_trained=loop.samples_trained,
                seconds_trained=loop.seconds_trained))
        if training is not None:
            try:
                training = check_training(training)
            except TrainingError as exc:
                raise RequestError("invalid_value", str(exc)) from None
            if training != closure.loop.training:
                fresh = training.algorithm != closure.loop.training.algorithm
                closure = closure.replace(
                    loop=dataclasses.replace(closure.loop, training=training),
                    outer_step=0 if fresh else closure.outer_step,
                    outer_velocity=None if fresh else closure.outer_velocity)
        try:
            project = project_from_closure(closure, name)
            if optimizer is not None and optimizer != closure.optimizer_name:
                l1, l2 = project.net.decay_multipliers()
                project.optimizer = make_optimizer(optimizer, project.net.num_params,
                                                   l1_mul=l1, l2_mul=l2)
                project.optimizer_name = optimizer
            if hyperparameters:
                project.set_hyperparameters(**hyperparameters)
        except (ClosureError, ModelFormatError, OptimizerError, TrainingError) as exc:
            raise RequestError("invalid_value", str(exc)) from None
        self._add(project, f"project {name} created from the closure of {closure.name} "
                  f"(iteration {closure.iteration}, {project.net.num_params} parameters, "
                  f"{project.optimizer_name}, T={project.iteration_time:g} s)")
        return project

    def restore(self) -> tuple[list[str], list[Unreadable]]:
        """Recreate every project saved in ``files`` (call before ``serve``): the names
        restored, and the files that could not be read (renamed aside, logged)."""
        if self.files is None:
            return [], []
        closures, problems = self.files.load_all()
        names = []
        for closure in closures:
            if closure.name in self.projects:
                continue
            project = project_from_closure(closure, keep_record=True)
            project.created = closure.created
            project.paused = closure.loop.paused  # a restart does not undo an operator's pause
            self._add(project, f"project {project.name} restored at iteration "
                      f"{project.iteration} (parameter version {project.parameter_version})",
                      save=False)
            names.append(project.name)
        for problem in problems:
            self.log_event("error", f"could not restore {problem.path.name}: {problem.reason}")
        return names, problems

    def _add(self, project: Project, message: str, *, save: bool = True) -> None:
        name = project.name
        self.projects[name] = project
        self.log_event("created", message, name)
        self._project_added(name, save=save)
        for hook in self.on_project_created:
            hook(name)

    # -- persistence ------------------------------------------------------------------------------
    async def save_project(self, name: str) -> None:
        """Write the project's closure to ``files`` (in a thread; atomic). Saves of one name
        run one at a time, each a snapshot taken when its turn comes; a project deleted
        meanwhile leaves no file behind. Failures are logged as events, never raised."""
        files, project = self.files, self.projects.get(name)
        if files is None or project is None:
            return
        lock = self._save_locks.setdefault(name, trio.Lock())
        async with lock:
            if self.projects.get(name) is not project:
                return
            try:
                snapshot = closure_from_project(project)  # copies, taken in the event loop
            except Exception as exc:  # noqa: BLE001 (an autosave never takes the master down)
                if not isinstance(exc, MlitbError):
                    log.exception("project %s: cannot snapshot its closure", name)
                self.log_event("error", f"project {name}: cannot save its closure: {exc}", name)
                return
            if project.created is None:
                project.created = snapshot.created
            provider = self.manifest_provider

            def write() -> None:
                closure = snapshot
                if provider is not None:
                    try:
                        closure = snapshot.replace(data=manifest_from_store(provider(name)))
                    except MlitbError:  # no data stored yet
                        pass
                files.save(closure)

            try:
                await trio.to_thread.run_sync(write)
            except Exception as exc:  # noqa: BLE001 (an autosave never takes the master down)
                if not isinstance(exc, (OSError, MlitbError)):
                    log.exception("project %s: autosave failed", name)
                self.log_event("error", f"project {name}: autosave to {files.path(name)} failed "
                               f"(the previous file is kept): {exc}", name)
            if self.projects.get(name) is not project:  # deleted while it was being written
                files.remove(name)

    def delete_project(self, name: str) -> None:
        """Delete a project: its workers are told to leave, its saved closure is removed."""
        self.project(name)
        self._project_deleting(name)
        del self.projects[name]
        self.access.remove(name)  # a later project of this name starts open
        if self.files is not None:
            lock = self._save_locks.get(name)
            if lock is None or not lock.locked():  # else the save in flight removes it
                self.files.remove(name)
        self.log_event("deleted", f"project {name} deleted", name)

    # -- access -----------------------------------------------------------------------------------
    def set_access(self, name: str, *, join_token: str | None = None,
                   contributor_token: str | None = None,
                   keep: Collection[str] = ()) -> None:
        """Give project ``name`` a join token (None: open to every trainer, tracker and stats
        worker) and a contributor token (None: only the operator adds data), except those named
        in ``keep`` (``"join"``, ``"contributor"``), which stay as they are. Only hashes are
        kept. Members already connected stay."""
        self.project(name)
        old, new = self.access.get(name), Access.from_tokens(join_token, contributor_token)
        access = Access(join_hash=old.join_hash if "join" in keep else new.join_hash,
                        contributor_hash=old.contributor_hash if "contributor" in keep
                        else new.contributor_hash)
        self.access.set(name, access)
        self.log_event("configured", f"project {name}: "
                       + ("open to every trainer" if access.open else "needs a join token")
                       + (", takes contributions" if access.contributor_hash else ""), name)

    def may_contribute(self, name: str, token: str | None) -> bool:
        """Whether ``token`` is project ``name``'s contributor token (constant time)."""
        return name in self.projects and self.access.get(name).may_contribute(token)

    def is_operator_token(self, token: str) -> bool:
        """Whether ``token`` is the operator token now (constant time)."""
        return secrets.compare_digest(token.encode(), self.operator_token.encode())

    def may_read(self, name: str, token: str | None) -> bool:
        """Whether ``token`` may read project ``name``'s data on the data server: anyone for an
        open project (the paper's default, and a project the master does not know); for a
        join-token project its join token, its contributor token or the operator token."""
        access = self.access.get(name)
        if name not in self.projects or access.open:
            return True
        return token is not None and (
            access.may_join(token) or access.may_contribute(token)
            or self.is_operator_token(token))

    def project(self, name: str) -> Project:
        project = self.projects.get(name)
        if project is None:
            raise RequestError("unknown_project", f"no project named {name!r}")
        return project

    def plan_labels(self, name: str, names: Sequence[str]) -> tuple[str, ...]:
        """The label list the data server stores an upload naming ``names`` under
        (``Project.plan_labels``): registering it afterwards cannot conflict."""
        return tuple(self.project(name).plan_labels(names))

    def register_data(self, name: str, split: str, ids: Sequence[int],
                      label_names: Sequence[str]) -> Project:
        """Called (directly, or through ``register_data`` messages) by the data server."""
        project = self.project(name)
        try:
            grown = project.register_labels(label_names)
        except LabelConflictError as exc:
            raise RequestError("invalid_value", str(exc)) from None
        new_test = project.add_data(split, ids)
        if grown:
            self.log_event("configured", f"project {name}: output layer grew to "
                           f"{len(project.net.labels)} classes", name)
        self._data_registered(project, grown=bool(grown), new_test=new_test)
        self.log_event("data", f"project {name}: {len(ids)} {split} ids registered", name)
        return project

    def statistics(self) -> dict[str, Any]:
        """A snapshot of the master's state (the same content as the status messages)."""
        return {name: p.status() for name, p in self.projects.items()}

    def closure_of(self, name: str) -> dict[str, Any]:
        """The research closure of a project as it is now (docs/closure.md)."""
        project = self.project(name)
        manifest = None
        if self.manifest_provider is not None:
            try:
                manifest = self.manifest_provider(name)
            except MlitbError:  # no data stored yet
                manifest = None
        try:
            return closure_to_dict(closure_from_project(project, manifest))
        except ClosureError as exc:
            raise RequestError("internal", f"project {name}: its closure cannot be written: "
                               f"{exc}") from None

    def status(self, project: str | None) -> Status:
        names = [project] if project is not None else list(self.projects)
        return Status(time=self.uptime(),
                      projects=tuple(self.projects[n].status() for n in names
                                     if n in self.projects))

