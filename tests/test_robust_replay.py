"""A deterministic run reduced by a robust aggregation, recorded with a real node process
(three workers, so three parts per step), replays bit-identically from its closure: the
closure's ``loop.training`` says how the steps were reduced and the replay reduces the same way.
Reducing the same parts by the mean instead differs at the first step."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.replay import PROJECT, SAMPLES, cluster, node, write_digits

from mlitb.closure import closure_from_dict, record_of, replay, training_data
from mlitb.protocol import Training


@pytest.mark.slow
def test_a_centered_clip_run_with_three_trainers_replays_bit_identically(tmp_path: Path
                                                                          ) -> None:
    train_zip, test_zip = write_digits(tmp_path)
    box: dict[str, Any] = {}

    async def main() -> None:
        with trio.fail_after(150):
            async with cluster(tmp_path, train_zip, test_zip, iteration_time=1.0,
                               optimizer="adam", hyperparameters={"learning_rate": 0.01},
                               samples_per_iteration=3 * SAMPLES,
                               training=Training(aggregation="centered_clip")) \
                    as (master, address), node(address, tmp_path, workers=3):
                project = master.projects[PROJECT]

                def steps_with_three_parts() -> int:
                    record = project.replay_record()
                    return 0 if record is None else sum(len(s.parts) == 3
                                                        for s in record.steps)

                while steps_with_three_parts() < 4:
                    await trio.sleep(0.2)
                box["closure"] = closure_from_dict(master.closure_of(PROJECT))

    trio.run(main)
    closure = box["closure"]
    assert closure.loop.training.aggregation == "centered_clip"
    record = record_of(closure)
    assert sum(len(s.parts) == 3 for s in record.steps) >= 4
    data = training_data(closure, [train_zip])
    report = replay(closure, data)
    assert report.identical and report.complete, report.first_mismatch
    as_mean = closure.replace(loop=dataclasses.replace(
        closure.loop, training=dataclasses.replace(closure.loop.training, aggregation="mean")))
    first_multi = next(i for i, s in enumerate(record.steps) if len(s.parts) > 1)
    wrong = replay(as_mean, data, iterations=first_multi + 1)
    assert not wrong.identical
