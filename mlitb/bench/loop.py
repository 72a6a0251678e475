"""The synchronized loop's throughput and the master's cost per round.

Part 1 runs the real system on this machine: a master with its data server, the CIFAR-10 demo net,
T = 2 s, and 1 then 2 local node processes (one worker each). Per iteration it records every
worker's sample count and compute time (through the master's replaceable reducer), and reports
the aggregate samples/s and the share of each iteration the workers spent computing (target:
>= 90%).

Part 2 measures the master alone with many simulated workers, for each count of ``--simulated``
(default 100, 250, 500, 1000): child processes (at most 250 connections each) open N WebSocket
connections that answer each work order at once with a gradient of the right length. With
T = 2 s the master reports, per round, the time from the first work order sent to the last
result received, its reduce time, its CPU seconds per round and their share of T (target:
under 10% at 1,000 workers), and its resident memory. On a 2-core machine the simulated
workers share the cores with the master, so the round time includes their own CPU; the
master's CPU per round does not.

Data: the CIFAR-10 test split from ../shared/data (10,000 images) when present, else random
images of the same shape (the figures are about speed, not accuracy).

    python -m mlitb.bench.loop [--iterations 6] [--nodes 1,2] [--simulated 100,250,500,1000]
        [--wire float32,int8] [--json]
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trio

from mlitb.bench.engine import DEMO_NET

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-test.zip"
PROJECT = "cifar"


@dataclass
class LoopFigures:
    nodes: int
    iterations: int
    samples_per_s: float
    compute_share: float
    """Mean over workers and iterations of compute seconds / T."""
    worker_rates: list[float]


@dataclass
class MasterFigures:
    workers: int
    wire: str
    """The project's ``training.wire``: how parameters and results travel."""
    rounds: int
    round_ms: float
    """First work order sent -> last result received (median)."""
    reduce_ms: float
    cpu_ms_per_round: float
    cpu_share_of_t: float
    """Master CPU per round / T."""
    rss_mb: float
    """The master process's resident memory after the rounds."""


def _dataset(folder: Path) -> Path:
    if SHARED.exists():
        return SHARED
    from mlitb.dataserver import write_archive

    rng = np.random.default_rng(0)
    return write_archive(folder / "random.zip", ((f"c{i % 10}", rng.integers(
        0, 256, (32, 32, 3), dtype=np.uint8)) for i in range(2000)), image_format="PNG")


def _recording_reducer(records: list[list[tuple[int, float]]]) -> Any:
    from mlitb.training import reduce_gradient_sums

    def reducer(results: Sequence[Any], params: np.ndarray, optimizer: Any) -> Any:
        records.append([(r.samples, r.compute_seconds) for r in results])
        return reduce_gradient_sums(results, params, optimizer)

    return reducer


