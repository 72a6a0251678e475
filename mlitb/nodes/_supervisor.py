"""The node's parent process: starts N worker processes, shows their status, stops them cleanly.

``run_node(config)`` spawns one process per worker (multiprocessing's "spawn" context: a fresh
interpreter each, so every worker has its own GIL, BLAS pool and trio loop). Workers send their
status, log lines and last word through one ``multiprocessing`` queue; the parent renders a live
status line and a download progress bar with rich (plain periodic lines when stdout is not a
terminal).

Stopping: SIGINT (Ctrl-C) or SIGTERM to the parent sends SIGTERM to every worker; each one closes
its WebSocket with 1000 and exits 0, and the parent returns 0. Workers that are still alive after
``grace`` seconds are killed. A Ctrl-C in a terminal reaches the workers too (same process group):
they treat SIGINT like SIGTERM. A worker whose parent disappears leaves on its own. When every
worker has ended by itself (refused, removed, crashed) the parent says why and returns non-zero.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queue_module
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.text import Text

from ._reports import (
    ROLE_OF_TASK,
    ExitCode,
    LogLine,
    Task,
    WorkerEnded,
    WorkerEvent,
    WorkerStatus,
)
from ._worker import WorkerOptions, _host_name

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}

# One BLAS thread per worker process: N processes already use the N cores.
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                     "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class NodeConfig:
    url: str
    project: str | None = None
    task: Task = "train"
    workers: int = 1
    seed: int | None = None
    stats_share: float = 0.1
    verbose: bool = False
    host: str = field(default_factory=_host_name)
    join_token: str | None = field(default=None, repr=False)
    """The project's join token (never printed or logged)."""
    cafile: str | None = None
    grace: float = 3.0
    """Seconds the workers get to leave after a stop before they are killed."""
    plain_interval: float = 10.0
    """Without a terminal: print the status line this often (when it changed)."""

    def worker_options(self, index: int) -> WorkerOptions:
        return WorkerOptions(url=self.url, role=ROLE_OF_TASK[self.task], project=self.project,
                             host=self.host, index=index, seed=self.seed,
                             stats_share=self.stats_share, join_token=self.join_token,
                             cafile=self.cafile)


# -- the worker process ---------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    """Linux: the kernel SIGKILLs this process when its parent dies, so a node killed with
    SIGKILL loses its workers abruptly too (the master sees them lost, as it should)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(int(ExitCode.ERROR))


def _parent_state(parent: int) -> str | None:
    """The parent's scheduler state from /proc ("T": stopped), or None when unknown."""
    try:
        with open(f"/proc/{parent}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:][:1].decode("ascii", "replace") or None


def worker_process(options: WorkerOptions, events: Any, parent: int | None = None) -> None:
    """Entry point of one worker process (importable, so "spawn" can find it).

    The worker follows its parent: it dies with it (Linux; elsewhere it leaves cleanly when it
    notices), stops when the parent is stopped (SIGSTOP / Ctrl-Z) and is continued by it."""
    parent = os.getppid() if parent is None else parent
    _die_with_parent(parent)
    # The parent starts us with SIGINT and SIGTERM blocked (so a Ctrl-C while this interpreter
    # imports cannot kill it with a traceback). Until trio listens for them, and after, a signal
    # only sets a flag: a late second one (on Ctrl-C the terminal's SIGINT and the parent's
    # SIGTERM both arrive) must not kill a worker that is leaving cleanly.
    early: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        early.append(signum)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, remember)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # debugging a stuck worker
    logging.getLogger().addHandler(logging.NullHandler())  # the parent prints our LogLines

    def report(event: WorkerEvent) -> None:
        try:
            events.put(event)
        except (ValueError, OSError):  # the queue is closed: the parent is gone
            pass

    import trio

    from ._worker import Worker

    async def main() -> int:
        worker = Worker(options, report=report)
        code = int(ExitCode.ERROR)
        async with trio.open_nursery() as nursery:
            async def on_signals() -> None:
                with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
                    async for _ in signals:
                        worker.request_stop()

            async def watch_parent() -> None:
                while os.getppid() == parent:
                    await trio.sleep(0.2)
                    if _parent_state(parent) in ("T", "t"):
                        # The node was stopped: stop too; the parent's SIGCONT handler
                        # continues us when it is continued.
                        os.kill(os.getpid(), signal.SIGSTOP)
                worker.request_stop()

            nursery.start_soon(on_signals)
            nursery.start_soon(watch_parent)
            if early:
                worker.request_stop()
            code = await worker.run()
            nursery.cancel_scope.cancel()
        return code

    try:
        code = trio.run(main)
    except BaseException as exc:  # noqa: BLE001 - the parent must hear about any crash
        import traceback

        report(LogLine(options.index, logging.DEBUG, traceback.format_exc()))
        report(WorkerEnded(options.index, int(ExitCode.ERROR),
                           f"crashed: {type(exc).__name__}: {exc}"))
        code = int(ExitCode.ERROR)
    try:
        events.close()
        events.join_thread()
    except (ValueError, OSError):
        pass
    sys.exit(code)


