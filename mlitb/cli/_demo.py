"""``mlitb demo``: the README's main job, the whole system on one machine.

It starts a master with its data server, creates a project, uploads a dataset over HTTP (the
bundled digits by default), starts node processes (trainers and a stats worker) exactly as
``mlitb node join`` would, and shows training live until the target test accuracy or the time
limit; then it saves the model and its research closure and lets the nodes leave. Projects train
with local steps and a schedule over the run by default (``mlitb.recipes``); ``--algorithm
gradient`` runs the paper's algorithm.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import trio
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from ._common import cli_errors
from ._project import read_spec
from ..errors import MlitbError
from ..protocol import MAX_ITERATION_TIME, MIN_ITERATION_TIME, Training
from ..recipes import cifar10_recipe, digits_recipe



def _write_digits(folder: Path) -> tuple[Path, Path]:
    from ..dataserver import write_archive
    from ..datasets import digits

    train, test, _ = digits()
    paths = []
    for name, split in (("digits-train.zip", train), ("digits-test.zip", test)):
        paths.append(write_archive(folder / name, [(str(label), image[:, :, 0]) for label, image
                                                   in zip(split.labels, split.images)]))
    return paths[0], paths[1]


def _test_accuracy(net: Any, archive: Path) -> float:
    """The accuracy of ``net`` on every image of the test zip, decoded as the data server
    does (labels by name: the project's label map may order them differently)."""
    from ..dataserver._ingest import InputShape, decode_archive
    from ..datasets import pixels_to_input

    c, h, w = net.input_shape
    decoded = decode_archive(archive, InputShape(width=w, height=h, channels=c))
    index = {name: i for i, name in enumerate(net.labels)}
    labels = np.array([index.get(decoded.label_names[int(k)], -1) for k in decoded.labels])
    known = labels >= 0  # a label the net has no output for counts as wrong
    images, labels = decoded.images[known], labels[known]
    correct = 0
    for i in range(0, len(labels), 500):
        correct += net.evaluate(pixels_to_input(images[i:i + 500]), labels[i:i + 500]).correct
    return correct / max(1, len(known))


def _view(project: Any, elapsed: float, target: float) -> Group:
    status = project.status()
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    accuracy = "-"
    if status.test_error:
        last = status.test_error[-1]
        whole = last.samples >= status.data.test
        accuracy = f"{1 - last.error:.1%} ({'all' if whole else 'a subset of'} {last.samples:,})"
    training = status.training
    if training.algorithm == "local":
        head.add_row("algorithm", f"local steps ({status.optimizer}, batch "
                     f"{training.batch_size}), outer {training.outer_optimizer}")
    else:
        head.add_row("algorithm", f"gradient ({status.optimizer} on the master)")
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
        target: Annotated[float | None, typer.Option(
            min=0.0, max=1.0, show_default=False,
            help="Stop at this test accuracy (default: 0.95 on digits, 0.7 with --data).")]
        = None,
        output: Annotated[Path, typer.Option("--output", "-o",
                                             help="Where to save the model JSON; the research "
                                             "closure goes beside it (NAME.closure.json).")] =
        Path("mlitb-demo-model.json"),
        data: Annotated[Path | None, typer.Option(help="Training zip (folders are labels); "
                                                  "default: scikit-learn's digits.",
                                                  exists=True, dir_okay=False)] = None,
        test: Annotated[Path | None, typer.Option(help="Test zip for the test-error curve.",
                                                  exists=True, dir_okay=False)] = None,
        model: Annotated[Path | None, typer.Option(
            help="Layer spec JSON (default with --data: the CIFAR-10 demo net for 32x32 RGB "
                 "images, mlitb.datasets.CIFAR10_FAST_SPEC).",
            exists=True, dir_okay=False)] = None,
        workers: Annotated[int, typer.Option(min=1, max=64,
                                             help="Trainer processes to start.")] = 2,
        iteration_time: Annotated[float | None, typer.Option(
            min=MIN_ITERATION_TIME, max=MAX_ITERATION_TIME, show_default=False,
            help="T, seconds per iteration (default: the recipe's, 1 s on digits, 0.5 s with "
                 "--data).")] = None,
        algorithm: Annotated[str, typer.Option(
            help="local: local steps on the workers, averaged every T (mlitb.recipes); "
                 "gradient: the paper's (one AdaGrad step per iteration on the master).")] =
        "local",
        augment: Annotated[bool | None, typer.Option(
            "--augment/--no-augment", show_default=False,
            help="Random shifts and flips of training images (default: on for colour "
                 "images, off for grayscale such as digits).")] = None,
        optimizer: Annotated[str | None, typer.Option(help="Override the recipe's optimizer "
                                                      "(the workers' inner one with local).")]
        = None,
        learning_rate: Annotated[float | None, typer.Option(min=0.0)] = None,
        wire: Annotated[str, typer.Option(
            help="How results travel: float32, float16, or int8 blocks with error feedback "
                 "on the workers; parameters go as float16 with either compressed kind "
                 "(docs/protocol.md).")] = "float32",
    ) -> None:
        """Run master, data server and nodes on this machine and train until the target."""
        from ..datasets import CIFAR10_FAST_SPEC, DIGITS_SPEC

        if not output.parent.is_dir():  # fail now, not after minutes of training
            raise MlitbError(f"cannot save the model to {output}: no such directory "
                             f"{output.parent}")
        if (test is not None or model is not None) and data is None:
            raise MlitbError("--test and --model go with --data ZIP")
        if target is None:
            target = 0.95 if data is None else 0.7
        if algorithm not in ("local", "gradient"):
            raise typer.BadParameter("local or gradient", param_hint="--algorithm")
        if wire not in ("float32", "float16", "int8"):
            raise typer.BadParameter("float32, float16 or int8", param_hint="--wire")
        if model is not None:
            spec = read_spec(model)
        else:  # the digits, or the CIFAR-10 demo net for --data
            spec = DIGITS_SPEC if data is None else [dict(d) for d in CIFAR10_FAST_SPEC]
        depth = spec[0].get("out_depth", 1)
        channels = depth if isinstance(depth, int) else 1
        if data is None:
            recipe = digits_recipe(algorithm)
        else:
            recipe = cifar10_recipe(algorithm, seconds=minutes * 60,
                                    augment=channels == 3 if augment is None else augment)
        opt, hp, training, recipe_t = recipe
        if iteration_time is None:
            iteration_time = recipe_t
        if augment is not None and data is None:
            training = dataclasses.replace(training, shift=2 if augment else 0, flip=False)
        if optimizer is not None and optimizer != opt:
            opt, hp = optimizer, {}
        if learning_rate is not None:
            hp = {**hp, "learning_rate": learning_rate}
        training = dataclasses.replace(training, wire=wire)  # type: ignore[arg-type]
        with tempfile.TemporaryDirectory(prefix="mlitb-demo-") as tmp:
            folder = Path(tmp)
            if data is None:
                data, test = _write_digits(folder)
            trio.run(_run_demo, folder, spec, data, test, output, minutes, target, workers,
                     iteration_time, opt, hp, training)


