"""``mlitb master``, ``mlitb data-server`` and ``mlitb data upload``."""

from __future__ import annotations

import json
import logging
import os
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import trio
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from ._common import cli_errors
from ._project import DEFAULT_MASTER, MasterOption, TokenOption
from ..errors import MlitbError

# mlitb._connections's defaults (the master's and the data server's caps alike), written out
# so that `mlitb --help` does not import the servers (tests/test_limits_connections.py checks
# they agree).
DEFAULT_MAX_CONNECTIONS = 16_384
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 4_096
# ...and mlitb.dataserver.UploadLimits's.
DEFAULT_MAX_UPLOAD_ENTRIES = 60_000
DEFAULT_MAX_UPLOAD_SIZE = "1G"
DEFAULT_MAX_PENDING_UPLOADS = 8
DEFAULT_MAX_PENDING_UPLOADS_PER_ADDRESS = 4
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

MaxEntriesOption = Annotated[int, typer.Option(
    "--max-upload-entries", min=1, help="Entries one upload zip may have, folders included "
    "(over it: 400 before any entry is read).")]
MaxSizeOption = Annotated[str, typer.Option(
    "--max-upload-size", help="Largest upload zip: bytes, or with K, M, G (binary units; "
    "over it: 413).")]
MaxPendingOption = Annotated[int, typer.Option(
    "--max-pending-uploads", min=1, help="Uploads (and taught images) held at once, being "
    "received or decoded (over it: 503).")]
MaxPendingPerAddressOption = Annotated[int, typer.Option(
    "--max-pending-uploads-per-address", min=1, help="As --max-pending-uploads, from one "
    "address (over it: 429; a NAT or a reverse proxy is one address).")]
MaxDataConnectionsOption = Annotated[int, typer.Option(
    "--max-data-connections", min=1, help="HTTP connections the data server holds at once, "
    "idle ones included (over it: 503 with Retry-After, or closed at once in a flood; lowered "
    "to what the file-descriptor limit allows).")]
MaxDataConnectionsPerAddressOption = Annotated[int, typer.Option(
    "--max-data-connections-per-address", min=1, help="As --max-data-connections, from one "
    "remote address (an IPv6 /64); a NAT or a reverse proxy is one address.")]


