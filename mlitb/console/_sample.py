"""Deterministic status snapshots for snapshot tests, screenshots and ``ReplayBackend`` demos.

Everything here is computed from closed formulas (no clock, no random numbers), so the console
draws exactly the same screen on every run. The snapshots pass through the protocol's own
encoder and decoder, so they are valid ``status`` messages.
"""

from __future__ import annotations

import math

from mlitb.protocol import (
    MAX_LARGE_TEXT_FRAME,
    DataCounts,
    Event,
    HistoryPoint,
    ProjectStatus,
    StatsPoint,
    Status,
    Timing,
    WorkerStatus,
    decode_text,
    encode_text,
)

HOSTS = ("lab-pc", "gpu-box", "Firefox 128 on Linux", "Chrome 126 on macOS", "raspberrypi",
         "Safari 17 on iPhone", "build-server", "Edge 125 on Windows")


def _history(iterations: int, start_loss: float, floor: float, pace: float,
             samples: int) -> tuple[HistoryPoint, ...]:
    points = []
    for i in range(1, iterations + 1):
        wiggle = 0.03 * math.sin(i * 1.7) * math.exp(-i / 60)
        loss = floor + (start_loss - floor) * math.exp(-i / pace) + wiggle
        accuracy = min(0.999, max(0.0, 1.0 - loss / (start_loss * 1.05)))
        points.append(HistoryPoint(iteration=i, samples=samples + (i * 37) % 211,
                                   loss=round(loss, 4), accuracy=round(accuracy, 4)))
    return tuple(points)


def _test_error(iterations: int, every: int, start: float, floor: float,
                pace: float) -> tuple[StatsPoint, ...]:
    return tuple(StatsPoint(iteration=i, parameter_version=i, samples=360,
                            error=round(floor + (start - floor) * math.exp(-i / pace), 4))
                 for i in range(every, iterations + 1, every))


def _workers(count: int, first_id: int, allocated_total: int,
             stats: bool = True) -> tuple[WorkerStatus, ...]:
    workers = []
    share, extra = divmod(allocated_total, max(1, count))
    for k in range(count):
        client = "browser" if " on " in HOSTS[k % len(HOSTS)] else "python"
        allocated = share + (1 if k < extra else 0)
        state = ("caching" if k == count - 1 and count > 3 else
                 "late" if k == 2 and count > 4 else "training")
        cached = allocated if state != "caching" else allocated * 2 // 3
        rate = 400.0 + 1100.0 * ((k * 7919) % 13) / 12
        workers.append(WorkerStatus(
            worker_id=first_id + k, role="trainer", client=client,  # type: ignore[arg-type]
            host=HOSTS[k % len(HOSTS)] if count <= len(HOSTS) else f"node-{k:03d}",
            state=state,  # type: ignore[arg-type]
            latency_ms=None if state == "caching" else round(3.0 + (k * 31) % 47 * 1.3, 1),
            samples_per_s=None if state == "caching" else round(rate, 1),
            budget_s=None if state == "caching" else round(1.6 + 0.02 * (k % 5), 3),
            allocated=allocated, cached=cached))
    if stats:
        workers.append(WorkerStatus(worker_id=first_id + count, role="stats", client="python",
                                    host="lab-pc", state="tracking", latency_ms=2.1,
                                    allocated=360, cached=360))
    return tuple(workers)


def sample_project(name: str = "digits", *, workers: int = 5, iterations: int = 120,
                   state: str = "running", first_id: int = 11) -> ProjectStatus:
    """One project as the master would report it after ``iterations`` iterations."""
    total = 1437
    members = _workers(workers, first_id, total) if workers else ()
    allocated = sum(w.allocated for w in members if w.role == "trainer")
    cached = sum(w.cached for w in members if w.role == "trainer")
    return ProjectStatus(
        name=name, state=state, iteration=iterations,  # type: ignore[arg-type]
        parameter_version=iterations, iteration_time=2.0, optimizer="adagrad",
        hyperparameters={"learning_rate": 0.01, "l1_decay": 0.0, "l2_decay": 0.0001,
                         "lr_decay": 1.0, "lr_decay_every": 1.0, "lr_min": 0.0, "eps": 1e-8},
        timing=Timing(compute=1.62, wait=0.21, reduce=0.004, broadcast=0.012),
        history=_history(iterations, 2.3, 0.12, 25.0, 5000 + 600 * workers),
        test_error=_test_error(iterations, 10, 0.9, 0.045, 30.0),
        data=DataCounts(total=total, allocated=allocated, cached=cached,
                        unallocated=total - allocated, test=360),
        workers=members)


def sample_events(project: str = "digits", first_id: int = 11, workers: int = 5) -> tuple[
        Event, ...]:
    events = [Event(time=0.4, kind="created", message=f"project {project} created (2,794 "
                    f"parameters, adagrad, T=2 s)", project=project),
              Event(time=3.2, kind="data", message=f"project {project}: 1437 train ids "
                    f"registered", project=project),
              Event(time=3.5, kind="data", message=f"project {project}: 360 test ids registered",
                    project=project)]
    for k in range(workers):
        events.append(Event(time=5.0 + k * 0.7, kind="joined",
                            message=f"worker {first_id + k} joined project {project}",
                            project=project, worker_id=first_id + k))
    events.append(Event(time=61.9, kind="lost", message=f"worker {first_id + workers + 1} lost "
                        f"project {project} (no answer to ping)", project=project,
                        worker_id=first_id + workers + 1))
    events.append(Event(time=62.0, kind="reallocated", message=f"project {project}: 287 ids "
                        f"back to the pool, re-allocated to 4 workers", project=project))
    events.append(Event(time=118.5, kind="configured", message=f"project {project}: "
                        f"learning_rate=0.01", project=project))
    return tuple(events)


def sample_status(*, workers: int = 5, time: float = 241.0) -> Status:
    """Three projects: ``digits`` running with ``workers`` trainers and a stats worker,
    ``cifar10`` paused, ``mnist-small`` waiting for workers."""
    digits = sample_project("digits", workers=workers)
    cifar = sample_project("cifar10", workers=2, iterations=35, state="paused",
                           first_id=11 + workers + 5)
    empty = ProjectStatus(name="mnist-small", state="waiting", iteration=0, parameter_version=0,
                          iteration_time=5.0, optimizer="sgd",
                          hyperparameters={"learning_rate": 0.05, "momentum": 0.9},
                          data=DataCounts(total=0, allocated=0, cached=0, unallocated=0))
    status = Status(time=time, projects=(digits, cifar, empty),
                    events=sample_events("digits", 11, min(workers, 6)))
    # Round-trip through the wire format: what the console gets is a valid message.
    decoded = decode_text(encode_text(status), max_size=MAX_LARGE_TEXT_FRAME)
    assert isinstance(decoded, Status)
    return decoded
