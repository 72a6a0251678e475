"""What checking and sealing a research closure costs, in milliseconds: the JSON Schema check
(``jsonschema``, mlitb.closure._schema) and the RFC 8785 canonical form behind ``content_sha256``
(``rfc8785``, mlitb.closure._canonical), each next to the hand-written validator and serializer
they replaced (mlitb/bench/_closure_old.py), measured in the same process on the same closure; and a
whole ``closure_from_dict`` (every check of a load) beside them.

Two closures: the digits net with a manifest of scikit-learn's 1,797 digits and 200 history points
(a zoo closure), and the fast CIFAR-10 net with a CIFAR-10-sized manifest (60,000 hashes and
labels) and the 2,048 history points a master keeps, the size a long run autosaves and a resumed
project loads.

    python -m mlitb.bench.closure [--seconds 0.5] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from typing import Any

import numpy as np

from mlitb.bench import _closure_old as old
from mlitb.bench.protocol import _per_call
from mlitb.closure import (
    DataManifest,
    SplitManifest,
    canonical_json,
    closure_from_dict,
    closure_from_project,
    closure_to_dict,
)
from mlitb.closure._schema import load_schema, validate
from mlitb.datasets import CIFAR10_FAST_SPEC, DIGITS_SPEC, digits
from mlitb.nn import Net
from mlitb.optim import make_optimizer
from mlitb.protocol import HistoryPoint, StatsPoint
from mlitb.training import Project


def _closure(spec: list[dict[str, Any]], labels: list[str], manifest: DataManifest,
             points: int) -> dict[str, Any]:
    """A closure as a master writes one: Adam's state, ``points`` history points (and a test
    error every 10th), a manifest."""
    net = Net(spec, seed=0, labels=labels)
    opt = make_optimizer("adam", net.num_params, learning_rate=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        opt.step(net.params, rng.standard_normal(net.num_params).astype(np.float32) * 1e-2)
    project = Project("bench", net, opt, "adam", 2.0)
    project.iteration = project.parameter_version = points
    for i in range(points):
        project.history.append(HistoryPoint(iteration=i, samples=1000 * (i + 1),
                                            loss=2.3 / (1 + i / 50),
                                            accuracy=min(0.99, i / points)))
        if i % 10 == 9:
            project.test_error.append(StatsPoint(iteration=i, parameter_version=i,
                                                 samples=1000, error=max(0.01, 1 - i / points)))
    return closure_to_dict(closure_from_project(project, manifest, seeds={"init": 0}))


def closures() -> dict[str, dict[str, Any]]:
    """The closures measured, by a short description."""
    train, test, names = digits()

    def split(images: np.ndarray, labels: np.ndarray) -> SplitManifest:
        return SplitManifest(tuple(hashlib.sha256(im.tobytes()).hexdigest() for im in images),
                             tuple(names[int(k)] for k in labels))

    small = DataManifest(tuple(names), split(train.images, train.labels),
                         split(test.images, test.labels))
    cifar_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

    def synthetic(n: int, salt: str) -> SplitManifest:
        return SplitManifest(tuple(hashlib.sha256(f"{salt}{i}".encode()).hexdigest()
                                   for i in range(n)),
                             tuple(cifar_names[i % 10] for i in range(n)))

    large = DataManifest(cifar_names, synthetic(50_000, "train"), synthetic(10_000, "test"))
    return {
        f"digits net, {len(train.labels) + len(test.labels):,} samples, 200 points":
            _closure(DIGITS_SPEC, names, small, 200),
        "CIFAR-10 fast net, 60,000 samples, 2,048 points":
            _closure([dict(d) for d in CIFAR10_FAST_SPEC], list(cifar_names), large, 2048),
    }


def run(seconds: float = 0.5, as_json: bool = False) -> dict[str, Any]:
    schema = load_schema()
    rows = []
    for name, d in closures().items():
        body = {k: v for k, v in d.items() if k != "content_sha256"}
        assert canonical_json(body) == old.canonical_json(body)  # the same hash, or no figures
        validate(d)
        old.validate(d, schema)
        row = {
            "closure": name, "bytes": len(json.dumps(d)),
            "validate_ms": _per_call(lambda: validate(d), seconds) / 1e3,
            "validate_old_ms": _per_call(lambda: old.validate(d, schema), seconds) / 1e3,
            "canonical_ms": _per_call(lambda: canonical_json(body), seconds) / 1e3,
            "canonical_old_ms": _per_call(lambda: old.canonical_json(body), seconds) / 1e3,
            "load_ms": _per_call(lambda: closure_from_dict(d), seconds) / 1e3}
        row["validate_ratio"] = row["validate_ms"] / row["validate_old_ms"]
        row["canonical_ratio"] = row["canonical_ms"] / row["canonical_old_ms"]
        rows.append(row)
    result = {"seconds_per_figure": seconds, "closures": rows}
    if as_json:
        print(json.dumps(result, indent=2))
        return result
    from rich.console import Console
    from rich.table import Table

    table = Table("closure", "bytes", "schema", "old", "ratio", "RFC 8785", "old", "ratio",
                  "closure_from_dict", title="Checking and sealing a closure (ms; ratio: the "
                  "library / the hand-written code it replaced)", title_justify="left")
    for r in rows:
        table.add_row(r["closure"], f"{r['bytes']:,}", f"{r['validate_ms']:.2f}",
                      f"{r['validate_old_ms']:.2f}", f"{r['validate_ratio']:.2f}x",
                      f"{r['canonical_ms']:.2f}", f"{r['canonical_old_ms']:.2f}",
                      f"{r['canonical_ratio']:.2f}x", f"{r['load_ms']:.1f}")
    Console().print(table)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5,
                        help="seconds per figure (about; the best of three runs counts)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 0.001 <= args.seconds <= 60:
        parser.error("--seconds must be between 0.001 and 60")
    run(args.seconds, args.json)


if __name__ == "__main__":
    main()