def parse_size(text: str) -> int:
    """``"1G"``, ``"512M"``, ``"1048576"`` -> bytes (binary units); ``MlitbError`` otherwise."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (value[:-1], value[-1]) if value and value[-1] in _SIZE_UNITS else \
        (value, "")
    if not number.isdecimal() or len(number) > 15 or int(number) < 1:
        raise MlitbError(f"--max-upload-size: expected a size such as 1G, 500M or 1048576, "
                         f"got {text[:40]!r}")
    return int(number) * _SIZE_UNITS[unit]


def upload_limits(entries: int, size: str, pending: int, per_address: int) -> Any:
    """The ``UploadLimits`` the data-server options ask for."""
    from ..dataserver import UploadLimits

    return UploadLimits(max_entries=entries, max_archive_bytes=parse_size(size),
                        max_pending=pending, max_pending_per_address=per_address)

out = Console(stderr=True, highlight=False)
data_app = typer.Typer(help="Upload datasets (zips of labelled image folders) to a project.",
                       no_args_is_help=True)

HostOption = Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: every one).")]
DataDirOption = Annotated[Path, typer.Option("--data-dir", envvar="MLITB_DATA_DIR",
                                             help="Where the embedded store keeps datasets "
                                             "(DIR/store) and the master its projects "
                                             "(DIR/projects).")]
StoreOption = Annotated[str | None, typer.Option(
    "--store", envvar="MLITB_STORE", show_default=False,
    help="Keep datasets in Redis, redis://HOST:PORT/DB, shared by every data server given the "
    "same URL (pip install 'mlitb[redis]'); default: a directory, DATA_DIR/store.")]


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")


def _leaf(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` itself or the first exception of ``kind`` inside its exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _leaf(inner, kind)
            if found is not None:
                return found
    return None


def register_master(app: typer.Typer) -> None:
    @app.command("master")
    @cli_errors
    def master(
        host: HostOption = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="WebSocket port.")] = 8000,
        data_port: Annotated[int, typer.Option(min=0, max=65535,
                                               help="Data server (HTTP) port.")] = 8001,
        data_dir: DataDirOption = Path("mlitb-data"),
        operator_token: Annotated[str | None, typer.Option(
            "--operator-token", envvar="MLITB_OPERATOR_TOKEN",
            help="Secret operators must present; generated and printed when absent.")] = None,
        public_host: Annotated[str | None, typer.Option(
            help="Host name workers should use to reach this machine.")] = None,
        autosave_every: Annotated[int, typer.Option(
            min=1, help="Save each project's research closure to DIR/projects every N "
            "iterations (and when its settings change, and on shutdown); a restarted master "
            "resumes every project from it.")] = 10,
        zoo: Annotated[Path | None, typer.Option(
            "--zoo", envvar="MLITB_ZOO", file_okay=False, show_default=False,
            help="The model zoo operators and browsers can start projects from (default: "
            "DATA_DIR/zoo).")] = None,
        certfile: Annotated[Path | None, typer.Option(
            "--certfile", envvar="MLITB_CERTFILE", exists=True, dir_okay=False,
            show_default=False, help="TLS certificate chain (PEM): serve wss:// and https://.")]
        = None,
        keyfile: Annotated[Path | None, typer.Option(
            "--keyfile", envvar="MLITB_KEYFILE", exists=True, dir_okay=False,
            show_default=False, help="The certificate's private key (PEM; default: in "
            "--certfile).")] = None,
        store_url: StoreOption = None,
        no_data_server: Annotated[bool, typer.Option(
            "--no-data-server", help="Run no data server here: announce the separate ones "
            "(mlitb data-server) that register with this master.")] = False,
        max_connections: Annotated[int, typer.Option(
            "--max-connections", min=1, help="Connections the master port holds at once, "
            "upgraded to a WebSocket or not (over it: close code 4008, or closed at once in a "
            "flood; lowered to what the file-descriptor limit allows).")]
        = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_address: Annotated[int, typer.Option(
            "--max-connections-per-address", min=1, help="As --max-connections, from one "
            "remote address (an IPv6 /64); a NAT or a reverse proxy is one address.")]
        = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        max_data_connections: MaxDataConnectionsOption = DEFAULT_MAX_CONNECTIONS,
        max_data_connections_per_address: MaxDataConnectionsPerAddressOption
        = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        max_upload_entries: MaxEntriesOption = DEFAULT_MAX_UPLOAD_ENTRIES,
        max_upload_size: MaxSizeOption = DEFAULT_MAX_UPLOAD_SIZE,
        max_pending_uploads: MaxPendingOption = DEFAULT_MAX_PENDING_UPLOADS,
        max_pending_uploads_per_address: MaxPendingPerAddressOption
        = DEFAULT_MAX_PENDING_UPLOADS_PER_ADDRESS,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log events.")] = False,
    ) -> None:
        """Run the master server with its data server (projects, workers, the event loop).

        Projects persist in the data dir: restarted on the same --data-dir, the master resumes
        every project from its last autosave and the nodes reconnect by themselves.
        """
        import signal

        from ..cluster import open_store, project_files, serve_cluster, serve_master_alone
        from ..dataserver._backend import redact
        from ..master import Master
        from .._connections import ConnectionLimits, fit_to_fd_limit

        if keyfile is not None and certfile is None:
            raise MlitbError("--keyfile needs --certfile")
        if certfile is not None:  # a bad certificate is one line, before anything listens
            from .._tls import server_context

            server_context(certfile, keyfile)
        limits = upload_limits(max_upload_entries, max_upload_size, max_pending_uploads,
                               max_pending_uploads_per_address)
        _logging(verbose)
        if no_data_server and store_url is not None:
            raise MlitbError("--store is for the data server: with --no-data-server the "
                             "master has none")
        if no_data_server:
            # The data server's limits would be silently ignored: say so instead.
            given = [name for name, value, default in (
                ("--max-data-connections", max_data_connections, DEFAULT_MAX_CONNECTIONS),
                ("--max-data-connections-per-address", max_data_connections_per_address,
                 DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
                ("--max-upload-entries", max_upload_entries, DEFAULT_MAX_UPLOAD_ENTRIES),
                ("--max-upload-size", max_upload_size, DEFAULT_MAX_UPLOAD_SIZE),
                ("--max-pending-uploads", max_pending_uploads, DEFAULT_MAX_PENDING_UPLOADS),
                ("--max-pending-uploads-per-address", max_pending_uploads_per_address,
                 DEFAULT_MAX_PENDING_UPLOADS_PER_ADDRESS)) if value != default]
            if given:
                raise MlitbError(f"{', '.join(given)}: limits of the data server, and with "
                                 "--no-data-server the master has none (set them on each "
                                 "`mlitb data-server`)")
        store = None if no_data_server else open_store(data_dir, store_url)
        files = project_files(data_dir)
        from ..closure import Zoo

        wanted = ConnectionLimits(max_connections=max_connections,
                                  max_per_address=max_connections_per_address)
        wanted_data = ConnectionLimits(max_connections=max_data_connections,
                                       max_per_address=max_data_connections_per_address)
        # One descriptor per connection, the master's and the data server's together.
        fitted, fd_limit = fit_to_fd_limit(*([wanted] if no_data_server else [wanted, wanted_data]))
        caps, data_caps = fitted[0], fitted[-1]
        if caps.max_connections < max_connections:
            shown_caps = (f"{caps.max_connections} connections" if no_data_server else
                          f"{caps.max_connections} connections and {data_caps.max_connections} "
                          "data connections")
            out.print(f"[yellow]at most {shown_caps}[/]: the process may open {fd_limit} files "
                      "(ulimit -n; each connection needs one)")
        m = Master(operator_token=operator_token, files=files, autosave_every=autosave_every,
                   data_url=None, zoo=Zoo(zoo if zoo is not None else data_dir / "zoo"),
                   connection_limits=caps)
        restored, unreadable = m.restore()
        for name in restored:
            p = m.projects[name]
            out.print(f"restored project {name} at iteration {p.iteration} (parameter version "
                      f"{p.parameter_version}) from {files.path(name)}")
        for problem in unreadable:
            out.print(f"[bold red]could not restore[/] {problem.path}: {problem.reason}"
                      + (f" (moved to {problem.moved_to.name})" if problem.moved_to else ""))

        async def stop_on_signal(scope: trio.CancelScope) -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    out.print("stopping: saving the projects")
                    scope.cancel()  # the master saves every project as it stops
                    return

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop_on_signal, nursery.cancel_scope)
                if store is None:
                    address = await nursery.start(lambda task_status: serve_master_alone(
                        m, host, port, public_host=public_host,
                        certfile=str(certfile) if certfile else None,
                        keyfile=str(keyfile) if keyfile else None, task_status=task_status))
                else:
                    address = await nursery.start(lambda task_status: serve_cluster(
                        m, store, host, port, data_port, public_host=public_host, limits=limits,
                        data_connection_limits=data_caps,
                        certfile=str(certfile) if certfile else None,
                        keyfile=str(keyfile) if keyfile else None, task_status=task_status))
                out.print(f"master      {address.master_url}")
                if store is None:
                    out.print("data server none here: announcing the data servers that "
                              f"register (mlitb data-server --master {address.master_url})")
                else:
                    shown = redact(store_url) if store_url else data_dir
                    out.print(f"data server {address.data_url}  (store: {shown})")
                out.print(f"projects    saved to {files.root} every {autosave_every} "
                          "iterations")
                if operator_token is None:
                    out.print(f"operator token: [bold]{m.operator_token}[/] "
                              "(export MLITB_OPERATOR_TOKEN=... for the CLI and console; "
                              "uploads need it too)")
                out.print("join with: mlitb node join " + address.master_url + "  (Ctrl-C stops)")

        try:
            trio.run(main)
        except BaseException as exc:  # trio may wrap what ends it in exception groups
            error = _leaf(exc, MlitbError)
            if error is not None:
                raise error from None
            os_error = _leaf(exc, OSError)
            if isinstance(os_error, OSError):
                raise MlitbError(f"cannot listen on {host}: "
                                 f"{os_error.strerror or os_error}") from None
            if _leaf(exc, KeyboardInterrupt) is not None:  # a second Ctrl-C while saving
                out.print("master interrupted")
                return
            raise
        out.print("master stopped (projects saved)")

    @app.command("data-server")
    @cli_errors
    def data_server(
        master: MasterOption = DEFAULT_MASTER,
        token: TokenOption = None,
        host: HostOption = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="HTTP port.")] = 8001,
        data_dir: DataDirOption = Path("mlitb-data"),
        store_url: StoreOption = None,
        public_host: Annotated[str | None, typer.Option(
            help="Host name workers should use to reach this data server (it is announced "
            "to them by the master).")] = None,
        max_upload_entries: MaxEntriesOption = DEFAULT_MAX_UPLOAD_ENTRIES,
        max_upload_size: MaxSizeOption = DEFAULT_MAX_UPLOAD_SIZE,
        max_pending_uploads: MaxPendingOption = DEFAULT_MAX_PENDING_UPLOADS,
        max_pending_uploads_per_address: MaxPendingPerAddressOption
        = DEFAULT_MAX_PENDING_UPLOADS_PER_ADDRESS,
        max_data_connections: MaxDataConnectionsOption = DEFAULT_MAX_CONNECTIONS,
        max_data_connections_per_address: MaxDataConnectionsPerAddressOption
        = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        cafile: Annotated[str | None, typer.Option(
            "--cafile", envvar="MLITB_CAFILE", show_default=False,
            help="A CA certificate (PEM) to verify a wss:// master against.")] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    ) -> None:
        """Run a data server alone (on another machine), registering uploads with a master.

        It registers itself with the master, which announces it to workers (run the master
        with --no-data-server, or give both the same shared --store)."""
        from .._connections import ConnectionLimits, fit_to_fd_limit
        from ..cluster import open_store

        limits = upload_limits(max_upload_entries, max_upload_size, max_pending_uploads,
                               max_pending_uploads_per_address)
        (caps,), fd_limit = fit_to_fd_limit(ConnectionLimits(
            max_connections=max_data_connections,
            max_per_address=max_data_connections_per_address))
        if caps.max_connections < max_data_connections:
            out.print(f"[yellow]at most {caps.max_connections} connections[/]: the process may "
                      f"open {fd_limit} files (ulimit -n; each connection needs one)")
        _logging(verbose)
        store = open_store(data_dir, store_url)
        shown = public_host or ("127.0.0.1" if host in ("0.0.0.0", "", "::") else host)
        try:
            trio.run(partial(_standalone_data_server, store, master, token, host, port, shown,
                             limits=limits, connection_limits=caps, cafile=cafile))
        except KeyboardInterrupt:
            out.print("data server stopped")
        except BaseException as exc:  # trio may wrap what ends it in exception groups
            error = _leaf(exc, MlitbError)
            if error is not None:
                raise error from None
            raise


async def _standalone_data_server(store: Any, url: str, token: str | None, host: str,
                                  port: int, shown: str, *, limits: Any,
                                  connection_limits: Any, cafile: str | None) -> None:
    import signal

    from ..dataserver import serve_data_server
    from ..dataserver._registrar import Registrar

    registrar = Registrar(url, token, store, cafile=cafile, say=out.print)

    async def stop_on_signal(scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                out.print("data server stopped")
                scope.cancel()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_signal, nursery.cancel_scope)
        bound = await nursery.start(lambda task_status: serve_data_server(
            store, host, port, task_status=task_status, on_registered=registrar.register,
            check_upload=registrar.check_upload, client_config={"master_url": url},
            upload_token=token,  # writes need the operator token,
            may_contribute=registrar.may_contribute,  # or the project's contributor token
            may_read=registrar.may_read, limits=limits, connection_limits=connection_limits))
        announced = f"http://{f'[{shown}]' if ':' in shown else shown}:{bound}"
        await nursery.start(partial(registrar.run, announced))
        out.print(f"data server http://{host}:{bound}, registering with {url} "
                  f"(announced as {announced})")


class UploadStages:
    """What ``data upload`` shows while it runs, on stderr: a bar with the bytes sent, then
    (the bar at 100%) a spinner while the data server decodes and stores the images, until its
    answer. Without a terminal, one line per stage."""

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size, self.decoding = name, size, False
        self.bar: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> UploadStages:
        if out.is_terminal:
            self.bar = Progress(SpinnerColumn(), "[progress.description]{task.description}",
                                BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                TimeElapsedColumn(), console=out, transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task(f"uploading {self.name}", total=self.size)
        else:
            out.print(f"uploading {self.name} ({self.size / 1e6:.1f} MB) …")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)

    def progress(self, done: int, total: int) -> None:
        decoding = done >= total
        if self.bar is not None:
            self.bar.update(self.task, completed=done, description=(
                f"{self.name}: uploaded, the data server is decoding the images"
                if decoding else f"uploading {self.name}"))
        elif decoding and not self.decoding:
            out.print(f"uploaded {total / 1e6:.1f} MB; the data server is decoding the "
                      f"images …")
        self.decoding = decoding


@data_app.command("upload")
@cli_errors
def upload(
    archive: Annotated[Path, typer.Argument(help="A zip whose folder names are the labels.",
                                            exists=True, dir_okay=False)],
    project: Annotated[str, typer.Option("--project", "-p", envvar="MLITB_PROJECT",
                                         help="The project to add the data to.")],
    test: Annotated[bool, typer.Option("--test", help="Held-out data for the test-error "
                                       "curve (stats workers), not for training.")] = False,
    master: MasterOption = DEFAULT_MASTER,
    token: TokenOption = None,
    data_url: Annotated[str | None, typer.Option(help="The data server's URL (default: the one "
                                                 "the master announces).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the data server's answer as "
                                          "JSON on stdout (progress stays on stderr).")]
    = False,
    cafile: Annotated[str | None, typer.Option(
        "--cafile", envvar="MLITB_CAFILE", show_default=False,
        help="A CA certificate (PEM) to verify a wss:// master and an https:// data server "
        "against.")] = None,
    contributor_token: Annotated[str | None, typer.Option(
        "--contributor-token", envvar="MLITB_CONTRIBUTOR_TOKEN", show_default=False,
        help="The project's contributor token, instead of the operator token.")] = None,
) -> None:
    """Upload a dataset zip to a project's data server, with a progress bar."""
    from ..client import open_operator, upload_failure
    from ..dataserver import DataClient, InputShape

    async def lookup() -> tuple[str | None, InputShape]:
        async with open_operator(master, token, cafile=cafile) as op:
            for p in await op.list_projects():
                if p.name == project:
                    c, h, w = p.input_shape
                    return op.welcome.data_url, InputShape(width=w, height=h, channels=c)
        raise MlitbError(f"no project named {project!r} on the master at {master}")

    announced, shape = trio.run(lookup)
    url = data_url or announced
    if url is None:
        raise MlitbError(f"the master at {master} announces no data server yet: start one "
                         "(mlitb data-server --master ...) or pass --data-url")
    try:
        client = DataClient(url, token=contributor_token or token, cafile=cafile)
    except ValueError as exc:
        raise MlitbError(str(exc)) from None
    size = os.path.getsize(archive)
    split = "test" if test else "train"
    with UploadStages(archive.name, size) as stages:
        try:
            result = client.upload(project, archive, split=split, shape=shape,
                                   progress=stages.progress)
        except Exception as exc:  # noqa: BLE001 (each kind becomes one line; others re-raise)
            raise upload_failure(exc, archive, url) from None
    if as_json:
        typer.echo(json.dumps({"archive": str(archive), "bytes": size, **result}, indent=2))
        return
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(result.get("counts", {}).items()))
    typer.echo(f"stored {result['count']} {'test' if test else 'training'} images in project "
               f"{project} ({counts})")


