"""Time to accuracy: CIFAR-10 to 70% test accuracy through the real system, and PyTorch beside it.

For each node count (default 2, then 1) it runs the real thing on this machine: a master with its
embedded data server, the CIFAR-10 demo net, the training zip uploaded over HTTP (not timed), and
one ``mlitb node join --workers N`` process with N trainer processes. The clock starts at the
first work order. The benchmark copies the parameters after every step (cheap: 90 KB) and, once
training is over, evaluates them on the whole test set, so the curve costs the workers nothing.
It prints the test-accuracy curve over time, the time to the target and the best accuracy.

The recipe is the project's (``--algorithm local`` with Nesterov SGD inner steps, a warmup +
cosine schedule over ``--seconds``, horizontal flips, T = 0.5 s); ``--algorithm gradient`` runs
the paper's AdaGrad recipe for comparison. With PyTorch installed, the same net trains on one
thread with a good recipe (SGD-Nesterov, batch 64, the same schedule and augmentation) in the
same invocation, its clock paused while it is evaluated, and the ratio is printed.

``--wire float32,float16,int8`` runs each node count once per wire kind (``training.wire``:
how results and parameters travel) in the same invocation and reports each run's bytes per
round: a PARAMETERS frame and a RESULT frame per trainer, sizes exact by the protocol
(WebSocket framing aside), and the rounds and results the master took.

Data: ../shared/data/cifar10-{train,test}.zip (skips with a reason when missing).

    python -m mlitb.bench.train [--nodes 2,1] [--seconds 60] [--target 0.7] [--wire float32] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio

from mlitb.bench.engine import blas_info, one_thread, torch_model
from mlitb.datasets import CIFAR10_NETS
from mlitb.protocol import Training, parameters_encoding, payload_size, result_encoding

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PROJECT = "cifar"
EVERY = 3.0
"""Seconds of training between two evaluated points of the curve."""


@dataclass(frozen=True)
class Recipe:
    """How the project trains (``create_project``'s settings)."""

    optimizer: str
    hyperparameters: dict[str, float]
    training: Training
    iteration_time: float = 1.0
    net: str = "fast"
    """Which of ``mlitb.datasets.CIFAR10_NETS`` trains."""

    @property
    def spec(self) -> list[dict[str, object]]:
        return CIFAR10_NETS[self.net]


def recipe(algorithm: str, seconds: float, net: str = "fast") -> Recipe:
    """The demo's CIFAR-10 recipe for a run of ``seconds`` (``mlitb demo`` uses the same)."""
    from mlitb.recipes import cifar10_recipe

    optimizer, hp, training, t = cifar10_recipe(algorithm, seconds, net=net)
    return Recipe(optimizer, hp, training, t, net)


@dataclass
class Curve:
    """Test accuracy over training time (seconds since the first work order)."""

    label: str
    points: list[tuple[float, float]] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0
    wire: str = "float32"
    rounds: int = 0
    """Iterations whose work orders went out (each broadcast one PARAMETERS frame)."""
    results: int = 0
    """Results the master took (not refused)."""
    num_params: int = 0
    point_samples: list[int] = field(default_factory=list)
    """Samples trained at each point of the curve: accuracy per sample does not depend on how
    fast a shared machine lets the workers compute."""
    load: tuple[float, float] = (0.0, 0.0)
    """The machine's 1-minute load average before and after the run."""

    @property
    def bytes_per_round(self) -> dict[str, int]:
        """Per trainer and round: the PARAMETERS frame it receives and the RESULT it sends."""
        return wire_bytes(self.wire, self.num_params)

    def time_to(self, target: float) -> float | None:
        return next((t for t, acc in self.points if acc >= target), None)

    def samples_to(self, target: float) -> int | None:
        return next((n for (_, acc), n in zip(self.points, self.point_samples)
                     if acc >= target), None)

    @property
    def best(self) -> float:
        return max((acc for _, acc in self.points), default=0.0)


def wire_bytes(wire: str, num_params: int) -> dict[str, int]:
    """The exact frame sizes of one round for one trainer in ``wire`` (headers 24 and 40)."""
    parameters = 24 + payload_size(parameters_encoding(wire), num_params)
    result = 40 + payload_size(result_encoding(wire), num_params)
    return {"parameters": parameters, "result": result, "total": parameters + result}


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from mlitb.dataserver._ingest import InputShape, decode_archive

    decoded = decode_archive(path, InputShape(width=32, height=32, channels=3))
    return decoded.images, decoded.labels.astype(np.int64)


def _accuracy(params: np.ndarray, x: np.ndarray, y: np.ndarray,
              spec: list[dict[str, object]] = CIFAR10_NETS["fast"]) -> float:
    from mlitb.datasets import pixels_to_input
    from mlitb.nn import Net

    net = Net(spec, params=params)
    correct = 0
    for i in range(0, len(y), 500):
        correct += net.evaluate(pixels_to_input(x[i:i + 500]), y[i:i + 500]).correct
    return correct / len(y)


# -- the real system -------------------------------------------------------------------------------
async def _run_system(nodes: int, rec: Recipe, seconds: float, folder: Path, train_zip: Path,
                      log: Any) -> tuple[list[tuple[float, np.ndarray, int]], int, dict[str, int]]:
    from mlitb.cluster import open_store, serve_cluster
    from mlitb.dataserver import DataClient
    from mlitb.master import Master

    master = Master()
    store = open_store(folder / f"store-{nodes}")
    snapshots: list[tuple[float, np.ndarray, int]] = []
    async with trio.open_nursery() as nursery:
        address = await nursery.start(lambda task_status: serve_cluster(
            master, store, "127.0.0.1", 0, 0, task_status=task_status))
        project = master.create_project(PROJECT, rec.spec, iteration_time=rec.iteration_time,
                                        optimizer=rec.optimizer,
                                        hyperparameters=rec.hyperparameters, seed=0,
                                        training=rec.training)
        counts = {"rounds": 0, "results": 0, "refused": 0, "num_params": project.net.num_params}
        accept, plan = project.accept_result, project.plan_iteration

        def counting_accept(worker_id: int, frame: Any, now: float) -> Any:
            refused = accept(worker_id, frame, now)
            counts["refused" if refused is not None else "results"] += 1
            return refused

        def counting_plan(now: float) -> Any:
            counts["rounds"] += 1
            return plan(now)

        project.accept_result = counting_accept  # type: ignore[method-assign]
        project.plan_iteration = counting_plan  # type: ignore[method-assign]
        print(f"  uploading {train_zip.name} (not timed)", file=log, flush=True)
        await trio.to_thread.run_sync(lambda: DataClient(
            address.data_url, token=master.operator_token).upload(PROJECT,
                                                                                   train_zip))
        proc = subprocess.Popen([sys.executable, "-m", "mlitb", "node", "join",
                                 address.master_url, "--project", PROJECT, "--workers",
                                 str(nodes), "--seed", "0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            with trio.fail_after(120):
                while project.current is None:
                    await trio.sleep(0.005)
            start = trio.current_time()
            counts.update(rounds=1, results=0, refused=0)  # from the first work order on
            version = project.parameter_version
            last_print = 0.0
            while (now := trio.current_time() - start) < seconds:
                if project.parameter_version != version:
                    version = project.parameter_version
                    snapshots.append((now, project.net.params.copy(),
                                      project.samples_trained))
                if now - last_print >= 10:
                    last_print = now
                    print(f"  {now:5.0f} s  iteration {project.iteration}  "
                          f"{project.samples_trained:,} samples", file=log, flush=True)
                await trio.sleep(0.02)
            samples = project.samples_trained
            taken = dict(counts)  # what the clock covered, not the shutdown
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            nursery.cancel_scope.cancel()
    return snapshots, samples, taken


def run_system(nodes: int, rec: Recipe, seconds: float, train_zip: Path,
               test: tuple[np.ndarray, np.ndarray], log: Any) -> Curve:
    """Train with ``nodes`` trainer processes for ``seconds``; the curve of every ``EVERY`` s."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mlitb-bench-train-") as tmp:
        snapshots, samples, counts = trio.run(_run_system, nodes, rec, seconds, Path(tmp),
                                              train_zip, log)
    wire = rec.training.wire
    curve = Curve(f"mlitb, {nodes} node{'s' if nodes > 1 else ''}"
                  + (f", {wire}" if wire != "float32" else ""), samples=samples,
                  seconds=seconds, wire=wire, rounds=counts["rounds"],
                  results=counts["results"], num_params=counts["num_params"],
                  load=(load_before, os.getloadavg()[0]))
    print(f"  evaluating {len(snapshots)} steps' parameters on {len(test[1]):,} test images",
          file=log, flush=True)
    chosen: list[tuple[float, np.ndarray, int]] = []
    for snapshot in snapshots:
        if not chosen or snapshot[0] - chosen[-1][0] >= EVERY:
            chosen.append(snapshot)
    if snapshots and chosen[-1][0] != snapshots[-1][0]:
        chosen.append(snapshots[-1])
    curve.points = [(t, _accuracy(p, *test, rec.spec)) for t, p, _ in chosen]
    curve.point_samples = [n for _, _, n in chosen]
    return curve


# -- PyTorch on one thread -------------------------------------------------------------------------
def run_torch(seconds: float, target: float, train: tuple[np.ndarray, np.ndarray],
              test: tuple[np.ndarray, np.ndarray], log: Any,
              spec: list[dict[str, object]] = CIFAR10_NETS["fast"]) -> Curve | None:
    """The same net in PyTorch on one thread: SGD-Nesterov (lr 0.05, momentum 0.9, weight decay
    5e-4), batch 64, the warmup + cosine schedule over ``seconds``, shift 4 + flip. The clock
    stops while it is evaluated (every ``EVERY`` s of training)."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    from mlitb.nn import Net
    from mlitb.training import lr_factor

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch_model(Net(spec, seed=0))
    peak = 0.05
    opt = torch.optim.SGD(model.parameters(), lr=peak, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    schedule = Training(schedule="cosine", horizon=seconds, horizon_unit="seconds", warmup=0.15)
    x_train = torch.from_numpy(train[0].astype(np.float32) / 255.0 - 0.5)
    y_train = torch.from_numpy(train[1])
    x_test = torch.from_numpy(test[0].astype(np.float32) / 255.0 - 0.5)
    y_test = torch.from_numpy(test[1])
    curve = Curve("PyTorch, 1 thread", seconds=seconds)
    gen = torch.Generator().manual_seed(0)
    trained, next_eval = 0.0, EVERY
    while trained < seconds:
        for idx in torch.randperm(len(y_train), generator=gen).split(64):
            tick = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = peak * lr_factor(schedule, trained / seconds)
            xb = F.pad(x_train[idx], (4, 4, 4, 4))
            dy, dx = (int(v) for v in torch.randint(0, 9, (2,), generator=gen))
            xb = xb[:, :, dy:dy + 32, dx:dx + 32]  # one shift per batch: cheap, as good here
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            opt.zero_grad()
            F.cross_entropy(model(xb), y_train[idx]).backward()
            opt.step()
            curve.samples += len(idx)
            trained += time.perf_counter() - tick
            if trained >= next_eval or trained >= seconds:
                next_eval += EVERY
                with torch.no_grad():
                    correct = sum(int((model(x_test[i:i + 1000]).argmax(1)
                                       == y_test[i:i + 1000]).sum())
                                  for i in range(0, len(y_test), 1000))
                curve.points.append((trained, correct / len(y_test)))
                if correct / len(y_test) >= target and trained >= seconds / 2:
                    print(f"  PyTorch reached {target:.0%} at {trained:.0f} s", file=log,
                          flush=True)
            if trained >= seconds:
                break
    return curve


# -- report ----------------------------------------------------------------------------------------
def run(node_counts: Sequence[int] = (2, 1), seconds: float = 60.0, target: float = 0.7,
        algorithm: str = "local", with_torch: bool = True, torch_seconds: float = 120.0,
        as_json: bool = False, net: str = "fast",
        wires: Sequence[str] = ("float32",)) -> dict[str, Any]:
    train_zip, test_zip = DATA / "cifar10-train.zip", DATA / "cifar10-test.zip"
    if not (train_zip.exists() and test_zip.exists()):
        print(f"skipped: the CIFAR-10 zips are not at {DATA} (see ../shared/data/README.md)")
        return {"skipped": f"no CIFAR-10 zips at {DATA}"}
    log = sys.stderr if as_json else sys.stdout
    print(f"decoding {test_zip.name} for evaluation", file=log, flush=True)
    test = _decode(test_zip)
    rec = recipe(algorithm, seconds, net)
    curves: list[Curve] = []
    for n in node_counts:
        for wire in wires:
            print(f"mlitb with {n} node(s), {algorithm}, {wire} wire, {seconds:g} s", file=log,
                  flush=True)
            wired = dataclasses.replace(rec, training=dataclasses.replace(rec.training,
                                                                          wire=wire))
            curves.append(run_system(n, wired, seconds, train_zip, test, log))
    torch_curve = None
    if with_torch:
        print(f"PyTorch, one thread, {torch_seconds:g} s", file=log, flush=True)
        with one_thread():
            torch_curve = run_torch(torch_seconds, target, _decode(train_zip), test, log,
                                    rec.spec)
        if torch_curve is None:
            print("  PyTorch is not installed: no reference run", file=log)
    result: dict[str, Any] = {
        "target": target, "seconds": seconds, "algorithm": algorithm, "net": net,
        "recipe": {"optimizer": rec.optimizer, "hyperparameters": rec.hyperparameters,
                   "training": asdict(rec.training), "iteration_time": rec.iteration_time},
        "blas": blas_info(),
        "runs": [{"label": c.label, "time_to_target": c.time_to(target), "best": c.best,
                  "samples": c.samples, "samples_per_s": c.samples / c.seconds if c.seconds
                  else None, "curve": c.points}
                 | ({"wire": c.wire, "rounds": c.rounds, "results": c.results,
                     "samples_to_target": c.samples_to(target),
                     "curve_samples": c.point_samples,
                     "parameters": c.num_params, "bytes_per_round_per_trainer":
                     c.bytes_per_round, "load_average": list(c.load)}
                    if c.num_params else {})
                 for c in curves + ([torch_curve] if torch_curve else [])],
    }
    # The speedup compares node counts at the first wire kind.
    by_wire = [c for c in curves if c.wire == wires[0]]
    first, second = (c.time_to(target) for c in by_wire[:2]) if len(by_wire) >= 2 \
        else (None, None)
    if first and second:
        result["speedup"] = second / first
    ours = curves[0].time_to(target) if curves else None
    theirs = torch_curve.time_to(target) if torch_curve is not None else None
    if ours and theirs:
        result["torch_over_mlitb"] = theirs / ours
    if as_json:
        print(json.dumps(result, indent=2))
        return result
    _print(result, target)
    return result


def _print(result: dict[str, Any], target: float) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    for run_ in result["runs"]:
        table = Table("seconds", "test accuracy", title=run_["label"], title_justify="left")
        for t, acc in run_["curve"]:
            table.add_row(f"{t:.1f}", f"{acc:.1%}")
        out.print(table)
    summary = Table("run", f"time to {target:.0%}", f"samples to {target:.0%}", "best",
                    "samples/s", "bytes/round/trainer", "rounds", "load")
    for run_ in result["runs"]:
        ttt = run_["time_to_target"]
        wire = run_.get("bytes_per_round_per_trainer")
        sto = run_.get("samples_to_target")
        summary.add_row(run_["label"], "not reached" if ttt is None else f"{ttt:.1f} s",
                        "–" if sto is None else f"{sto:,}", f"{run_['best']:.1%}",
                        f"{run_['samples_per_s'] or 0:,.0f}",
                        f"{wire['total']:,}" if wire else "–", str(run_.get("rounds", "–")),
                        " → ".join(f"{x:.1f}" for x in run_.get("load_average", [])) or "–")
    out.print(summary)
    if "speedup" in result:
        out.print(f"speedup of the first node count over the second: {result['speedup']:.2f}x")
    if "torch_over_mlitb" in result:
        out.print(f"PyTorch's time to {target:.0%} / mlitb's: {result['torch_over_mlitb']:.2f}")


def wire_kinds(text: str) -> list[str]:
    """``float32,int8`` -> the wire kinds, checked (``ValueError`` names a wrong one)."""
    kinds = [w.strip() for w in text.split(",") if w.strip()]
    for kind in kinds:
        if kind not in ("float32", "float16", "int8"):
            raise ValueError(f"--wire: {kind!r} is not float32, float16 or int8")
    if not kinds:
        raise ValueError("--wire: name at least one of float32, float16, int8")
    return kinds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="2,1", help="comma-separated node counts")
    parser.add_argument("--seconds", type=float, default=60.0, help="training time per run")
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--algorithm", choices=("local", "gradient"), default="local")
    parser.add_argument("--net", choices=sorted(CIFAR10_NETS), default="fast",
                        help="the demo's net (fast, default) or the paper's ConvNetJS net")
    parser.add_argument("--wire", default="float32",
                        help="comma-separated wire kinds: float32, float16, int8")
    parser.add_argument("--torch-seconds", type=float, default=120.0)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.nodes.split(",") if n.strip()]
    run(counts, args.seconds, args.target, args.algorithm, not args.no_torch,
        args.torch_seconds, args.json, args.net, wire_kinds(args.wire))
    return 0


if __name__ == "__main__":
    sys.exit(main())
