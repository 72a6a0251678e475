"""The poisoning simulation shared by tests/test_robust_poisoning.py (and the figures in
docs/security.md): 8 simulated trainers on the bundled digits drive a real ``Project`` through
``plan_iteration / accept_result / finish_iteration``; each honest trainer computes a real
gradient sum with the node's ``compute_gradient``; hostile ones transform theirs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlitb.datasets import DIGITS_SPEC, digits, to_input
from mlitb.nn import Net
from mlitb.optim import make_optimizer
from mlitb.protocol import ResultFrame, ResultKind, Training
from mlitb.training import CacheView, compute_gradient
from mlitb.training._project import MAX_SAMPLES_PER_SECOND, Member, Project

T = 1.0
SAMPLES = 32  # what one simulated trainer computes per round (its "speed")


@dataclass
class Run:
    accuracy: float
    dropped: list[int]
    refused: int
    stepped: int
    hostile_results: int


def _data():
    train, test, _ = digits()
    images = train.images.transpose(0, 3, 1, 2).copy()
    return images, train.labels, to_input(test.images), test.labels


def hostile(kind: str, frame: ResultFrame, work_seconds: float) -> ResultFrame:
    """A hostile trainer's result: the honest one, sign-flipped x 1e6 (``flip``) or every value
    1e30 (``huge``), claiming as many samples as the intake lets through."""
    inflated = int(MAX_SAMPLES_PER_SECOND * max(T, work_seconds))
    if kind == "flip":
        vector = (frame.vector * np.float32(-1e6) * np.float32(inflated / frame.samples))
    else:
        vector = np.full_like(frame.vector, np.float32(1e30))
    return ResultFrame(parameter_version=frame.parameter_version, kind=frame.kind,
                       samples=inflated, correct=inflated, loss_sum=0.0,
                       compute_seconds=frame.compute_seconds, vector=vector.astype(np.float32))


def run(rounds: int, training: Training, attackers: tuple[str, ...] = (),
        trainers: int = 8, seed: int = 3, rejoin: bool = True) -> Run:
    """``rounds`` iterations of ``trainers`` simulated trainers, the last ones hostile
    (``attackers``: ``flip`` or ``huge`` each); the test accuracy of the final model. A
    dropped attacker comes back at once under a new worker id (``rejoin``: trainers need no
    credential), so the attackers send hostile results in every round."""
    images, labels, test_x, test_y = _data()
    net = Net(DIGITS_SPEC, seed=seed)
    optimizer = make_optimizer("adam", net.num_params, learning_rate=0.02)
    project = Project("poison", net, optimizer, "adam", T, training=training)
    project.add_data("train", list(range(len(labels))))
    for w in range(trainers):
        project.add_member(Member(w, "trainer", "node", "sim"))
    project.admit_pending()
    hostile_ids = {trainers - 1 - i: kind for i, kind in enumerate(attackers)}
    worker = Net(DIGITS_SPEC, seed=seed)
    ids = np.arange(len(labels), dtype=np.int64)
    now, refused, stepped, sent, dropped = 0.0, 0, 0, 0, []
    for _ in range(rounds):
        it = project.plan_iteration(now)
        it.sent_at = now
        for w, order in it.orders.items():
            rows = np.sort(np.fromiter(project.allocator.allocation_of(w), np.int64))
            view = CacheView(images=images, labels=labels, ids=ids, rows=rows.astype(np.intp))
            worker.params = project.net.params.copy()
            result = compute_gradient(worker, view, samples=SAMPLES, seed=seed + w,
                                      iteration=it.number)
            frame = ResultFrame(parameter_version=it.parameter_version,
                                kind=ResultKind.GRADIENT_SUM, samples=result.samples,
                                correct=result.correct, loss_sum=result.loss_sum,
                                compute_seconds=0.5, vector=result.vector)
            if w in hostile_ids:
                frame = hostile(hostile_ids[w], frame, order.seconds or T)
                sent += 1
            assert project.accept_result(w, frame, now + 0.6) is None
        summary = project.finish_iteration(now + 0.7)
        refused += len(summary.refused)
        stepped += summary.stepped
        for w, _ in project.dropped:  # a dropped attacker comes back under a new id at once
            dropped.append(w)
            if rejoin:
                fresh = 1000 + len(dropped)
                hostile_ids[fresh] = hostile_ids[w]
                project.add_member(Member(fresh, "trainer", "node", "sim"))
        project.admit_pending()
        now += T
    stats = project.net.evaluate(test_x, test_y)
    return Run(stats.correct / stats.count, dropped, refused, stepped, sent)
