"""The data server: uploads, the embedded store, and batches of data vectors over HTTP.

``serve_data_server`` runs the HTTP API (docs/dataserver.md) with hypercorn on trio; start it with
``port = await nursery.start(serve_data_server, store, host, port)`` (keyword options through
``functools.partial``). The master embeds it by passing ``on_registered``, called after every
committed upload, and may read the store directly. A store is a ``DataStore``: the directory
``Store`` (the default) or a ``RedisStore`` several data servers share (``open_store``).

The names below are loaded on first use, so that importing one of its modules without the web
stack (``mlitb.dataserver._ingest``, ``_client``, ``_store``) does not pull in hypercorn, Starlette
or trio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import (
        BODY_TIMEOUT,
        MAX_BATCH_BYTES,
        MAX_BATCH_IDS,
        CheckUpload,
        DataServer,
        MayContribute,
        MayRead,
        OnRegistered,
        PlanLabels,
        TooLargeError,
        decode_image,
    )
    from ._archive import write_archive
    from ._backend import DataStore, check_store_url, open_store
    from ._client import DataClient, Progress
    from ._errors import (
        DataServerError,
        LabelConflictError,
        ShapeMismatchError,
        StoreError,
        StoreUnavailableError,
        UnknownIdsError,
        UnknownProjectError,
    )
    from ._ids import format_ids, parse_ids
    from ._ingest import (
        DEFAULT_LIMITS,
        IMAGE_FORMATS,
        JUNK_NAMES,
        Decoded,
        InputShape,
        UploadLimits,
        decode_archive,
    )
    from ._serve import DEFAULT_PORT, serve_data_server
    from ._store import DatasetInfo, Registration, Split, Store

_EXPORTS = {
    "BODY_TIMEOUT": "._app",
    "CheckUpload": "._app",
    "DEFAULT_LIMITS": "._ingest",
    "DEFAULT_PORT": "._serve",
    "DataClient": "._client",
    "DataServer": "._app",
    "DataServerError": "._errors",
    "DataStore": "._backend",
    "DatasetInfo": "._store",
    "Decoded": "._ingest",
    "IMAGE_FORMATS": "._ingest",
    "InputShape": "._ingest",
    "JUNK_NAMES": "._ingest",
    "LabelConflictError": "._errors",
    "MAX_BATCH_BYTES": "._app",
    "MAX_BATCH_IDS": "._app",
    "MayContribute": "._app",
    "MayRead": "._app",
    "OnRegistered": "._app",
    "PlanLabels": "._app",
    "Progress": "._client",
    "Registration": "._store",
    "ShapeMismatchError": "._errors",
    "Split": "._store",
    "Store": "._store",
    "StoreError": "._errors",
    "StoreUnavailableError": "._errors",
    "TooLargeError": "._app",
    "UnknownIdsError": "._errors",
    "UnknownProjectError": "._errors",
    "UploadLimits": "._ingest",
    "check_store_url": "._backend",
    "decode_archive": "._ingest",
    "decode_image": "._app",
    "format_ids": "._ids",
    "open_store": "._backend",
    "parse_ids": "._ids",
    "serve_data_server": "._serve",
    "write_archive": "._archive",
}

__all__ = [
    "BODY_TIMEOUT", "CheckUpload", "DEFAULT_LIMITS", "DEFAULT_PORT", "DataClient", "DataServer",
    "DataServerError", "DataStore", "DatasetInfo", "Decoded", "IMAGE_FORMATS", "InputShape",
    "JUNK_NAMES", "LabelConflictError", "MAX_BATCH_BYTES", "MAX_BATCH_IDS", "MayContribute",
    "OnRegistered", "PlanLabels", "Progress", "Registration", "ShapeMismatchError", "Split",
    "Store", "StoreError", "StoreUnavailableError", "TooLargeError", "UnknownIdsError",
    "UnknownProjectError", "UploadLimits", "check_store_url", "decode_archive", "decode_image",
    "format_ids", "open_store", "parse_ids", "serve_data_server", "write_archive",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
