"""The worker process's life: spawn, read its pipe, watch its heartbeat, restart with backoff.

A process that dies or stops sending heartbeats fails the job it was running (through the
:class:`~model.worker.scheduler.Scheduler`) and is restarted with exponential backoff; queued
requests wait for the new process. A process that cannot even load the model fails the queue,
and the very first one that fails makes :meth:`Supervisor.wait_started` raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from model.protocol import AdapterRef
from model.worker.child import child_main
from model.worker.errors import (
    WorkerClosedError,
    WorkerError,
    WorkerStartError,
    WorkerUnavailableError,
    as_sentence,
)
from model.worker.lifecycle import BackgroundTasks
from model.worker.messages import (
    BatchDone,
    BatchFailed,
    FromWorker,
    Heartbeat,
    Loaded,
    LoadFailed,
    Reloaded,
    ReloadFailed,
    Stop,
    ToWorker,
    WorkerState,
)
from model.worker.scheduler import Scheduler
from model.worker.settings import SamplerFactory, SamplerSpec, WorkerSettings
from model.worker.stats import WorkerStats

log = logging.getLogger(__name__)

MAX_RESTART_DELAY_S = 60.0
# How health names the adapter the worker was started with (requests without an AdapterRef).
DEFAULT_ADAPTER_NAME = "default"
# A freshly spawned process imports Python before its first heartbeat: allow at least this long.
FIRST_HEARTBEAT_GRACE_S = 30.0


def describe_exit(exitcode: int | None) -> str:
    """Human words for a process exit code.

    >>> describe_exit(-9), describe_exit(3), describe_exit(None)
    ('killed by SIGKILL', 'exit status 3', 'still running')
    """
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


@dataclass(eq=False)
class WorkerProcess:
    """One worker process and the thread that reads its pipe."""

    proc: BaseProcess
    conn: Connection
    spawned: float
    last_seen: float | None = None
    ready: bool = False
    model_name: str | None = None
    # The adapters it holds besides the default (as of its last batch).
    adapters: tuple[AdapterRef, ...] = ()
    fatal: str | None = None
    kill_reason: str | None = None
    exited: bool = False
    reaping: bool = False
    reader: threading.Thread | None = None
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: ToWorker) -> None:
        with self.send_lock:
            self.conn.send(message)

    def stop(self, busy: bool) -> None:
        """Ask the process to stop (SIGTERM at once when it is generating for nobody)."""
        self.kill_reason = self.kill_reason or "shut down"
        with contextlib.suppress(OSError, ValueError):
            self.send(Stop())
        self.proc.join(0 if busy else 5)
        for end in (self.proc.terminate, self.proc.kill):
            if self.proc.is_alive():
                end()
                self.proc.join(2)
        if self.reader is not None:
            self.reader.join(2)
        self.conn.close()


class Supervisor:
    """Keeps one worker process running for the scheduler (its :class:`WorkerPort`)."""

    def __init__(
        self,
        spec: SamplerSpec,
        settings: WorkerSettings,
        factory: SamplerFactory,
        jobs: Scheduler,
        stats: WorkerStats,
        tasks: BackgroundTasks,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.state = WorkerState.STOPPED
        self.closing = False
        self._factory = factory
        self._jobs = jobs
        self._stats = stats
        self._tasks = tasks
        self._proc: WorkerProcess | None = None
        self._started: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._crash_streak = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Spawn the first process and the watchdog."""
        if self.state is not WorkerState.STOPPED:
            raise WorkerError(f"The worker client cannot be started twice (it is {self.state}).")
        self._loop = asyncio.get_running_loop()
        self.state = WorkerState.STARTING
        self._started = self._loop.create_future()
        self._spawn()
        self._tasks.spawn(self._watch(), "worker-watchdog")

    async def wait_started(self) -> None:
        """Wait for the first model load; raise :class:`WorkerStartError` if it failed."""
        if self._started is None:
            raise WorkerUnavailableError("The generation worker has not been started.")
        await asyncio.shield(self._started)

    def begin_close(self) -> None:
        """From now on nothing is restarted and the first start, if pending, fails."""
        self.closing = True
        self.state = WorkerState.CLOSED
        if self._started is not None and not self._started.done():
            self._started.set_exception(WorkerStartError("The generator was shut down."))
            self._started.exception()  # mark retrieved

    async def stop(self, busy: bool) -> None:
        """Stop the current process (at once when ``busy``: nobody waits for its job)."""
        handle, self._proc = self._proc, None
        if handle is not None:
            await asyncio.to_thread(handle.stop, busy)

    def check_available(self) -> None:
        """Raise the error a new request gets when no worker will serve it."""
        if self.closing:
            raise WorkerClosedError("The generator is shutting down.")
        if self.state is WorkerState.STOPPED:
            raise WorkerUnavailableError("The generation worker has not been started.")
        if self.state is WorkerState.FAILED:
            raise WorkerUnavailableError(
                f"The generator is unavailable: {as_sentence(self._stats.last_error)} "
                "It keeps retrying."
            )

    # ------------------------------------------------------------------ what others see

    def accepting(self) -> bool:
        handle = self._proc
        return handle is not None and handle.ready and handle.kill_reason is None

    def send(self, message: ToWorker) -> bool:
        handle = self._proc
        if handle is None:
            return False
        try:
            handle.send(message)
        except (OSError, ValueError) as exc:  # the process is dying; the watchdog handles it
            log.warning("could not send to the worker: %s", exc)
            return False
        return True

    @property
    def pid(self) -> int | None:
        return self._proc.proc.pid if self._proc is not None else None

    @property
    def model_name(self) -> str | None:
        return self._proc.model_name if self._proc is not None else None

    def adapters(self) -> list[dict[str, str]]:
        """The resident adapters as ``{name, path}``: the default first, then the others."""
        handle = self._proc
        resident = [] if handle is None or not handle.ready else list(handle.adapters)
        if self.spec.adapter is not None and handle is not None and handle.ready:
            resident.insert(0, AdapterRef(DEFAULT_ADAPTER_NAME, self.spec.adapter))
        return [ref.to_dict() for ref in resident]

    def as_dict(self, now: float) -> dict[str, Any]:
        """The process's part of :meth:`WorkerClient.health`."""
        handle = self._proc
        last_seen = handle.last_seen if handle is not None else None
        return {
            "state": self.state.value,
            "alive": bool(handle is not None and handle.ready and not handle.exited),
            "pid": self.pid,
            "model": self.model_name,
            "adapter": self.spec.adapter,
            "adapters": self.adapters(),
            # The sampler's fast-path levers, the same settings `generate` and `serve` use.
            "fast": self.spec.fast.as_dict(),
            "last_heartbeat_age_s": round(now - last_seen, 3) if last_seen is not None else None,
        }

    # ------------------------------------------------------------------ the process

    def _spawn(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        settings = self.settings
        proc = ctx.Process(
            target=child_main,
            args=(
                child_conn,
                self.spec,
                self._factory,
                os.getpid(),
                settings.heartbeat_interval_s,
                settings.smoke_prompt,
                logging.getLogger().getEffectiveLevel(),
                settings.max_adapters,
            ),
            name="microgenre-worker",
            daemon=True,
        )
        proc.start()
        child_conn.close()  # only the child holds its end: its exit gives us EOF
        handle = WorkerProcess(proc=proc, conn=parent_conn, spawned=time.monotonic())
        handle.reader = threading.Thread(
            target=self._read_pipe, args=(handle,), name="worker-pipe-reader", daemon=True
        )
        handle.reader.start()
        self._proc = handle
        log.info("started worker process %s (%s)", proc.pid, self.spec.adapter or "base model")

    def _read_pipe(self, handle: WorkerProcess) -> None:
        """Thread: forward every message of one worker process to the event loop."""
        loop = self._loop
        assert loop is not None
        while True:
            try:
                message = handle.conn.recv()
            except (EOFError, OSError):
                break
            except Exception:
                log.exception("unreadable message from the worker")
                continue
            try:
                loop.call_soon_threadsafe(self._on_message, handle, message)
            except RuntimeError:  # the loop is closed
                return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._on_pipe_closed, handle)

    def _on_message(self, handle: WorkerProcess, message: FromWorker) -> None:
        if handle is not self._proc:
            return
        handle.last_seen = time.monotonic()
        match message:
            case Heartbeat(rss=rss):
                self._stats.rss = rss
            case Loaded():
                self._on_loaded(handle, message)
            case LoadFailed(error=error):
                handle.fatal = error
            case BatchDone():
                self._stats.rss, handle.adapters = message.rss, message.adapters
                if self._jobs.batch_done(message):
                    self._crash_streak = 0
            case BatchFailed():
                self._jobs.batch_failed(message)
            case Reloaded():
                spec = self._jobs.reloaded(message)
                if spec is not None:
                    self.spec, handle.model_name, self._crash_streak = spec, message.name, 0
                    handle.adapters = ()
            case ReloadFailed():
                self._jobs.reload_failed(message)
        self._jobs.wake()

    def _on_loaded(self, handle: WorkerProcess, message: Loaded) -> None:
        handle.ready = True
        handle.model_name = message.name
        self._stats.rss = message.rss
        self._stats.ready_since = time.monotonic()
        self.state = WorkerState.READY
        if self._started is not None and not self._started.done():
            self._started.set_result(None)
        log.info("worker %s ready: %s in %.1f s", message.pid, message.name, message.load_s)

    def _on_pipe_closed(self, handle: WorkerProcess) -> None:
        if handle is self._proc and not self.closing:
            self._start_reap(handle)

    def _start_reap(self, handle: WorkerProcess) -> None:
        if not handle.reaping:
            handle.reaping = True
            self._tasks.spawn(self._reap(handle), "worker-reap")

    async def _reap(self, handle: WorkerProcess) -> None:
        await asyncio.to_thread(handle.proc.join, 5)
        if handle.proc.is_alive():  # pipe closed but still running: make sure it is gone
            handle.proc.kill()
            await asyncio.to_thread(handle.proc.join, 5)
        self._on_exit(handle)

    def _kill(self, handle: WorkerProcess, reason: str) -> None:
        if handle.kill_reason is None:
            log.error("killing worker %s: %s", handle.proc.pid, reason)
            handle.kill_reason = reason
            handle.proc.kill()

    # ------------------------------------------------------------------ exits and restarts

    def _on_exit(self, handle: WorkerProcess) -> None:
        if handle.exited or handle is not self._proc or self.closing:
            return
        handle.exited = True
        self._proc = None
        self._stats.ready_since = None
        reason = handle.kill_reason or describe_exit(handle.proc.exitcode)
        error = handle.fatal
        if error is None:
            error = f"the worker process stopped unexpectedly ({reason})"
        self._stats.last_error = error
        log.warning("worker process %s ended: %s", handle.proc.pid, error)
        self._jobs.worker_lost(reason)
        if self._started is not None and not self._started.done():
            # The very first start failed: report it to start() instead of retrying forever.
            self.state = WorkerState.FAILED
            failure = WorkerStartError(f"The generator could not start: {as_sentence(error)}")
            self._started.set_exception(failure)
            self._jobs.fail_all(failure)
            return
        self._crash_streak += 1
        if handle.fatal is not None or not handle.ready:
            # It cannot even load the model: fail the queue rather than let it wait in vain.
            self.state = WorkerState.FAILED
            self._jobs.fail_all(
                WorkerUnavailableError(f"The generator is unavailable: {as_sentence(error)}")
            )
        else:
            self.state = WorkerState.RESTARTING
        backoff = self.settings.restart_backoff_s * 2 ** (self._crash_streak - 1)
        self._tasks.spawn(self._restart_after(min(MAX_RESTART_DELAY_S, backoff)), "worker-restart")

    async def _restart_after(self, delay: float) -> None:
        log.info("restarting the worker in %.1f s", delay)
        await asyncio.sleep(delay)
        if self.closing:
            return
        self._stats.restarts += 1
        if self.state is WorkerState.FAILED:
            self.state = WorkerState.RESTARTING
        self._spawn()

    async def _watch(self) -> None:
        """Watchdog: kill a worker that stopped beating, never loaded, or hangs in a job."""
        tick = max(0.05, min(0.5, self.settings.heartbeat_interval_s / 2))
        while True:
            await asyncio.sleep(tick)
            handle = self._proc
            if handle is None or handle.kill_reason is not None or handle.reaping:
                continue
            if handle.proc.exitcode is not None:
                self._start_reap(handle)
                continue
            reason = self._hang_reason(handle, time.monotonic())
            if reason is not None:
                self._kill(handle, reason)

    def _hang_reason(self, handle: WorkerProcess, now: float) -> str | None:
        """Why ``handle`` looks hung (None while it seems fine)."""
        settings = self.settings
        if handle.last_seen is None:
            grace = max(settings.heartbeat_timeout_s, FIRST_HEARTBEAT_GRACE_S)
            if now - handle.spawned > grace:
                return f"no sign of life {grace:g} s after it was started"
            return None
        if now - handle.last_seen > settings.heartbeat_timeout_s:
            return f"no heartbeat for {settings.heartbeat_timeout_s:g} s"
        if not handle.ready and now - handle.spawned > settings.start_timeout_s:
            return f"model not loaded within {settings.start_timeout_s:g} s"
        return self._jobs.overdue(now)