# -- the display ----------------------------------------------------------------------------------
def _count(n: float) -> str:
    return f"{n:,.0f}"


class NodeDisplay:
    """What the parent shows: one status line aggregating the workers, a progress bar while data
    downloads, and the workers' log lines above them."""

    def __init__(self, config: NodeConfig, console: Console) -> None:
        self.config = config
        self.console = console
        self.statuses: dict[int, WorkerStatus] = {}
        self.ended: dict[int, WorkerEnded] = {}
        self.progress = Progress(
            TextColumn("[bold]downloading data"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} ids"), console=console,
            transient=True)
        self._download = self.progress.add_task("download", total=0, start=True)
        self.live: Live | None = None
        self._last_plain = 0.0
        self._last_line = ""

    # -- events ------------------------------------------------------------------------------
    def handle(self, event: WorkerEvent) -> None:
        if isinstance(event, WorkerStatus):
            self.statuses[event.index] = event
        elif isinstance(event, LogLine):
            if event.level >= logging.INFO or self.config.verbose:
                style = "red" if event.level >= logging.ERROR else \
                    "yellow" if event.level >= logging.WARNING else "dim"
                self.print(Text(f"worker {event.index}: {event.text}", style=style))
        else:
            self.ended[event.index] = event

    def print(self, renderable: RenderableType) -> None:
        console = self.live.console if self.live is not None else self.console
        console.print(renderable, soft_wrap=True)

    # -- rendering ---------------------------------------------------------------------------
    def status_line(self) -> Text:
        statuses = list(self.statuses.values())
        alive = [s for s in statuses if s.phase != "stopped"]
        phases = Counter(s.phase for s in alive)
        line = Text()
        line.append("mlitb node ", style="bold")
        line.append(f"{self.config.task} ")
        project = next((s.project for s in alive if s.project), self.config.project)
        if project:
            line.append(f"{project} ", style="cyan")
        line.append(f"· {len(alive)}/{self.config.workers} workers")
        if phases:
            line.append(" (" + ", ".join(f"{n} {p}" for p, n in sorted(phases.items())) + ")")
        iterations = [s.iteration for s in alive if s.iteration is not None]
        versions = [s.parameter_version for s in alive if s.parameter_version is not None]
        if iterations:
            line.append(f" · iteration {max(iterations)}")
        if versions:
            line.append(f" · v{max(versions)}")
        rates = [s.samples_per_s for s in alive if s.samples_per_s is not None]
        if rates and self.config.task == "train":
            line.append(f" · {_count(sum(rates))} samples/s")
        allocated = sum(s.allocated for s in alive)
        if self.config.task != "track":
            cached = sum(s.cached for s in alive)
            line.append(f" · cached {_count(cached)}/{_count(allocated)}")
        losses = [s.loss for s in alive if s.loss is not None]
        if losses:
            line.append(f" · loss {sum(losses) / len(losses):.4f}")
        errors = [s.test_error for s in alive if s.test_error is not None]
        if errors:
            line.append(f" · test error {min(errors):.1%}")
        return line

    def _downloading(self) -> tuple[int, int]:
        alive = [s for s in self.statuses.values() if s.phase != "stopped"]
        return sum(s.cached for s in alive), sum(s.allocated for s in alive)

    def __rich__(self) -> RenderableType:
        cached, allocated = self._downloading()
        if self.config.task != "track" and cached < allocated:
            self.progress.update(self._download, completed=cached, total=allocated)
            return Group(self.progress.get_renderable(), self.status_line())
        return self.status_line()

    def refresh(self) -> None:
        if self.live is not None:
            self.live.refresh()
            return
        now = time.monotonic()
        line = self.status_line().plain
        if self.statuses and now - self._last_plain >= self.config.plain_interval and \
                line != self._last_line:
            self.console.print(line, highlight=False, soft_wrap=True)
            self._last_plain, self._last_line = now, line

    def __enter__(self) -> NodeDisplay:
        if self.console.is_terminal:
            self.live = Live(self, console=self.console, auto_refresh=False,
                             redirect_stdout=False, redirect_stderr=False, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self.status_line(), refresh=True)
            self.live.__exit__(None, None, None)
            self.live = None


