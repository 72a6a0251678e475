"""The protocol's version, size limits, close codes and error codes: the numbers peers agree on."""

from __future__ import annotations

from enum import IntEnum
from typing import Final, Literal, get_args

PROTOCOL_VERSION: Final = 2
"""Bumped on every change to a message or frame. Peers of different versions never talk: the master
refuses a hello (and a binary frame) of another version with close code ``VERSION_MISMATCH``."""

# -- sizes -----------------------------------------------------------------------------------------
MAX_TEXT_FRAME: Final = 1 << 20
"""Largest text frame (bytes of UTF-8) of any type except the *large* ones listed below; also the
cap a master applies before parsing text from a connection that is not an authorized operator."""
MAX_LARGE_TEXT_FRAME: Final = 64 << 20
"""Largest text frame of the large types (``create_project``, ``register_data``, ``status``,
``projects``, ``zoo``, ``model``): what the master accepts from authorized operators and what a client should
accept from the master."""
MAX_HELLO_FRAME: Final = 64 << 10
"""Largest WebSocket message the master reads from a connection that has not said hello yet (a
hello is far smaller); a larger one is closed with ``MESSAGE_TOO_BIG`` after at most this many
bytes are buffered. After the welcome: ``MAX_LARGE_TEXT_FRAME`` for authorized operators,
``MAX_BINARY_FRAME`` for trainers, ``MAX_TEXT_FRAME`` for everyone else."""
MAX_PARAMETERS: Final = 8 << 20
"""Largest parameter vector a project may have: 8 Mi float32 values (32 MiB)."""
MAX_BINARY_FRAME: Final = MAX_PARAMETERS * 4 + 64
"""Largest binary WebSocket frame: a parameters or result frame of MAX_PARAMETERS values."""
MAX_DATA_FRAME: Final = 256 << 20
"""Largest data-batch body (served by the data server over HTTP, never through the master)."""
MAX_IDS_PER_MESSAGE: Final = 65_536
"""Most data ids in one message, counted over all its id lists (and vectors in one data batch).
Larger changes are split over several messages."""
MAX_NAME_LENGTH: Final = 64
"""Project names: 1-64 characters from ``[A-Za-z0-9_.-]``, starting with a letter or digit."""
MAX_LABEL_LENGTH: Final = 64
MAX_LABELS: Final = 4_096
MAX_HOST_LENGTH: Final = 128
MAX_TOKEN_LENGTH: Final = 256
MAX_REQUEST_ID_LENGTH: Final = 64
MAX_TEXT_LENGTH: Final = 2_048
"""Free text: error and bye messages, event descriptions."""
MAX_URL_LENGTH: Final = 2_048
MAX_DATA_SERVERS: Final = 64
"""Most data servers a master announces (``register_data_server`` past it is refused)."""
MAX_LAYERS: Final = 256
MAX_HYPERPARAMETERS: Final = 32
MAX_HISTORY_POINTS: Final = 2_048
"""Points per curve in one status snapshot; the master downsamples longer histories."""
MAX_PROJECTS: Final = 256
MAX_WORKERS_PER_STATUS: Final = 8_192
MAX_EVENTS_PER_STATUS: Final = 256
MAX_JSON_DEPTH: Final = 32
"""Nesting depth of free-form JSON (layer definitions, closures, models)."""

MAX_U32: Final = 0xFFFF_FFFF
"""Ids, counters and versions are unsigned 32-bit on the wire (safe as JavaScript numbers)."""
MIN_ITERATION_TIME: Final = 0.25
"""Short rounds pay for ``local`` projects: workers average their parameters every T, and the
fewer steps they take apart, the less accuracy each sample loses (docs/performance.md)."""
MAX_ITERATION_TIME: Final = 30.0
MIN_STATUS_INTERVAL: Final = 0.1
MAX_STATUS_INTERVAL: Final = 60.0