async def _measure_loop(nodes: int, iterations: int, t: float, folder: Path) -> LoopFigures:
    from mlitb.cluster import open_store, serve_cluster
    from mlitb.dataserver import DataClient
    from mlitb.master import Master

    master = Master()
    store = open_store(folder / f"store-{nodes}")
    records: list[list[tuple[int, float]]] = []
    async with trio.open_nursery() as nursery:
        address = await nursery.start(lambda task_status: serve_cluster(
            master, store, "127.0.0.1", 0, 0, task_status=task_status))
        project = master.create_project(PROJECT, DEMO_NET, iteration_time=t, seed=0)
        archive = _dataset(folder)
        await trio.to_thread.run_sync(lambda: DataClient(
            address.data_url, token=master.operator_token).upload(PROJECT,
                                                                                   archive))
        procs = [subprocess.Popen([sys.executable, "-m", "mlitb", "node", "join",
                                   address.master_url, "--project", PROJECT, "--workers", "1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True) for _ in range(nodes)]
        try:
            def ready() -> bool:
                ws = [w for w in project.status().workers if w.role == "trainer"]
                return len(ws) == nodes and all(w.state == "training" and w.cached == w.allocated
                                                for w in ws)

            with trio.fail_after(300):
                while not ready():
                    await trio.sleep(0.2)
            await trio.sleep(2 * t)  # let the budgets settle
            project.reducer = _recording_reducer(records)
            with trio.fail_after(iterations * t * 3 + 30):
                while len(records) < iterations:
                    await trio.sleep(0.1)
            rates = [w.samples_per_s or 0.0 for w in project.status().workers]
        finally:
            for p in procs:
                os.killpg(p.pid, signal.SIGINT)
            for p in procs:
                p.wait()
            nursery.cancel_scope.cancel()
    samples = [sum(s for s, _ in rnd) for rnd in records]
    shares = [c / t for rnd in records for _, c in rnd]
    return LoopFigures(nodes, len(records), statistics.mean(samples) / t,
                       statistics.mean(shares), rates)


async def _simulated_workers(url: str, n: int) -> None:
    """Run in a child process: ``n`` trainers that answer each work order at once."""
    from trio_websocket import ConnectionClosed, open_websocket_url

    from mlitb.protocol import (
        MAX_LARGE_TEXT_FRAME, Encoding, Hello, ParametersFrame, Welcome, Work, decode_frame,
        decode_text, encode_result, encode_text, result_encoding,
    )

    async def worker(i: int) -> None:
        async with open_websocket_url(url, max_message_size=MAX_LARGE_TEXT_FRAME) as ws:
            await ws.send_message(encode_text(Hello(role="trainer", client="python",
                                                    host=f"sim-{i}", project=PROJECT)))
            grad = None
            encoding = Encoding.FLOAT32
            try:
                while True:
                    data = await ws.get_message()
                    if isinstance(data, bytes):
                        frame = decode_frame(data)
                        if isinstance(frame, ParametersFrame) and grad is None:
                            grad = np.full(frame.vector.size, 1e-3, np.float32)
                        continue
                    msg = decode_text(data, max_size=MAX_LARGE_TEXT_FRAME)
                    if isinstance(msg, Welcome):
                        grad = np.full(msg.project.parameter_count, 1e-3, np.float32)
                        # The project's wire kind (the master refuses any other).
                        encoding = result_encoding(msg.project.training.wire)
                    elif isinstance(msg, Work) and grad is not None:
                        await ws.send_message(encode_result(
                            grad, parameter_version=msg.parameter_version, samples=100,
                            loss_sum=230.0, correct=10, compute_seconds=0.01,
                            encoding=encoding))
            except ConnectionClosed:
                return

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(worker, i)


PER_PROCESS = 250
"""Simulated workers per child process."""
MASTER_T = 2.0


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _measure_master(n: int, rounds: int, wire: str = "float32") -> MasterFigures:
    from mlitb.master import Master
    from mlitb.protocol import Training
    from mlitb.training import reduce_gradient_sums

    master = Master()
    reduce_times: list[float] = []
    round_times: list[float] = []
    cpu: list[float] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(master.serve, "127.0.0.1", 0)
        project = master.create_project(PROJECT, DEMO_NET, iteration_time=MASTER_T, seed=0,
                                        training=Training(wire=wire))  # type: ignore[arg-type]
        project.allocator.add_data(range(10 * n))
        shares = [min(PER_PROCESS, n - k) for k in range(0, n, PER_PROCESS)]
        procs = [subprocess.Popen([sys.executable, __file__, "--simulate", str(k),
                                   f"ws://127.0.0.1:{port}/"], start_new_session=True)
                 for k in shares]
        try:
            with trio.fail_after(60 + n / 5):
                while len(project.trainers()) < n or project.current is None:
                    await trio.sleep(0.1)

            def reducer(results: Sequence[Any], params: np.ndarray, optimizer: Any) -> Any:
                it = project.current
                assert it is not None
                last = max((received for _, received in it.results.values()),
                           default=it.sent_at)
                if len(results) == n:
                    round_times.append(last - it.started_at)
                start = time.perf_counter()
                summary = reduce_gradient_sums(results, params, optimizer)
                reduce_times.append(time.perf_counter() - start)
                cpu.append(time.process_time())
                return summary

            project.reducer = reducer
            with trio.fail_after(rounds * 3 * MASTER_T + 60):
                while len(cpu) < rounds + 1:
                    await trio.sleep(0.05)
            rss = _rss_mb()
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            nursery.cancel_scope.cancel()
    per_round = [b - a for a, b in zip(cpu, cpu[1:])]
    cpu_ms = 1e3 * statistics.median(per_round)
    return MasterFigures(n, wire, rounds, 1e3 * statistics.median(round_times or [float("nan")]),
                         1e3 * statistics.median(reduce_times), cpu_ms,
                         cpu_ms / (1e3 * MASTER_T), rss)


def run(iterations: int = 6, simulated: Sequence[int] = (100, 250, 500, 1000),
        node_counts: Sequence[int] = (1, 2), as_json: bool = False,
        wires: Sequence[str] = ("float32",)) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory(prefix="mlitb-bench-") as tmp:
        loops = [trio.run(_measure_loop, n, iterations, 2.0, Path(tmp)) for n in node_counts]
    masters = [trio.run(_measure_master, n, iterations, wire) for wire in wires
               for n in simulated]
    result = {"data": str(SHARED) if SHARED.exists() else "random images",
              "loop": [asdict(x) for x in loops], "master": [asdict(x) for x in masters]}
    if as_json:
        print(json.dumps(result, indent=2))
        return result
    out = Console()
    table = None if not loops else Table("nodes", "iterations", "samples/s (all)", "compute share of T",
                  "per-worker samples/s", title="Loop: CIFAR-10 demo net, T = 2 s, "
                  f"data: {result['data']}", title_justify="left")
    for x in loops:
        assert table is not None
        table.add_row(str(x.nodes), str(x.iterations), f"{x.samples_per_s:,.0f}",
                      f"{x.compute_share:.1%}", ", ".join(f"{r:,.0f}" for r in x.worker_rates))
    if table is not None:
        out.print(table)
    if masters:
        t2 = Table("simulated workers", "wire", "rounds", "round (send -> last result)", "reduce",
                   "master CPU per round", "share of T", "master memory",
                   title=f"Master: reduce + broadcast + results, T = {MASTER_T:g} s "
                   "(target: < 10% of T)", title_justify="left")
        for m in masters:
            t2.add_row(str(m.workers), m.wire, str(m.rounds), f"{m.round_ms:.0f} ms",
                       f"{m.reduce_ms:.1f} ms", f"{m.cpu_ms_per_round:.0f} ms",
                       f"{m.cpu_share_of_t:.1%}", f"{m.rss_mb:.0f} MB")
        out.print(t2)
    return result


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--simulated", default="100,250,500,1000",
                        help="comma-separated counts of simulated workers for the master's "
                        "figures (empty: skip)")
    parser.add_argument("--nodes", default="1,2", help="comma-separated node counts")
    parser.add_argument("--wire", default="float32",
                        help="comma-separated wire kinds for the master's figures (float32, "
                        "float16, int8: the project's training.wire)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--simulate", nargs=2, metavar=("N", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.simulate:
        trio.run(_simulated_workers, args.simulate[1], int(args.simulate[0]))
        return
    try:
        simulated = [int(n) for n in args.simulated.split(",") if n]
        nodes = [int(n) for n in args.nodes.split(",") if n]
    except ValueError:
        parser.error("--simulated and --nodes take comma-separated whole numbers")
    if any(n < 1 for n in simulated + nodes):
        parser.error("--simulated and --nodes take counts of at least 1")
    from mlitb.protocol import WIRE_OF_ENCODING

    wires = [w for w in args.wire.split(",") if w]
    known = sorted(WIRE_OF_ENCODING.values())
    if not wires or any(w not in known for w in wires):
        parser.error(f"--wire takes comma-separated wire kinds of {', '.join(known)}, "
                     f"got {args.wire!r}")
    run(args.iterations, simulated, nodes, args.json, wires)


if __name__ == "__main__":
    main()