# -- the supervisor -------------------------------------------------------------------------------
def _summary(ended: dict[int, WorkerEnded], processes: list[BaseProcess]) -> tuple[int, str]:
    """The node's exit code and message when every worker ended by itself."""
    reasons: Counter[str] = Counter()
    codes: list[int] = []
    for index, process in enumerate(processes):
        end = ended.get(index)
        code = end.code if end is not None else int(ExitCode.ERROR)
        reason = end.reason if end is not None else \
            f"the process died (exit code {process.exitcode})"
        codes.append(code)
        reasons[reason] += 1
    nonzero = {c for c in codes if c != 0}
    code = 0 if not nonzero else nonzero.pop() if len(nonzero) == 1 else int(ExitCode.ERROR)
    lines = "; ".join(f"{reason}" + (f" (x{n})" if n > 1 else "")
                      for reason, n in reasons.most_common())
    who = "the worker" if len(processes) == 1 else f"all {len(processes)} workers"
    return code, f"{who} stopped: {lines}"


def run_node(config: NodeConfig, console: Console | None = None) -> int:
    """Run the node until Ctrl-C / SIGTERM (returns 0) or until every worker ended (returns the
    workers' exit code: 2 refused, 3 removed, 1 otherwise). Call from the main thread."""
    console = console or Console(highlight=False)
    for variable in _THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
    context = multiprocessing.get_context("spawn")
    events: Any = context.Queue()
    stop: list[int] = []
    processes: list[BaseProcess] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    def on_continue(signum: int, frame: FrameType | None) -> None:
        for process in processes:  # workers stop when they see us stopped (worker_process)
            if process.pid is not None:
                try:
                    os.kill(process.pid, signal.SIGCONT)
                except OSError:
                    pass

    previous = {s: signal.signal(s, on_signal) for s in _STOP_SIGNALS}
    if hasattr(signal, "SIGCONT"):
        previous[signal.SIGCONT] = signal.signal(signal.SIGCONT, on_continue)
    display = NodeDisplay(config, console)
    try:
        role = ROLE_OF_TASK[config.task]
        console.print(f"joining {config.url}"
                      + (f" project {config.project}" if config.project else "")
                      + f" with {config.workers} {role} worker"
                      + ("s" if config.workers != 1 else "") + " (Ctrl-C to leave)",
                      soft_wrap=True)
        # Children inherit the blocked mask through fork and exec; worker_process unblocks it
        # once it handles the signals. Ours are delivered (to on_signal) right after.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS) \
            if hasattr(signal, "pthread_sigmask") else None
        try:
            for index in range(config.workers):
                process: BaseProcess = context.Process(
                    target=worker_process,
                    args=(config.worker_options(index), events, os.getpid()),
                    name=f"mlitb-worker-{index}", daemon=True)
                process.start()
                processes.append(process)
        finally:
            if blocked is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        announced: set[int] = set()
        with display:
            while not stop:
                _drain(events, display, timeout=0.1)
                display.refresh()
                dead = [i for i, p in enumerate(processes)
                        if i not in announced and p.exitcode is not None]
                if dead:
                    _drain(events, display, timeout=0.05)  # its last words may be in flight
                for index in dead:
                    announced.add(index)
                    if index not in display.ended:  # killed: it could not say why
                        display.print(Text(f"worker {index} died (exit code "
                                           f"{processes[index].exitcode})", style="red"))
                if not any(p.is_alive() for p in processes):
                    _drain(events, display, timeout=0.2)
                    break
            if stop:
                _shutdown(processes, events, display, config.grace, config.verbose)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for process in processes:
            if process.is_alive():
                process.kill()
        events.close()
    if stop:
        left = sum(1 for p in processes if p.exitcode == 0)
        console.print(f"left the master: {left} of {len(processes)} workers closed cleanly",
                      soft_wrap=True)
        return 0
    code, message = _summary(display.ended, processes)
    console.print(Text(message, style="red" if code else ""), soft_wrap=True)
    return code


def _drain(events: Any, display: NodeDisplay, timeout: float) -> None:
    """Handle every queued event, waiting up to ``timeout`` for the first."""
    try:
        display.handle(events.get(timeout=timeout))
        while True:
            display.handle(events.get_nowait())
    except queue_module.Empty:
        pass


def _shutdown(processes: list[BaseProcess], events: Any, display: NodeDisplay,
              grace: float, verbose: bool = False) -> None:
    """SIGTERM every worker, keep reading their events, kill what is left after ``grace``."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace
    while any(p.is_alive() for p in processes) and time.monotonic() < deadline:
        _drain(events, display, timeout=0.05)
    stuck = [p for p in processes if p.is_alive()]
    if stuck and verbose and hasattr(signal, "SIGUSR1"):
        for process in stuck:  # each prints its threads' stacks (faulthandler) to stderr
            if process.pid is not None:
                os.kill(process.pid, signal.SIGUSR1)
        time.sleep(0.3)
    for process in stuck:
        if process.is_alive():
            display.print(Text(f"{process.name} did not leave in {grace:g} s: killed",
                               style="yellow"))
            process.kill()
    for process in processes:
        process.join(timeout=1.0)
    _drain(events, display, timeout=0.05)
    display.refresh()