@data_app.command("delete")
@cli_errors
def delete(
    project: Annotated[str, typer.Option("--project", "-p", envvar="MLITB_PROJECT",
                                         help="The project whose stored data to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
    master: MasterOption = DEFAULT_MASTER,
    token: TokenOption = None,
    data_url: Annotated[str | None, typer.Option(help="The data server's URL (default: the one "
                                                 "the master announces).")] = None,
    cafile: Annotated[str | None, typer.Option(
        "--cafile", envvar="MLITB_CAFILE", show_default=False,
        help="A CA certificate (PEM) to verify a wss:// master and an https:// data server "
        "against.")] = None,
) -> None:
    """Delete a project's stored data from the data server, for good.

    Deleting a project keeps its data (a closure resumed under its name finds it again); this \
removes it. The project must be deleted first: its workers would be left with ids the data \
server no longer has."""
    from ..client import open_operator
    from ..dataserver import DataClient, DataServerError

    async def lookup() -> tuple[str | None, bool]:
        async with open_operator(master, token, need_token=True, cafile=cafile) as op:
            names = {p.name for p in await op.list_projects()}
            return op.welcome.data_url, project in names

    announced, exists = trio.run(lookup)
    if exists:
        raise MlitbError(f"project {project!r} still exists on the master: delete it first "
                         f"(mlitb project delete {project})")
    url = data_url or announced
    if url is None:
        raise MlitbError(f"the master at {master} announces no data server: pass --data-url")
    try:
        client = DataClient(url, token=token, cafile=cafile)
    except ValueError as exc:
        raise MlitbError(str(exc)) from None
    try:
        count = client.info(project)["count"]
    except DataServerError as exc:
        if exc.status == 404:
            raise MlitbError(f"the data server at {url} stores no data for {project!r}") \
                from None
        raise MlitbError(f"the data server at {url}: {exc.detail}") from None
    if not yes and not typer.confirm(f"delete the {count} images stored for {project!r} at "
                                     f"{url}?"):
        raise typer.Exit(1)
    try:
        client.delete(project)
    except DataServerError as exc:
        raise MlitbError(f"the data server at {url} refused: {exc.detail}") from None
    typer.echo(f"deleted the {count} images stored for {project}")
