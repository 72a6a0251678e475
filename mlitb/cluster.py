"""A master with its data server embedded: what ``mlitb master`` and ``mlitb demo`` run.

The data server registers every committed upload with the master directly (no socket between
them), and asks the master for a project's input shape before it reads an upload, so uploads to
unknown projects are refused before a byte is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from .dataserver import (
    DEFAULT_LIMITS,
    InputShape,
    OnRegistered,
    Registration,
    DataStore,
    UploadLimits,
    serve_data_server,
)
from .dataserver import LabelConflictError
from .dataserver._app import CheckUpload, PlanLabels
from ._connections import DEFAULT_CONNECTION_LIMITS, ConnectionCaps, ConnectionLimits
from ._tls import server_context
from .errors import UploadError
from .master import Master, ProjectFiles, RequestError


@dataclass(frozen=True)
class ClusterAddress:
    """Where a running cluster listens."""

    master_url: str
    data_url: str


def _glue(master: Master) -> tuple[OnRegistered, CheckUpload, PlanLabels]:
    def on_registered(registration: Registration) -> None:
        try:
            master.register_data(registration.project, registration.split,
                                 list(registration.ids), list(registration.label_names))
        except RequestError as exc:
            raise UploadError(str(exc)) from None

    def check_upload(project: str, split: str) -> InputShape:
        found = master.projects.get(project)
        if found is None:
            raise UploadError(f"no project named {project!r} on this master: create it first")
        c, h, w = found.net.input_shape
        return InputShape(width=w, height=h, channels=c)

    def plan_labels(project: str, names: tuple[str, ...]) -> tuple[str, ...]:
        # The store numbers labels as the model does, before anything is stored.
        try:
            return master.plan_labels(project, names)
        except RequestError as exc:
            raise LabelConflictError(str(exc)) from None

    return on_registered, check_upload, plan_labels


async def serve_cluster(master: Master, store: DataStore, host: str = "127.0.0.1",
                        port: int = 8000, data_port: int = 8001, *,
                        public_host: str | None = None,
                        limits: UploadLimits = DEFAULT_LIMITS,
                        data_connection_limits: ConnectionLimits | ConnectionCaps
                        = DEFAULT_CONNECTION_LIMITS,
                        certfile: str | None = None, keyfile: str | None = None,
                        task_status: trio.TaskStatus[ClusterAddress] = trio.TASK_STATUS_IGNORED,
                        ) -> None:
    """Run ``master`` and a data server over ``store`` until cancelled; reports the URLs.

    Data already in the store (from an earlier run) is registered again for projects the master
    knows (``limits``: the data server's upload limits; ``data_connection_limits``: its
    connection caps, ``serve_data_server``'s ``connection_limits``); data whose labels contradict the project's is left unregistered with an ``error``
    event (the master starts all the same). Uploads are stored under the label list the
    master's model numbers (``Master.plan_labels``), so their registration cannot conflict. ``public_host``: the host name workers should use (default: ``host``).
    """
    on_registered, check_upload, plan_labels = _glue(master)
    ssl_context = server_context(certfile, keyfile) if certfile is not None else None
    tls = ssl_context is not None
    shown = public_host or ("127.0.0.1" if host in ("0.0.0.0", "") else host)
    # The browser page reads the master's URL from /config.json; the port is known only later.
    client_config: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        bound_data = await nursery.start(lambda task_status: serve_data_server(
            store, host, data_port, task_status=task_status, on_registered=on_registered,
            check_upload=check_upload, plan_labels=plan_labels, client_config=client_config,
            limits=limits, connection_limits=data_connection_limits,
            upload_token=master.operator_token,
            may_contribute=master.may_contribute, may_read=master.may_read,
            is_upload_token=master.is_operator_token,
            certfile=certfile, keyfile=keyfile))
        master.data_servers.set_fixed(f"{'https' if tls else 'http'}://{shown}:{bound_data}",
                                      store.identity)

        def register_stored(project: str) -> None:
            if project in store.projects():
                try:
                    _reregister(master, store, project)
                except RequestError as exc:  # a store written before labels were planned
                    master.log_event("error", f"project {project}: its stored data was not "
                                  f"registered: {exc}", project)

        for project in list(master.projects):
            register_stored(project)
        master.on_project_created.append(register_stored)
        master.manifest_provider = store.manifest
        bound = await nursery.start(partial(master.serve, host, port, ssl_context=ssl_context))
        client_config["master_url"] = f"{'wss' if tls else 'ws'}://{shown}:{bound}"
        task_status.started(ClusterAddress(client_config["master_url"], master.data_url or ""))


async def serve_master_alone(master: Master, host: str = "127.0.0.1", port: int = 8000, *,
                             public_host: str | None = None, certfile: str | None = None,
                             keyfile: str | None = None,
                             task_status: trio.TaskStatus[ClusterAddress]
                             = trio.TASK_STATUS_IGNORED) -> None:
    """Run ``master`` without a data server of its own (``mlitb master --no-data-server``):
    it announces the separate data servers that register with it. Reports the URLs (the data
    URL empty)."""
    master.data_url = None
    ssl_context = server_context(certfile, keyfile) if certfile is not None else None
    shown = public_host or ("127.0.0.1" if host in ("0.0.0.0", "") else host)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(master.serve, host, port, ssl_context=ssl_context))
        scheme = "wss" if ssl_context is not None else "ws"
        task_status.started(ClusterAddress(f"{scheme}://{shown}:{bound}", ""))


def _reregister(master: Master, store: DataStore, project: str) -> None:
    labels = list(store.info(project).labels)
    for split in ("train", "test"):
        ids = [int(i) for i in store.ids(project, split)]
        if ids:
            master.register_data(project, split, ids, labels)


def open_store(data_dir: Path, url: str | None = None) -> DataStore:
    """The data server's store: the Redis store at ``url`` (``redis://HOST:PORT/DB``), else
    the directory store under ``data_dir/store`` (created if needed)."""
    from .dataserver import open_store as open_data_store

    data_dir.mkdir(parents=True, exist_ok=True)
    return open_data_store(data_dir / "store", url, tmp_dir=data_dir)


def project_files(data_dir: Path) -> ProjectFiles:
    """Where a master under ``data_dir`` keeps its projects' closures: ``data_dir/projects``."""
    return ProjectFiles(data_dir / "projects")