# -- closed vocabularies ---------------------------------------------------------------------------
Role = Literal["trainer", "tracker", "stats", "operator"]
ClientKind = Literal["python", "browser"]
ProjectState = Literal["running", "paused", "waiting"]
WorkerState = Literal["caching", "training", "late", "idle", "tracking"]
Split = Literal["train", "test"]
ModelFormat = Literal["model", "closure", "convnetjs"]
ErrorCode = Literal[
    "bad_message",       # a text frame failed validation (the message says which field)
    "bad_frame",         # a binary frame failed validation
    "too_large",         # a frame over its size limit
    "version_mismatch",  # hello or frame of another PROTOCOL_VERSION
    "hello_required",    # the first message was not a valid hello
    "forbidden",         # the role may not send this message, or it needs the operator token
    "bad_token",         # the operator token was wrong
    "join_refused",      # the project needs a join token: it was missing or wrong
    "unknown_project",
    "project_exists",
    "unknown_worker",
    "invalid_value",     # well-formed but refused: bad layer spec, unknown optimizer, ...
    "stale_result",      # a result computed on an older parameter version; it was dropped
    "internal",          # a bug in the master; it keeps serving
]
ByeReason = Literal["removed", "project_deleted", "shutdown", "too_many_errors", "timed_out"]
EventKind = Literal[
    "created", "deleted", "paused", "resumed", "configured", "joined", "left", "lost", "removed",
    "reallocated", "data", "error",
]

ROLES: Final = get_args(Role)
CLIENT_KINDS: Final = get_args(ClientKind)
ERROR_CODES: Final = get_args(ErrorCode)


class CloseCode(IntEnum):
    """WebSocket close codes the master uses (1000-1011 are RFC 6455's; 4000-4999 are ours)."""

    NORMAL = 1000
    """The client or master left on purpose after saying everything."""
    GOING_AWAY = 1001
    """The master is shutting down (after a ``bye`` with reason ``shutdown``)."""
    PROTOCOL_ERROR = 1002
    """WebSocket-level violation (raised by the WebSocket library, not by this protocol)."""
    UNSUPPORTED_DATA = 1003
    """A binary frame from a role that never sends one (trackers, operators)."""
    POLICY_VIOLATION = 1008
    """The hello carried a wrong operator token (error ``bad_token``)."""
    MESSAGE_TOO_BIG = 1009
    """A frame over its size limit (before the hello: over ``MAX_HELLO_FRAME``)."""
    INTERNAL_ERROR = 1011
    """The master failed on this connection; others are unaffected."""
    VERSION_MISMATCH = 4000
    """The hello or a frame carried another PROTOCOL_VERSION."""
    HELLO_REQUIRED = 4001
    """The first message was not a valid hello."""
    NO_PROJECT = 4002
    """The hello named a project that does not exist, or none could be chosen."""
    REMOVED = 4003
    """An operator removed this worker."""
    PROJECT_DELETED = 4004
    """The project this worker belonged to was deleted."""
    TOO_MANY_ERRORS = 4005
    """The client kept sending invalid messages."""
    TIMED_OUT = 4006
    """The client stopped answering pings."""
    JOIN_REFUSED = 4007
    """The project needs a join token and the hello's ``join_token`` was missing or wrong (a
    client stops here: retrying with the same token cannot succeed)."""
    TOO_MANY_CONNECTIONS = 4008
    """The master serves as many connections as its caps allow, in total or from this
    client's address; nothing was read. Not final: a client reconnects with backoff."""


BYE_CLOSE_CODES: Final[dict[ByeReason, CloseCode]] = {
    "removed": CloseCode.REMOVED,
    "project_deleted": CloseCode.PROJECT_DELETED,
    "shutdown": CloseCode.GOING_AWAY,
    "too_many_errors": CloseCode.TOO_MANY_ERRORS,
    "timed_out": CloseCode.TIMED_OUT,
}
"""The close code that follows each ``bye``."""
