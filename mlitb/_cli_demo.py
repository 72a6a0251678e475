"""``mlitb demo``: the README's main job, the whole system on one machine.

It starts a master with its data server, creates a project, uploads a dataset over HTTP (the
bundled digits by default), starts node processes (trainers and a stats worker) exactly as
``mlitb node join`` would, and shows training live until the target test accuracy or the time
limit; then it saves the model and lets the nodes leave.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import trio
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from ._cli_common import cli_errors
from ._cli_project import read_spec
from .errors import MlitbError

DIGITS_OPTIMIZER = ("adam", 0.02)  # full-batch-like steps: Adam reaches 90% on digits in ~25


def _write_digits(folder: Path) -> tuple[Path, Path]:
    from .dataserver import write_archive
    from .datasets import digits

    train, test, _ = digits()
    paths = []
    for name, split in (("digits-train.zip", train), ("digits-test.zip", test)):
        paths.append(write_archive(folder / name, [(str(label), image[:, :, 0]) for label, image
                                                   in zip(split.labels, split.images)]))
    return paths[0], paths[1]


def _view(project: Any, elapsed: float, target: float) -> Group:
    status = project.status()
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    accuracy = (f"{1 - status.test_error[-1].error:.1%}" if status.test_error else "-")
    head.add_row("iteration", f"{status.iteration}  (T = {status.iteration_time:g} s)")
    head.add_row("training loss", f"{status.history[-1].loss:.4f}" if status.history else "-")
    head.add_row("test accuracy", f"{accuracy}  (target {target:.0%})")
    head.add_row("data", f"{status.data.total} training ids, {status.data.test} test ids")
    head.add_row("elapsed", f"{elapsed:.0f} s")
    workers = Table("worker", "role", "state", "samples/s", "latency", "allocated", "cached",
                    title="workers", title_justify="left")
    for w in status.workers:
        workers.add_row(str(w.worker_id), w.role, w.state,
                        "-" if w.samples_per_s is None else f"{w.samples_per_s:,.0f}",
                        "-" if w.latency_ms is None else f"{w.latency_ms:.0f} ms",
                        str(w.allocated), str(w.cached))
    return Group(head, workers)


def register_demo(app: typer.Typer) -> None:
    @app.command()
    @cli_errors
    def demo(
        minutes: Annotated[float, typer.Option(min=0.1, max=600,
                                               help="Stop after this many minutes.")] = 3.0,
        target: Annotated[float, typer.Option(min=0.0, max=1.0,
                                              help="Stop at this test accuracy.")] = 0.9,
        output: Annotated[Path, typer.Option("--output", "-o",
                                             help="Where to save the model JSON.")] =
        Path("mlitb-demo-model.json"),
        data: Annotated[Path | None, typer.Option(help="Training zip (folders are labels); "
                                                  "default: scikit-learn's digits.",
                                                  exists=True, dir_okay=False)] = None,
        test: Annotated[Path | None, typer.Option(help="Test zip for the test-error curve.",
                                                  exists=True, dir_okay=False)] = None,
        model: Annotated[Path | None, typer.Option(help="Layer spec JSON (needed with --data).",
                                                   exists=True, dir_okay=False)] = None,
        workers: Annotated[int, typer.Option(min=1, max=64,
                                             help="Trainer processes to start.")] = 2,
        iteration_time: Annotated[float, typer.Option(min=1.0, max=30.0,
                                                      help="T, seconds per iteration.")] = 1.0,
        optimizer: Annotated[str | None, typer.Option(help="Default: adam (digits), "
                                                      "adagrad (the paper's) otherwise.")] = None,
        learning_rate: Annotated[float | None, typer.Option(min=0.0)] = None,
    ) -> None:
        """Run master, data server and nodes on this machine and train until the target."""
        from .datasets import DIGITS_SPEC

        if not output.parent.is_dir():  # fail now, not after minutes of training
            raise MlitbError(f"cannot save the model to {output}: no such directory "
                             f"{output.parent}")
        if data is not None and model is None:
            raise MlitbError("--data needs --model SPEC.json (the network for that data)")
        if (test is not None or model is not None) and data is None:
            raise MlitbError("--test and --model go with --data ZIP")
        spec = DIGITS_SPEC if model is None else read_spec(model)
        default_opt = DIGITS_OPTIMIZER if data is None else ("adagrad", 0.01)
        opt = optimizer or default_opt[0]
        lr = learning_rate if learning_rate is not None else (
            default_opt[1] if optimizer is None else None)
        with tempfile.TemporaryDirectory(prefix="mlitb-demo-") as tmp:
            folder = Path(tmp)
            if data is None:
                data, test = _write_digits(folder)
            trio.run(_run_demo, folder, spec, data, test, output, minutes, target, workers,
                     iteration_time, opt, lr)


async def _run_demo(folder: Path, spec: list[dict[str, Any]], data: Path, test: Path | None,
                    output: Path, minutes: float, target: float, workers: int,
                    iteration_time: float, optimizer: str, learning_rate: float | None) -> None:
    from .cluster import open_store, serve_cluster
    from .dataserver import DataClient, DataServerError
    from .master import Master, RequestError
    from .nn import save_model

    out = Console()
    master = Master()
    store = open_store(folder)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(lambda task_status: serve_cluster(
            master, store, "127.0.0.1", 0, 0, task_status=task_status))
        hp = {} if learning_rate is None else {"learning_rate": learning_rate}
        try:
            project = master.create_project("demo", spec, iteration_time=iteration_time,
                                            optimizer=optimizer, hyperparameters=hp, seed=0)
        except RequestError as exc:
            raise MlitbError(str(exc)) from None
        out.print(f"master {address.master_url}, data server {address.data_url}")
        client = DataClient(address.data_url)
        for archive, split in ((data, "train"), (test, "test")):
            if archive is None:
                continue
            with out.status(f"uploading {archive.name} ({split})"):
                try:
                    result = await trio.to_thread.run_sync(
                        lambda: client.upload("demo", archive, split=split))
                except DataServerError as exc:
                    raise MlitbError(f"{archive.name} was refused: {exc.detail}") from None
            out.print(f"uploaded {result['count']} {split} images, "
                      f"labels: {', '.join(result['labels'][:12])}")
        logs = [open(folder / f"node-{task}.log", "w") for task in ("train", "stats")]
        commands = [[sys.executable, "-m", "mlitb", "node", "join", address.master_url,
                     "--project", "demo", "--workers", str(workers), "--seed", "0"]]
        if test is not None:
            commands.append([*commands[0][:-4], "--task", "stats", "--workers", "1"])
        nodes = [subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL) for cmd, log in zip(commands, logs)]
        out.print(f"started {workers} trainer process(es)"
                  + (" and a stats worker" if test is not None else ""))
        start = trio.current_time()
        accuracy = 0.0
        try:
            with Live(_view(project, 0, target), console=out, refresh_per_second=4) as live:
                while trio.current_time() - start < minutes * 60:
                    await trio.sleep(0.5)
                    live.update(_view(project, trio.current_time() - start, target))
                    if any(p.poll() not in (None, 0) for p in nodes):
                        raise MlitbError("a node process failed; its log: "
                                         + str(folder / "node-train.log"))
                    if test is not None and project.test_error:
                        accuracy = 1 - project.test_error[-1].error
                    elif test is None and project.history:
                        accuracy = project.history[-1].accuracy or 0.0
                    if accuracy >= target:
                        break
        finally:
            out.print()
            for p in nodes:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            with trio.move_on_after(10):
                while any(p.poll() is None for p in nodes):
                    await trio.sleep(0.1)
            for p in nodes:
                if p.poll() is None:
                    p.kill()
            for log in logs:
                log.close()
        try:
            save_model(project.net, output)
        except OSError as exc:
            raise MlitbError(f"cannot save the model to {output}: {exc.strerror}") from None
        what = "test" if test is not None else "training"
        reached = "reached" if accuracy >= target else "did not reach"
        out.print(f"{reached} the target {target:.0%}: {what} accuracy {accuracy:.1%} after "
                  f"{project.iteration} iterations")
        out.print(f"model saved to {output}")
        nursery.cancel_scope.cancel()
