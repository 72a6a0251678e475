"""What the protocol costs per message: encode and decode, in microseconds, for the messages
the master handles every round (a work order and a result frame per worker), a hello, a cache
report, a status snapshot and a result frame in each wire encoding, next to the hand-written
codec msgspec replaced (mlitb/bench/_protocol_old.py, ``encode_old_us`` / ``decode_old_us``) and plain
``json.dumps`` / ``json.loads`` of the same text, all in the same process, each message's
figures taken one after the other (on a shared machine, the ratios are what to read).

The master's per-round cost grows with workers mostly per message (mlitb/bench/loop.py); this is the
protocol's share of it, and the figure to compare when the codec changes.

    python -m mlitb.bench.protocol [--seconds 0.3] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mlitb.bench import _protocol_old as old
from mlitb.bench.engine import DEMO_NET
from mlitb.nn import Net
from mlitb.protocol import (
    MAX_LARGE_TEXT_FRAME,
    CacheReport,
    DataCounts,
    Encoding,
    Hello,
    ProjectStatus,
    Status,
    WorkerStatus,
    Work,
    decode_frame,
    decode_text,
    encode_result,
    encode_text,
)


def _per_call(fn: Callable[[], Any], seconds: float) -> float:
    """Microseconds per call of ``fn``: the best of three timed runs of about ``seconds``."""
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 10:
        fn()
        n += 1
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(max(n * 3, 1)):
            fn()
        best = min(best, (time.perf_counter() - start) / max(n * 3, 1))
    return best * 1e6


def messages() -> dict[str, Any]:
    """One of each message measured, shaped as the master sees them with the demo net."""
    workers = tuple(WorkerStatus(worker_id=i, role="trainer", client="python", host=f"node-{i}",
                                 state="training", latency_ms=4.0, samples_per_s=1200.0,
                                 budget_s=1.6, allocated=500, cached=500)
                    for i in range(20))
    status = Status(time=12.5, projects=(ProjectStatus(
        name="cifar", state="running", iteration=120, parameter_version=120,
        iteration_time=2.0, optimizer="nesterov",
        data=DataCounts(total=10_000, allocated=10_000, cached=10_000, unallocated=0, test=0),
        workers=workers),))
    return {
        "work": Work(iteration=120, parameter_version=120, seconds=1.62, learning_rate=0.01),
        "hello": Hello(role="trainer", client="python", host="node-1", project="cifar"),
        "cache_report (500 ids)": CacheReport(cached=tuple(range(500))),
        "status (20 workers)": status,
    }


def run(seconds: float = 0.3, as_json: bool = False) -> dict[str, Any]:
    rows = []
    for name, message in messages().items():
        text = encode_text(message)
        plain = json.loads(text)
        assert old.decode_text(text, max_size=MAX_LARGE_TEXT_FRAME) == message  # the same wire
        assert json.loads(old.encode_text(message)) == plain
        rows.append({
            "message": name, "bytes": len(text.encode()),
            "encode_us": _per_call(lambda m=message: encode_text(m), seconds),
            "encode_old_us": _per_call(lambda m=message: old.encode_text(m), seconds),
            "decode_us": _per_call(lambda t=text: decode_text(t, max_size=MAX_LARGE_TEXT_FRAME),
                                   seconds),
            "decode_old_us": _per_call(
                lambda t=text: old.decode_text(t, max_size=MAX_LARGE_TEXT_FRAME), seconds),
            "json_dumps_us": _per_call(lambda p=plain: json.dumps(p, separators=(",", ":")),
                                       seconds),
            "json_loads_us": _per_call(lambda t=text: json.loads(t), seconds)})
    rng = np.random.default_rng(0)
    grad = (rng.standard_normal(Net(DEMO_NET, seed=0).num_params) * 1e-2).astype(np.float32)
    # One row per wire encoding (training.wire): what a trainer's encode and the master's
    # decode of one result cost.
    for encoding in Encoding:
        frame = encode_result(grad, parameter_version=120, samples=1200, loss_sum=2.3e3,
                              correct=400, compute_seconds=1.6, encoding=encoding)
        suffix = "" if encoding is Encoding.FLOAT32 else f", {encoding.name.lower()}"
        rows.append({
            "message": f"result frame ({grad.size:,} floats{suffix})", "bytes": len(frame),
            "encode_us": _per_call(lambda e=encoding: encode_result(
                grad, parameter_version=120, samples=1200, loss_sum=2.3e3, correct=400,
                compute_seconds=1.6, encoding=e), seconds),
            "decode_us": _per_call(lambda f=frame: decode_frame(f), seconds),
            "encode_old_us": None, "decode_old_us": None,
            "json_dumps_us": None, "json_loads_us": None})
    result = {"seconds_per_figure": seconds, "messages": rows}
    if as_json:
        print(json.dumps(result, indent=2))
        return result
    from rich.console import Console
    from rich.table import Table

    def us(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    table = Table("message", "bytes", "encode", "old", "decode", "old", "json.dumps",
                  "json.loads", "decode / json.loads",
                  title="Protocol cost per message (µs; old: the hand-written codec)",
                  title_justify="left")
    for r in rows:
        ratio = (f"{r['decode_us'] / r['json_loads_us']:.2f}x" if r["json_loads_us"] else "–")
        table.add_row(r["message"], f"{r['bytes']:,}", us(r["encode_us"]), us(r["encode_old_us"]),
                      us(r["decode_us"]), us(r["decode_old_us"]), us(r["json_dumps_us"]),
                      us(r["json_loads_us"]), ratio)
    Console().print(table)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.3,
                        help="seconds per figure (about; the best of three runs counts)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 0.001 <= args.seconds <= 60:
        parser.error("--seconds must be between 0.001 and 60")
    run(args.seconds, args.json)


if __name__ == "__main__":
    main()
