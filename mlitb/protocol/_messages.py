"""Every control message: one frozen dataclass per JSON ``type``, its fields typed and bounded.

Field annotations are the specification: ``_schema`` turns each dataclass into the msgspec Struct
that decodes and encodes it (its wire struct), and docs/protocol.md describes the same fields.
Fields with a default may be omitted on the wire (the encoder always writes them), except those in
``WIRE_REQUIRED``. ``FROM`` says who may send a message: roles, or ``"master"``;
``TOKEN`` marks operator actions that need the operator token; ``LARGE`` marks the types allowed up
to ``MAX_LARGE_TEXT_FRAME``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from ._codec import Wire
from ._limits import (
    MAX_DATA_SERVERS,
    MAX_EVENTS_PER_STATUS,
    MAX_HISTORY_POINTS,
    MAX_HOST_LENGTH,
    MAX_HYPERPARAMETERS,
    MAX_IDS_PER_MESSAGE,
    MAX_ITERATION_TIME,
    MAX_LABEL_LENGTH,
    MAX_LABELS,
    MAX_LAYERS,
    MAX_NAME_LENGTH,
    MAX_PARAMETERS,
    MAX_PROJECTS,
    MAX_STATUS_INTERVAL,
    MAX_TEXT_LENGTH,
    MAX_TOKEN_LENGTH,
    MAX_U32,
    MAX_URL_LENGTH,
    MAX_WORKERS_PER_STATUS,
    MIN_ITERATION_TIME,
    MIN_STATUS_INTERVAL,
    PROTOCOL_VERSION,
    ROLES,
    ByeReason,
    ClientKind,
    ErrorCode,
    EventKind,
    ModelFormat,
    ProjectState,
    Role,
    Split,
    WorkerState,
)
from ._schema import Check, Invalid, Length, Pattern, Printable, Range, Unique

# -- field types -----------------------------------------------------------------------------------
U32 = Annotated[int, Range(0, MAX_U32)]
Positive = Annotated[int, Range(1, MAX_U32)]
Ids = Annotated[tuple[U32, ...], Length(0, MAX_IDS_PER_MESSAGE), Unique()]
NonNegative = Annotated[float, Range(0.0, math.inf)]
Fraction = Annotated[float, Range(0.0, 1.0)]
IterationTime = Annotated[float, Range(MIN_ITERATION_TIME, MAX_ITERATION_TIME)]
Name = Annotated[str, Pattern(
    rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME_LENGTH - 1}}}",
    f"1-{MAX_NAME_LENGTH} characters from A-Z a-z 0-9 _ . - starting with a letter or digit",
)]
Identifier = Annotated[str, Pattern(r"[a-z][a-z0-9_]{0,31}", "a lower-case identifier (a-z 0-9 _)")]
Label = Annotated[str, Length(1, MAX_LABEL_LENGTH), Printable()]
Labels = Annotated[tuple[Label, ...], Length(0, MAX_LABELS), Unique()]
Host = Annotated[str, Length(1, MAX_HOST_LENGTH), Printable()]
Token = Annotated[str, Length(1, MAX_TOKEN_LENGTH), Printable()]
TokenHash = Annotated[str, Pattern(r"[0-9a-f]{64}", "64 lowercase hex digits (a SHA-256)")]
RequestId = Annotated[str, Pattern(r"[!-~]{1,64}", "1-64 printable ASCII characters, no spaces")]
Text = Annotated[str, Length(0, MAX_TEXT_LENGTH)]
Url = Annotated[str, Length(1, MAX_URL_LENGTH), Pattern(r"https?://\S+", "an http(s):// URL")]
Hyperparameters = Annotated[dict[Identifier, float], Length(0, MAX_HYPERPARAMETERS)]
Layer = Annotated[dict[str, Any], Check(
    lambda layer: isinstance(layer.get("type"), str), "each layer needs a string field 'type'"
)]
Spec = Annotated[tuple[Layer, ...], Length(1, MAX_LAYERS)]
JsonObject = dict[str, Any]
WorkerRole = Literal["trainer", "tracker", "stats"]
AccessToken = Literal["join", "contributor"]


class MessageBase:
    """Base of every control message class (``Message`` is the union of them all)."""

    TYPE: ClassVar[str]
    FROM: ClassVar[frozenset[str]] = frozenset({"master"})
    TOKEN: ClassVar[bool] = False
    LARGE: ClassVar[bool] = False


_ANYONE = frozenset(ROLES)
_OPERATOR = frozenset({"operator"})


def _disjoint(a: tuple[int, ...], b: tuple[int, ...], name_a: str, name_b: str) -> None:
    if len(a) + len(b) > MAX_IDS_PER_MESSAGE:
        raise Invalid(f"{name_a} and {name_b} together must have at most "
                      f"{MAX_IDS_PER_MESSAGE} ids, got {len(a) + len(b)}", name_b)
    if b and not set(a).isdisjoint(b):
        raise Invalid(f"must not share ids with '{name_a}'", name_b)


# == training settings (shared by create_project, set_hyperparameters, welcome, closures) ========
Algorithm = Literal["gradient", "local"]
OuterOptimizer = Literal["average", "nesterov"]
ScheduleKind = Literal["constant", "cosine", "linear"]
HorizonUnit = Literal["samples", "seconds"]
Aggregation = Literal["mean", "median", "trimmed_mean", "centered_clip"]


@dataclass(frozen=True, kw_only=True)
class Training:
    """How a project trains (``mlitb.training`` computes with it; docs/protocol.md explains it).

    ``algorithm``: ``gradient`` (the paper's: workers return gradient sums, the master averages
    them into one optimizer step per iteration) or ``local`` (workers take optimizer steps of
    ``batch_size`` samples on their own data for their whole budget and return the parameter
    delta; the master averages the deltas and applies the outer optimizer). The learning-rate
    schedule scales the project's learning rate by the progress over ``horizon`` (samples or
    seconds of training): a linear warmup over the first ``warmup`` of it, then ``cosine`` or
    ``linear`` decay to ``final_lr`` times the peak; ``constant`` (or no horizon) keeps it.
    ``shift`` / ``flip``: random translation by up to that many pixels (zero padded) and
    horizontal flips of training images, drawn by the workers."""

    algorithm: Algorithm = "gradient"
    batch_size: Annotated[int, Range(1, 1024)] = 32
    outer_optimizer: OuterOptimizer = "average"
    outer_learning_rate: Annotated[float, Range(0.001, 10.0)] = 1.0
    outer_momentum: Annotated[float, Range(0.0, 0.999)] = 0.9
    schedule: ScheduleKind = "constant"
    horizon: Annotated[float, Range(1.0, 1e15)] | None = None
    horizon_unit: HorizonUnit = "samples"
    warmup: Fraction = 0.0
    final_lr: Fraction = 0.0
    shift: Annotated[int, Range(0, 16)] = 0
    flip: bool = False
    aggregation: Aggregation = "mean"
    """How the master reduces a round's results (``mlitb.training._reduce``): ``mean`` (the
    paper's weighted sum, no checks), or a robust reducer over per-sample results after the
    per-result checks: coordinate-wise ``median``, ``trimmed_mean`` (``trim_fraction`` cut from
    each end of every coordinate), ``centered_clip`` (Karimireddy et al. 2021, radius
    ``clip_radius`` times the median distance from the coordinate-wise median)."""
    trim_fraction: Annotated[float, Range(0.0, 0.45)] = 0.25
    clip_radius: Annotated[float, Range(0.01, 100.0)] = 0.5
    norm_clip: Annotated[float, Range(1.0, 1e6)] | None = 4.0
    """Robust reducers: a result's norm per sample is clipped to this multiple of the round's
    (lower) median norm; None: no clipping."""
    norm_refuse: Annotated[float, Range(1.0, 1e12)] | None = 100.0
    """Robust reducers: a result whose norm per sample is beyond this multiple of the round's
    (lower) median is refused (a strike); None: none is refused."""
    sample_factor: Annotated[float, Range(1.0, 1e6)] = 1.0
    """Robust reducers: a result weighs at most this multiple of the round's median rate
    (samples per second of budget) times its own budget."""
    max_strikes: Annotated[int, Range(0, 1000)] = 3
    """Robust reducers: a trainer whose results are refused this many rounds in a row is
    dropped (0: never)."""
    wire: Wire = "float32"
    """How results travel (``mlitb.protocol._codec``): ``float32`` (the paper's), ``float16``
    or ``int8`` blocks, with error feedback on the workers; parameters travel as float16 in
    both compressed kinds. Chosen at creation; deterministic projects are float32 only."""

    def _check(self) -> None:
        if self.schedule != "constant" and self.horizon is None:
            raise Invalid(f"schedule {self.schedule!r} needs a horizon", "horizon")
        if (self.norm_clip is not None and self.norm_refuse is not None
                and self.norm_refuse < self.norm_clip):
            raise Invalid(f"must be at least norm_clip ({self.norm_clip:g}), got "
                          f"{self.norm_refuse:g}", "norm_refuse")


# == client -> master ==============================================================================
@dataclass(frozen=True, kw_only=True)
class Hello(MessageBase):
    """The first message on every connection. ``project`` null lets the master choose.

    ``token``: the operator token (operators only). ``join_token``: the project's join token
    (trainers, trackers, stats workers), needed when the project was created with one; absent
    (or null) for an open project, so clients older than the field keep working there."""

    TYPE = "hello"
    FROM = _ANYONE
    WIRE_REQUIRED: ClassVar[frozenset[str]] = frozenset({"protocol"})
    """A hello always says its version on the wire (the default is for building one)."""
    protocol: Annotated[int, Range(0, 255)] = PROTOCOL_VERSION
    role: Role
    client: ClientKind
    host: Host
    project: Name | None = None
    token: Token | None = None
    join_token: Token | None = None

    def _check(self) -> None:
        if self.role == "operator" and self.project is not None:
            raise Invalid("must be null for role 'operator'", "project")
        if self.role != "operator" and self.token is not None:
            raise Invalid("is only sent by role 'operator'", "token")
        if self.role == "operator" and self.join_token is not None:
            raise Invalid("is not sent by role 'operator'", "join_token")

    def __repr__(self) -> str:  # tokens never reach a log through a repr
        return (f"Hello(role={self.role!r}, client={self.client!r}, host={self.host!r}, "
                f"project={self.project!r}, token={'***' if self.token else None}, "
                f"join_token={'***' if self.join_token else None})")


@dataclass(frozen=True, kw_only=True)
class CacheReport(MessageBase):
    """Ids the worker cached, and ids it dropped, since its last report."""

    TYPE = "cache_report"
    FROM = frozenset({"trainer", "stats"})
    cached: Ids = ()
    evicted: Ids = ()

    def _check(self) -> None:
        _disjoint(self.cached, self.evicted, "cached", "evicted")


@dataclass(frozen=True, kw_only=True)
class StatsReport(MessageBase):
    """A stats worker's evaluation of one parameter version on the project's test set."""

    TYPE = "stats_report"
    FROM = frozenset({"stats"})
    parameter_version: U32
    iteration: U32
    samples: Positive
    error: Fraction
    loss: NonNegative | None = None


# == operator -> master (requests: the master answers with ack, a reply, or error) =================
@dataclass(frozen=True, kw_only=True)
class CreateProject(MessageBase):
    """A new project from a layer spec, a research closure, or an entry of the master's model zoo
    (exactly one of the three).

    ``iteration_time`` / ``optimizer`` null mean the closure's, else 2 s / ``adagrad``;
    ``hyperparameters`` override the optimizer's defaults (or the closure's values).
    """

    TYPE = "create_project"
    FROM = _OPERATOR
    TOKEN = True
    LARGE = True
    request_id: RequestId
    name: Name
    spec: Spec | None = None
    closure: JsonObject | None = None
    zoo: Name | None = None
    iteration_time: IterationTime | None = None
    optimizer: Identifier | None = None
    hyperparameters: Hyperparameters = field(default_factory=dict)
    labels: Labels = ()
    samples_per_iteration: Positive | None = None
    training: Training | None = None
    """How the project trains; null: the closure's, else the paper's algorithm."""
    join_token: Token | None = None
    """Trainers, trackers and stats workers must send this in their hello (null: open to
    anyone, the paper's default). The master keeps only its hash."""
    contributor_token: Token | None = None
    """Lets its holders add data to this project on the data server (uploads, the browser's
    teach) without the operator token (null: only the operator may)."""

    def __repr__(self) -> str:  # tokens never reach a log through a repr
        return (f"CreateProject(request_id={self.request_id!r}, name={self.name!r}, "
                f"join_token={'***' if self.join_token else None}, "
                f"contributor_token={'***' if self.contributor_token else None})")

    def _check(self) -> None:
        if sum(x is not None for x in (self.spec, self.closure, self.zoo)) != 1:
            raise Invalid("exactly one of 'spec', 'closure' and 'zoo' must be given", "spec")


@dataclass(frozen=True, kw_only=True)
class DeleteProject(MessageBase):
    TYPE = "delete_project"
    FROM = _OPERATOR
    TOKEN = True
    request_id: RequestId
    project: Name


@dataclass(frozen=True, kw_only=True)
class Pause(MessageBase):
    TYPE = "pause"
    FROM = _OPERATOR
    TOKEN = True
    request_id: RequestId
    project: Name


@dataclass(frozen=True, kw_only=True)
class Resume(MessageBase):
    TYPE = "resume"
    FROM = _OPERATOR
    TOKEN = True
    request_id: RequestId
    project: Name


@dataclass(frozen=True, kw_only=True)
class SetHyperparameters(MessageBase):
    """Change hyperparameters (only those named) and/or T; applied from the next iteration."""

    TYPE = "set_hyperparameters"
    FROM = _OPERATOR
    TOKEN = True
    request_id: RequestId
    project: Name
    hyperparameters: Hyperparameters = field(default_factory=dict)
    iteration_time: IterationTime | None = None
    training: Training | None = None
    """New training settings: the schedule, the outer optimizer and augmentation may change
    live; the algorithm is the project's for good."""

    def _check(self) -> None:
        if not self.hyperparameters and self.iteration_time is None and self.training is None:
            raise Invalid("must change something: give hyperparameters, iteration_time or "
                          "training", "hyperparameters")


@dataclass(frozen=True, kw_only=True)
class SetAccess(MessageBase):
    """Replace a project's join and contributor tokens (null: open / operator-only), e.g. to
    rotate a leaked one. ``keep``: the tokens to leave as they are (``"join"``,
    ``"contributor"``; their fields must then be null), so one can be rotated alone.
    ``drop_members``: also remove every trainer, tracker and stats worker connected now (they
    must join again, with the new token)."""

    TYPE = "set_access"
    FROM = _OPERATOR
    TOKEN = True
    request_id: RequestId
    project: Name
    join_token: Token | None = None
    contributor_token: Token | None = None
    keep: Annotated[tuple[AccessToken, ...], Length(0, 2)] = ()
    drop_members: bool = False

    def _check(self) -> None:
        if len(set(self.keep)) != len(self.keep):
            raise Invalid("names a token twice", "keep")
        for kept, given in (("join", self.join_token), ("contributor", self.contributor_token)):
            if kept in self.keep and given is not None:
                raise Invalid(f"a {kept} token is given and kept: give one or the other",
                              f"{kept}_token")

    def __repr__(self) -> str:  # tokens never reach a log through a repr
        return (f"SetAccess(request_id={self.request_id!r}, project={self.project!r}, "
                f"join_token={'***' if self.join_token else None}, "
                f"contributor_token={'***' if self.contributor_token else None}, "
                f"keep={self.keep!r}, drop_members={self.drop_members})")


@dataclass(frozen=True, kw_only=True)
class SetOperatorToken(MessageBase):
    """Give the master a new operator token, e.g. to rotate a leaked one without a restart
    (at least 8 characters). Connections already authorized stay, unless
    ``drop_operators``: then every other operator connection (consoles, CLIs, the browser's
    Design tab, standalone data servers) gets ``bye`` ``removed`` and must connect again with
    the new token."""

    TYPE = "set_operator_token"
    FROM = _OPERATOR
    TOKEN = True
    request_id: RequestId
    operator_token: Token
    drop_operators: bool = False

    def __repr__(self) -> str:  # tokens never reach a log through a repr
        return (f"SetOperatorToken(request_id={self.request_id!r}, operator_token=***, "
                f"drop_operators={self.drop_operators})")


@dataclass(frozen=True, kw_only=True)
class RemoveWorker(MessageBase):
    TYPE = "remove_worker"
    FROM = _OPERATOR
    TOKEN = True
    request_id: RequestId
    worker_id: U32


@dataclass(frozen=True, kw_only=True)
class RegisterData(MessageBase):
    """Sent by the data server after storing an upload: ``labels[i]`` indexes ``label_names`` and
    belongs to ``ids[i]``. The master answers ``data_registered`` with the project's label list."""

    TYPE = "register_data"
    FROM = _OPERATOR
    TOKEN = True
    LARGE = True
    request_id: RequestId
    project: Name
    split: Split = "train"
    ids: Ids
    label_names: Labels
    labels: Annotated[tuple[Annotated[int, Range(0, MAX_LABELS - 1)], ...],
                      Length(0, MAX_IDS_PER_MESSAGE)]

    def _check(self) -> None:
        if len(self.labels) != len(self.ids):
            raise Invalid(f"must have one label per id ({len(self.ids)}), got {len(self.labels)}",
                          "labels")
        if self.labels and max(self.labels) >= len(self.label_names):
            raise Invalid(f"must index label_names (0-{len(self.label_names) - 1}), "
                          f"got {max(self.labels)}", "labels")


StoreId = Annotated[str, Pattern(r"[!-~]{1,128}", "1-128 printable ASCII characters, no spaces")]
DataUrls = Annotated[tuple[Url, ...], Length(0, MAX_DATA_SERVERS), Unique()]


@dataclass(frozen=True, kw_only=True)
class RegisterDataServer(MessageBase):
    """Sent by a separate data server (``mlitb data-server``) once it listens: the master
    announces ``url`` to workers until this connection closes. ``store``: the identity of a
    store several data servers share (a Redis store's id); null for a store of its own (a
    directory). The master announces several data servers only when they share one store."""

    TYPE = "register_data_server"
    FROM = _OPERATOR
    TOKEN = True
    request_id: RequestId
    url: Url
    store: StoreId | None = None


@dataclass(frozen=True, kw_only=True)
class Subscribe(MessageBase):
    """Ask for ``status`` snapshots of one project (or all: null) at most every ``interval`` s."""

    TYPE = "subscribe"
    FROM = _ANYONE
    request_id: RequestId
    project: Name | None = None
    interval: Annotated[float, Range(MIN_STATUS_INTERVAL, MAX_STATUS_INTERVAL)] = 1.0


@dataclass(frozen=True, kw_only=True)
class Unsubscribe(MessageBase):
    TYPE = "unsubscribe"
    FROM = _ANYONE
    request_id: RequestId


@dataclass(frozen=True, kw_only=True)
class ListProjects(MessageBase):
    TYPE = "list_projects"
    FROM = _ANYONE
    request_id: RequestId


@dataclass(frozen=True, kw_only=True)
class ListZoo(MessageBase):
    """Ask for the master's model zoo: closures a project can be started from."""

    TYPE = "list_zoo"
    FROM = _ANYONE
    request_id: RequestId


@dataclass(frozen=True, kw_only=True)
class GetModel(MessageBase):
    TYPE = "get_model"
    FROM = _ANYONE
    request_id: RequestId
    project: Name
    format: ModelFormat = "closure"


# == master -> client ==============================================================================
@dataclass(frozen=True, kw_only=True)
class ProjectInfo:
    """What a worker needs to know about its project."""

    name: Name
    state: ProjectState
    spec: Spec
    labels: Labels
    iteration_time: IterationTime
    iteration: U32
    parameter_version: U32
    parameter_count: Annotated[int, Range(1, MAX_PARAMETERS)]
    training: Training = field(default_factory=Training)
    optimizer: Identifier = "adagrad"
    """The project's optimizer: the master's (``gradient``) or the workers' inner one
    (``local``), with ``hyperparameters``."""
    hyperparameters: Hyperparameters = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Welcome(MessageBase):
    """The answer to a hello. ``authorized``: the operator token was accepted (operators only)."""

    TYPE = "welcome"
    worker_id: U32
    role: Role
    authorized: bool = False
    data_url: Url | None
    """The data server this worker should use (``data_urls[0]``); null while the master knows
    none (``mlitb master --no-data-server`` before a data server registered)."""
    data_urls: DataUrls = ()
    """Every data server the master announces, this worker's first, then the others to fall
    back on (one store behind them all)."""
    server_version: Annotated[str, Length(1, 64), Printable()]
    project: ProjectInfo | None = None

    def _check(self) -> None:
        if (self.role == "operator") != (self.project is None):
            raise Invalid("must be null for operators and set for every other role", "project")
        if self.authorized and self.role != "operator":
            raise Invalid("is only true for role 'operator'", "authorized")
        if self.data_urls and self.data_url != self.data_urls[0]:
            raise Invalid("must be the first of data_urls", "data_url")


@dataclass(frozen=True, kw_only=True)
class DataServers(MessageBase):
    """The data servers changed (one registered or went away): ``data_urls`` as in ``welcome``,
    this worker's first (empty: none is left)."""

    TYPE = "data_servers"
    data_urls: DataUrls


@dataclass(frozen=True, kw_only=True)
class ProjectChanged(MessageBase):
    """The project's spec, labels, state or T changed (e.g. a new label grew the output layer)."""

    TYPE = "project_changed"
    project: ProjectInfo


@dataclass(frozen=True, kw_only=True)
class Allocation(MessageBase):
    """Data ids added to / removed from this worker; ``total``: its allocation afterwards."""

    TYPE = "allocation"
    added: Ids = ()
    removed: Ids = ()
    total: U32

    def _check(self) -> None:
        _disjoint(self.added, self.removed, "added", "removed")
        if self.total < len(self.added):
            raise Invalid(f"must count at least the {len(self.added)} ids added", "total")


@dataclass(frozen=True, kw_only=True)
class Work(MessageBase):
    """A budget: compute on ``parameter_version`` for ``seconds``, or over ``samples`` samples in
    deterministic mode (exactly one is set), then send a result frame."""

    TYPE = "work"
    iteration: U32
    parameter_version: U32
    seconds: Annotated[float, Range(0.001, MAX_ITERATION_TIME)] | None = None
    samples: Positive | None = None
    learning_rate: Annotated[float, Range(0.0, 1e6)] | None = None
    """``local`` projects: the inner optimizer's learning rate for this round (the schedule's)."""

    def _check(self) -> None:
        if (self.seconds is None) == (self.samples is None):
            raise Invalid("exactly one of 'seconds' and 'samples' must be set", "seconds")


@dataclass(frozen=True, kw_only=True)
class Error(MessageBase):
    """Something the client sent was refused; ``request_id`` echoes the request's, if any."""

    TYPE = "error"
    code: ErrorCode
    message: Text
    request_id: RequestId | None = None


@dataclass(frozen=True, kw_only=True)
class Bye(MessageBase):
    """The master is about to close this connection with ``BYE_CLOSE_CODES[reason]``."""

    TYPE = "bye"
    reason: ByeReason
    message: Text = ""


@dataclass(frozen=True, kw_only=True)
class Ack(MessageBase):
    """The request ``request_id`` succeeded."""

    TYPE = "ack"
    request_id: RequestId


@dataclass(frozen=True, kw_only=True)
class DataRegistered(MessageBase):
    """The answer to ``register_data``: the project's labels (indices used in data batches) and
    its id counts afterwards."""

    TYPE = "data_registered"
    request_id: RequestId
    project: Name
    labels: Labels
    train: U32
    test: U32


@dataclass(frozen=True, kw_only=True)
class Timing:
    """Seconds of the last iteration spent in each phase."""

    compute: NonNegative = 0.0
    wait: NonNegative = 0.0
    reduce: NonNegative = 0.0
    broadcast: NonNegative = 0.0


@dataclass(frozen=True, kw_only=True)
class HistoryPoint:
    """Training loss (mean per sample) and accuracy (null for regression) of one iteration."""

    iteration: U32
    samples: U32
    loss: NonNegative
    accuracy: Fraction | None = None


@dataclass(frozen=True, kw_only=True)
class StatsPoint:
    """A stats worker's test error for one parameter version."""

    iteration: U32
    parameter_version: U32
    samples: Positive
    error: Fraction


@dataclass(frozen=True, kw_only=True)
class DataCounts:
    """Training ids: ``allocated`` to a live trainer + ``unallocated`` = ``total``; ``cached`` by
    at least one worker; ``test``: held-out ids."""

    total: U32
    allocated: U32
    cached: U32
    unallocated: U32
    test: U32 = 0

    def _check(self) -> None:
        if self.allocated + self.unallocated != self.total:
            raise Invalid(f"allocated ({self.allocated}) + unallocated ({self.unallocated}) "
                          f"must equal total ({self.total})", "unallocated")
        if self.cached > self.total:
            raise Invalid(f"must not exceed total ({self.total})", "cached")


@dataclass(frozen=True, kw_only=True)
class WorkerStatus:
    worker_id: U32
    role: WorkerRole
    client: ClientKind
    host: Host
    state: WorkerState
    latency_ms: NonNegative | None = None
    samples_per_s: NonNegative | None = None
    budget_s: NonNegative | None = None
    allocated: U32 = 0
    cached: U32 = 0


@dataclass(frozen=True, kw_only=True)
class Event:
    """One line of the master's event log; ``time`` in seconds on the master's clock."""

    time: NonNegative
    kind: EventKind
    message: Text
    project: Name | None = None
    worker_id: U32 | None = None


@dataclass(frozen=True, kw_only=True)
class ProjectStatus:
    name: Name
    state: ProjectState
    iteration: U32
    parameter_version: U32
    iteration_time: IterationTime
    optimizer: Identifier
    hyperparameters: Hyperparameters = field(default_factory=dict)
    training: Training = field(default_factory=Training)
    timing: Timing = field(default_factory=Timing)
    history: Annotated[tuple[HistoryPoint, ...], Length(0, MAX_HISTORY_POINTS)] = ()
    test_error: Annotated[tuple[StatsPoint, ...], Length(0, MAX_HISTORY_POINTS)] = ()
    data: DataCounts
    workers: Annotated[tuple[WorkerStatus, ...], Length(0, MAX_WORKERS_PER_STATUS)] = ()

    def _check(self) -> None:
        ids = [w.worker_id for w in self.workers]
        if len(set(ids)) != len(ids):
            raise Invalid("must not list a worker_id twice", "workers")


@dataclass(frozen=True, kw_only=True)
class Status(MessageBase):
    """A snapshot for subscribers: the projects asked for, and the events since the last one."""

    TYPE = "status"
    LARGE = True
    time: NonNegative
    projects: Annotated[tuple[ProjectStatus, ...], Length(0, MAX_PROJECTS)] = ()
    events: Annotated[tuple[Event, ...], Length(0, MAX_EVENTS_PER_STATUS)] = ()


@dataclass(frozen=True, kw_only=True)
class ProjectSummary:
    """One row of the project list. ``input_shape`` is ``[depth, height, width]``."""

    name: Name
    state: ProjectState
    iteration: U32
    iteration_time: IterationTime
    optimizer: Identifier
    input_shape: Annotated[tuple[Annotated[int, Range(1, 65_535)], ...], Length(3, 3)]
    labels: Labels
    workers: U32
    data: DataCounts
    loss: NonNegative | None = None
    test_error: Fraction | None = None
    join_sha256: TokenHash | None = None
    """The join token's SHA-256 (null: open), only in answers to an authorized operator: a
    standalone data server checks the project's tokens with them."""
    contributor_sha256: TokenHash | None = None
    """The contributor token's SHA-256 (null: none), likewise."""


@dataclass(frozen=True, kw_only=True)
class ProjectList(MessageBase):
    TYPE = "projects"
    LARGE = True
    request_id: RequestId
    projects: Annotated[tuple[ProjectSummary, ...], Length(0, MAX_PROJECTS)]


@dataclass(frozen=True, kw_only=True)
class ZooEntry:
    """One closure of the master's zoo; ``test_error``: its latest, if it has one."""

    name: Name
    parameter_count: Annotated[int, Range(1, MAX_PARAMETERS)]
    input_shape: Annotated[tuple[Annotated[int, Range(1, 65_535)], ...], Length(3, 3)]
    labels: Labels
    optimizer: Identifier
    iteration: U32
    test_error: Fraction | None = None
    created: Annotated[str, Length(1, 64), Printable()]


@dataclass(frozen=True, kw_only=True)
class ZooList(MessageBase):
    """The answer to ``list_zoo``."""

    TYPE = "zoo"
    LARGE = True
    request_id: RequestId
    entries: Annotated[tuple[ZooEntry, ...], Length(0, MAX_PROJECTS)]


@dataclass(frozen=True, kw_only=True)
class Model(MessageBase):
    """The answer to ``get_model``: a research closure or a ConvNetJS ``Net.toJSON()`` object."""

    TYPE = "model"
    LARGE = True
    request_id: RequestId
    project: Name
    format: ModelFormat
    model: JsonObject


ClientMessage = (
    Hello | CacheReport | StatsReport | CreateProject | DeleteProject | Pause | Resume
    | SetHyperparameters | RemoveWorker | RegisterData | RegisterDataServer | Subscribe | Unsubscribe | ListProjects
    | ListZoo | GetModel | SetAccess | SetOperatorToken
)
ServerMessage = (
    Welcome | DataServers | ProjectChanged | Allocation | Work | Error | Bye | Ack
    | DataRegistered | Status | ProjectList | ZooList | Model
)
Message = ClientMessage | ServerMessage

CLIENT_MESSAGES: tuple[type[ClientMessage], ...] = (
    Hello, CacheReport, StatsReport, CreateProject, DeleteProject, Pause, Resume,
    SetHyperparameters, RemoveWorker, RegisterData, RegisterDataServer, Subscribe, Unsubscribe,
    ListProjects, ListZoo, GetModel, SetAccess, SetOperatorToken,
)
SERVER_MESSAGES: tuple[type[ServerMessage], ...] = (
    Welcome, DataServers, ProjectChanged, Allocation, Work, Error, Bye, Ack, DataRegistered,
    Status, ProjectList, ZooList, Model,
)
MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls for cls in (*CLIENT_MESSAGES, *SERVER_MESSAGES)
}
"""Every control message class by its JSON ``type``."""
