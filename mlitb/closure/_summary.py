"""A closure's summary: what ``mlitb closure inspect`` shows (and prints with ``--json``)."""

from __future__ import annotations

from typing import Any

from ._convert import FORMAT, VERSION, Closure


def summary(closure: Closure) -> dict[str, Any]:
    """A JSON-ready overview of the closure, without the bulky arrays."""
    c = closure
    net = c.net()
    layers = net.layer_table()
    last = c.history[-1] if c.history else None
    last_test = c.test_error[-1] if c.test_error else None
    data: dict[str, Any] | None = None
    if c.data is not None:
        data = {"labels": list(c.data.labels),
                **{name: {"count": split.count, "counts": split.counts(),
                          "digest": split.digest()}
                   for name, split in (("train", c.data.train), ("test", c.data.test))}}
    loop = c.loop
    return {
        "name": c.name,
        "format": f"{FORMAT} {VERSION}",
        "software": f"{c.software_name} {c.software_version}",
        "created": c.created,
        "updated": c.updated,
        "content_sha256": c.content_sha256(),
        "model": {"input_shape": list(net.input_shape), "num_params": net.num_params,
                  "parameters_sha256": c.parameters_sha256, "layers": layers,
                  "kind": net.loss_layer.type},
        "labels": list(c.labels),
        "optimizer": {"name": c.optimizer_name, "hyperparameters": dict(c.hyperparameters),
                      "step": c.optimizer_step, "state": sorted(c.optimizer_state),
                      "custom_decay_multipliers": c.decay_multipliers is not None},
        "loop": {"iteration_time": loop.iteration_time,
                 "samples_per_iteration": loop.samples_per_iteration,
                 "deterministic": loop.deterministic, "allocation": loop.allocation,
                 "budget_policy": loop.budget_policy, "seeds": dict(loop.seeds)},
        "iteration": c.iteration,
        "parameter_version": c.parameter_version,
        "history": {
            "points": len(c.history), "test_error_points": len(c.test_error),
            "last": None if last is None else {"iteration": last.iteration, "loss": last.loss,
                                               "accuracy": last.accuracy},
            "last_test_error": None if last_test is None else {
                "iteration": last_test.iteration, "parameter_version": last_test.parameter_version,
                "samples": last_test.samples, "error": last_test.error}},
        "data": data,
        "replay": None if c.replay is None else c.replay.summary(),
    }
