"""mlitb/bench/nets.py: the candidates are nets the engine builds, the cost and MAC counts are what
they say, the PyTorch twin learns a made-up task, and bad names are refused."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from mlitb.bench import nets as bench_nets
from mlitb.datasets import CIFAR10_FAST_SPEC, CIFAR10_SPEC
from mlitb.nn import Net


def test_every_candidate_builds_and_the_counts_are_the_nets() -> None:
    assert bench_nets.NETS["paper"] == CIFAR10_SPEC and bench_nets.NETS["fast"] == CIFAR10_FAST_SPEC
    for spec in bench_nets.NETS.values():
        assert Net(spec).num_params > 0
    # The paper's net: 32*32*16*75 + 16*16*20*400 + 8*8*20*500 + 10*320 multiply-adds.
    assert bench_nets.macs(Net(CIFAR10_SPEC)) == 1_228_800 + 2_048_000 + 640_000 + 3_200
    assert bench_nets.macs(Net(CIFAR10_FAST_SPEC)) == \
        16 * 16 * 32 * 75 + 8 * 8 * 48 * 288 + 4 * 4 * 96 * 432 + 10 * 1536
    assert 0.5 < bench_nets.engine_cost(CIFAR10_SPEC, rounds=1, seconds=0.1) < 2.0


def test_the_torch_twin_learns_and_stops_at_the_target() -> None:
    pytest.importorskip("torch", reason="PyTorch is the reference; pip install torch==2.13.0")
    rng = np.random.default_rng(0)
    labels = np.arange(400) % 2  # dark and bright images: told apart at once
    images = (40 + 170 * labels[:, None, None, None]
              + rng.integers(0, 30, (400, 3, 32, 32))).astype(np.uint8)
    data = (images, labels.astype(np.int64))
    r = bench_nets.samples_to(CIFAR10_FAST_SPEC, 3200, data, data, 0.9, 320, True,
                              log=io.StringIO())
    assert r["samples_to_target"] is not None and r["samples_to_target"] <= 3200
    assert r["curve"][-1] == (r["samples_to_target"], r["final"]) and r["final"] >= 0.9


def test_unknown_nets_are_refused_and_without_the_zips_it_skips(monkeypatch, capsys,
                                                               tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        bench_nets.main(["--nets", "fast,bogus"])
    assert exited.value.code == 2 and "unknown bogus" in capsys.readouterr().err
    monkeypatch.setattr(bench_nets, "DATA", tmp_path)
    assert bench_nets.run(["fast"]) == {"skipped": f"no CIFAR-10 zips in {tmp_path}"}