async def _run_demo(folder: Path, spec: list[dict[str, Any]], data: Path, test: Path | None,
                    output: Path, minutes: float, target: float, workers: int,
                    iteration_time: float, optimizer: str, hyperparameters: dict[str, float],
                    training: Training) -> None:
    from ..cluster import open_store, serve_cluster
    from ..dataserver import DataClient, DataServerError
    from ..master import Master, RequestError
    from ..closure import closure_from_dict, save_closure
    from ..nn import save_model

    out = Console()
    master = Master()
    store = open_store(folder)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(lambda task_status: serve_cluster(
            master, store, "127.0.0.1", 0, 0, task_status=task_status))
        try:
            project = master.create_project("demo", spec, iteration_time=iteration_time,
                                            optimizer=optimizer, hyperparameters=hyperparameters,
                                            seed=0, training=training)
        except RequestError as exc:
            raise MlitbError(str(exc)) from None
        out.print(f"master {address.master_url}, data server {address.data_url}")
        client = DataClient(address.data_url, token=master.operator_token)  # its own master
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
        elapsed = trio.current_time() - start
        closure_path = output.with_name(output.name.removesuffix(".json") + ".closure.json")
        try:
            save_model(project.net, output)
            save_closure(closure_from_dict(master.closure_of("demo")), closure_path)
        except OSError as exc:
            raise MlitbError(f"cannot save the model to {output}: {exc.strerror}") from None
        what = "test" if test is not None else "training"
        reached = "reached" if accuracy >= target else "did not reach"
        out.print(f"{reached} the target {target:.0%}: {what} accuracy {accuracy:.1%} after "
                  f"{project.iteration} iterations ({elapsed:.0f} s)")
        if test is not None:  # the curve may show a subset, and an older version: the truth
            with out.status("evaluating the saved model on the whole test set"):
                final = await trio.to_thread.run_sync(lambda: _test_accuracy(project.net, test))
            out.print(f"the saved model: {final:.1%} on the whole test set")
        out.print(f"model saved to {output.resolve()}")
        out.print(f"research closure saved to {closure_path.resolve()}")
        nursery.cancel_scope.cancel()
