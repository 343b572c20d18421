"""The local transport: a supervised worker process behind an async, batching client.

The client keeps the request queue in the calling process (so it can report queue positions and
refuse work when the queue is full), forms batches of requests with the same sampling options
(:mod:`model.worker.batching`), and hands one batch at a time to the worker process
(:mod:`model.worker.child`), which owns the model. A supervisor watches the worker: a process
that dies or stops sending heartbeats fails the batch it was generating with a clear error and is
restarted with exponential backoff; queued requests wait for the new process. Hot reloads run
between batches.

    async with WorkerClient(SamplerSpec(adapter="runs/7")) as client:
        result = await client.complete(GenerationRequest("genre:", n=8), on_position=print)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from model.protocol import GenerationRequest, GenerationResult, PositionCallback
from model.worker.batching import estimate_wait_s, take_batch
from model.worker.child import child_main
from model.worker.errors import (
    AdapterRejectedError,
    WorkerBusyError,
    WorkerClosedError,
    WorkerCrashedError,
    WorkerError,
    WorkerStartError,
    WorkerTimeoutError,
    WorkerUnavailableError,
)
from model.worker.health import snapshot_quietly
from model.worker.lifecycle import ClientLifecycle
from model.worker.settings import (
    SamplerFactory,
    SamplerSpec,
    WorkerSettings,
    default_sampler_factory,
)

log = logging.getLogger(__name__)

MAX_RESTART_DELAY_S = 60.0
# A freshly spawned process imports Python before its first heartbeat: allow at least this long.
FIRST_HEARTBEAT_GRACE_S = 30.0


@dataclass(eq=False)
class _Pending:
    request: GenerationRequest
    future: asyncio.Future[GenerationResult]
    enqueued: float
    on_position: PositionCallback | None = None
    position: int | None = None


@dataclass(eq=False)
class _Batch:
    id: int
    items: list[_Pending]
    started: float


@dataclass(eq=False)
class _Reload:
    id: int
    spec: SamplerSpec
    future: asyncio.Future[dict[str, Any]]
    started: float = 0.0


@dataclass(eq=False)
class _Incarnation:
    """One worker process and the thread that reads its pipe."""

    proc: BaseProcess
    conn: Connection
    spawned: float
    last_seen: float | None = None
    ready: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    fatal: str | None = None
    kill_reason: str | None = None
    exited: bool = False
    reaping: bool = False
    reader: threading.Thread | None = None
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.conn.send(message)


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


class WorkerClient(ClientLifecycle):
    """Async client of a supervised local worker process (the ``local`` transport).

    Implements :class:`model.protocol.CompletionBackend`.
    """

    transport = "local"

    def __init__(
        self,
        spec: SamplerSpec,
        settings: WorkerSettings | None = None,
        *,
        sampler_factory: SamplerFactory = default_sampler_factory,
        health_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings or WorkerSettings()
        self._factory = sampler_factory
        # Where health() is written every few seconds for other processes (stats --json).
        self.health_file = Path(health_file) if health_file is not None else None
        self._last_snapshot = 0.0
        self._state = "stopped"  # stopped, starting, ready, restarting, failed, closed
        self._closing = False
        self._proc: _Incarnation | None = None
        self._queue: list[_Pending] = []
        self._batch: _Batch | None = None
        self._reloads: deque[_Reload] = deque()
        self._reload: _Reload | None = None
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._restart_task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Statistics for health() and the busy estimate.
        self._restarts = 0
        self._crash_streak = 0
        self._last_error: str | None = None
        self._batch_times: deque[float] = deque(maxlen=20)
        self._batches_served = 0
        self._requests_served = 0
        self._completions_served = 0
        self._rss = 0
        self._ready_since: float | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, wait: bool = True) -> None:
        """Spawn the worker; with ``wait`` return once the model is loaded.

        Raises :class:`WorkerStartError` when the model cannot be loaded (the client is then
        closed). Without ``wait``, requests queue up until the model is ready.
        """
        if self._state != "stopped":
            raise WorkerError(f"The worker client cannot be started twice (it is {self._state}).")
        self._loop = asyncio.get_running_loop()
        self._state = "starting"
        self._started = self._loop.create_future()
        self._spawn()
        self._spawn_task(self._schedule(), "worker-scheduler")
        self._spawn_task(self._watch(), "worker-watchdog")
        if wait:
            await self.wait_ready()

    async def wait_ready(self) -> None:
        """Wait for the first model load; raise :class:`WorkerStartError` if it failed."""
        if self._started is None:
            raise WorkerUnavailableError("The generation worker has not been started.")
        try:
            await asyncio.shield(self._started)
        except WorkerStartError:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the worker process and fail whatever is still waiting. Safe to call twice."""
        if self._state == "closed":
            return
        self._closing = True
        self._state = "closed"
        closed = WorkerClosedError("The generator is shutting down; the request was not served.")
        if self._started is not None and not self._started.done():
            self._started.set_exception(WorkerStartError("The generator was shut down."))
            self._started.exception()  # mark retrieved
        busy = self._batch is not None or self._reload is not None
        self._fail_all(closed)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        handle, self._proc = self._proc, None
        if handle is not None:
            await asyncio.to_thread(self._stop_process, handle, busy)
        await self._write_health()

    @staticmethod
    def _stop_process(handle: _Incarnation, busy: bool) -> None:
        """Ask the process to stop (SIGTERM at once when it is generating for nobody)."""
        handle.kill_reason = handle.kill_reason or "shut down"
        with contextlib.suppress(OSError, ValueError):
            handle.send(("stop",))
        handle.proc.join(0 if busy else 5)
        if handle.proc.is_alive():
            handle.proc.terminate()
            handle.proc.join(2)
        if handle.proc.is_alive():
            handle.proc.kill()
            handle.proc.join(2)
        if handle.reader is not None:
            handle.reader.join(2)
        handle.conn.close()

    # ------------------------------------------------------------------ public API

    async def complete(
        self, request: GenerationRequest, *, on_position: PositionCallback | None = None
    ) -> GenerationResult:
        """Generate ``request.n`` completions; ``on_position`` hears the place in line.

        Raises :class:`WorkerBusyError` when the queue is full, :class:`WorkerTimeoutError`,
        :class:`WorkerCrashedError` when the worker died while generating it, and
        :class:`WorkerUnavailableError` when no worker can be started.
        """
        if self._closing:
            raise WorkerClosedError("The generator is shutting down.")
        if self._state == "stopped":
            raise WorkerUnavailableError("The generation worker has not been started.")
        if self._state == "failed":
            raise WorkerUnavailableError(
                f"The generator is unavailable: {_sentence(self._last_error)} It keeps retrying."
            )
        if len(self._queue) >= self.settings.queue_size:
            raise WorkerBusyError(self.estimated_wait_s())
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future(), time.monotonic(), on_position)
        self._queue.append(pending)
        self._update_positions()
        self._wake.set()
        timeout = self.settings.request_timeout_s
        try:
            return await asyncio.wait_for(pending.future, timeout)
        except TimeoutError:
            raise WorkerTimeoutError(
                f"The generator did not answer within {timeout:g} s; please try again later."
            ) from None
        finally:
            if not pending.future.done():
                pending.future.cancel()
            self._wake.set()

    async def reload(self, adapter: str | os.PathLike[str] | None) -> None:
        """Switch the worker to another LoRA adapter (None: the base model) between batches.

        The adapter is loaded next to the current one and must pass a short smoke generation;
        otherwise :class:`AdapterRejectedError` is raised and the current adapter keeps serving.
        Queued requests are kept and served by whichever adapter is active when their batch runs.
        """
        if self._closing or self._state in ("stopped", "closed"):
            raise WorkerUnavailableError("The generation worker is not running.")
        path: str | None = None
        if adapter is not None:
            resolved, exists = await asyncio.to_thread(_resolve, adapter)
            if not exists:
                raise AdapterRejectedError(
                    f"The adapter {resolved} does not exist; the current adapter keeps serving."
                )
            path = str(resolved)
        loop = asyncio.get_running_loop()
        op = _Reload(next(self._ids), self.spec.with_adapter(path), loop.create_future())
        self._reloads.append(op)
        self._wake.set()
        await asyncio.shield(op.future)

    def health(self) -> dict[str, Any]:
        """A snapshot for ``/health``, ``microgenre stats --json`` and the bot's status."""
        handle = self._proc
        now = time.monotonic()
        last_seen = handle.last_seen if handle is not None else None
        return {
            "transport": self.transport,
            "state": self._state,
            "alive": bool(handle is not None and handle.ready and not handle.exited),
            "pid": handle.proc.pid if handle is not None else None,
            "restarts": self._restarts,
            "queue_length": len(self._queue),
            "in_flight": len(self._batch.items) if self._batch is not None else 0,
            "model": self.model_name,
            "adapter": self.spec.adapter,
            "last_heartbeat_age_s": round(now - last_seen, 3) if last_seen is not None else None,
            "batches_served": self._batches_served,
            "requests_served": self._requests_served,
            "completions_served": self._completions_served,
            "avg_batch_s": round(self._avg_batch_s(), 4) if self._batch_times else None,
            "rss_bytes": self._rss,
            "uptime_s": round(now - self._ready_since, 1) if self._ready_since else None,
            "last_error": self._last_error,
        }

    async def fetch_health(self) -> dict[str, Any]:
        """Same as :meth:`health` (the remote client has to ask its server)."""
        return self.health()

    async def _write_health(self) -> None:
        if self.health_file is None:
            return
        self._last_snapshot = time.monotonic()
        data = self.health()
        data["owner_pid"] = os.getpid()
        data["written_at"] = time.time()
        await asyncio.to_thread(snapshot_quietly, self.health_file, data)

    @property
    def model_name(self) -> str | None:
        handle = self._proc
        if handle is not None and handle.info.get("name"):
            return str(handle.info["name"])
        return None

    @property
    def pid(self) -> int | None:
        """Process id of the current worker (None while it is down)."""
        return self._proc.proc.pid if self._proc is not None else None

    def estimated_wait_s(self) -> float:
        """Seconds until a request queued now would probably be answered."""
        queued = sum(p.request.n for p in self._queue)
        return estimate_wait_s(queued, self.settings.max_batch_size, self._avg_batch_s())

    # ------------------------------------------------------------------ process management

    def _spawn_task(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
            ),
            name="microgenre-worker",
            daemon=True,
        )
        proc.start()
        child_conn.close()  # only the child holds its end: its exit gives us EOF
        handle = _Incarnation(proc=proc, conn=parent_conn, spawned=time.monotonic())
        handle.reader = threading.Thread(
            target=self._read_pipe, args=(handle,), name="worker-pipe-reader", daemon=True
        )
        handle.reader.start()
        self._proc = handle
        log.info("started worker process %s (%s)", proc.pid, self.spec.adapter or "base model")

    def _read_pipe(self, handle: _Incarnation) -> None:
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
        try:
            loop.call_soon_threadsafe(self._on_pipe_closed, handle)
        except RuntimeError:
            return

    def _on_message(self, handle: _Incarnation, message: tuple[Any, ...]) -> None:
        if handle is not self._proc:
            return
        handle.last_seen = time.monotonic()
        kind = message[0]
        if kind == "heartbeat":
            self._rss = int(message[1].get("rss", 0))
        elif kind == "ready":
            handle.ready = True
            handle.info = dict(message[1])
            self._rss = int(handle.info.get("rss", 0))
            self._state = "ready"
            self._ready_since = time.monotonic()
            if self._started is not None and not self._started.done():
                self._started.set_result(None)
            log.info(
                "worker %s ready: %s in %.1f s", handle.proc.pid, handle.info.get("name"),
                handle.info.get("load_s", 0.0),
            )  # fmt: skip
        elif kind == "fatal":
            handle.fatal = str(message[1])
        elif kind == "result":
            self._rss = int(message[4])
            self._on_result(message[1], message[2], float(message[3]))
        elif kind == "batch_error":
            self._on_batch_error(message[1], str(message[2]))
        elif kind in ("reloaded", "reload_failed"):
            self._on_reload_done(handle, kind, message[1], message[2])
        self._wake.set()

    def _on_result(self, batch_id: int, results: list[GenerationResult], generate_s: float) -> None:
        batch = self._batch
        if batch is None or batch.id != batch_id:
            return
        self._batch = None
        self._crash_streak = 0
        self._batch_times.append(generate_s)
        self._batches_served += 1
        for pending, result in zip(batch.items, results, strict=True):
            self._requests_served += 1
            self._completions_served += len(result.texts)
            if not pending.future.done():
                queue_s = max(0.0, batch.started - pending.enqueued)
                pending.future.set_result(
                    dataclasses.replace(result, queue_s=queue_s, generate_s=generate_s)
                )

    def _on_batch_error(self, batch_id: int, message: str) -> None:
        batch = self._batch
        if batch is None or batch.id != batch_id:
            return
        self._batch = None
        self._last_error = message
        self._fail(
            batch.items, WorkerError(f"Generation failed in the worker: {_sentence(message)}")
        )

    def _on_reload_done(self, handle: _Incarnation, kind: str, op_id: int, payload: Any) -> None:
        op = self._reload
        if op is None or op.id != op_id:
            return
        self._reload = None
        if kind == "reloaded":
            self.spec = op.spec
            handle.info.update(payload)
            self._crash_streak = 0
            log.info("worker now serves adapter %s", op.spec.adapter or "(base model)")
            if not op.future.done():
                op.future.set_result(dict(payload))
        else:
            log.warning("adapter %s rejected: %s", op.spec.adapter, payload)
            if not op.future.done():
                op.future.set_exception(
                    AdapterRejectedError(
                        f"The adapter {op.spec.adapter or '(base model)'} was rejected "
                        f"({payload}); the previous adapter keeps serving."
                    )
                )

    def _on_pipe_closed(self, handle: _Incarnation) -> None:
        if handle is self._proc and not self._closing:
            self._start_reap(handle)

    def _start_reap(self, handle: _Incarnation) -> None:
        if not handle.reaping:
            handle.reaping = True
            self._spawn_task(self._reap(handle), "worker-reap")

    async def _reap(self, handle: _Incarnation) -> None:
        await asyncio.to_thread(handle.proc.join, 5)
        if handle.proc.is_alive():  # pipe closed but still running: make sure it is gone
            handle.proc.kill()
            await asyncio.to_thread(handle.proc.join, 5)
        self._on_exit(handle)

    def _kill(self, handle: _Incarnation, reason: str) -> None:
        if handle.kill_reason is None:
            log.error("killing worker %s: %s", handle.proc.pid, reason)
            handle.kill_reason = reason
            handle.proc.kill()

    def _on_exit(self, handle: _Incarnation) -> None:
        if handle.exited or handle is not self._proc or self._closing:
            return
        handle.exited = True
        self._proc = None
        self._ready_since = None
        exit_words = describe_exit(handle.proc.exitcode)
        reason = handle.kill_reason or exit_words
        if handle.fatal is not None:
            self._last_error = handle.fatal
        else:
            self._last_error = f"the worker process stopped unexpectedly ({reason})"
        log.warning("worker process %s ended: %s", handle.proc.pid, self._last_error)
        batch, self._batch = self._batch, None
        if batch is not None:
            self._fail(
                batch.items,
                WorkerCrashedError(
                    f"The generator stopped unexpectedly ({reason}) while working on this "
                    "request; it is restarting — please try again in a few seconds."
                ),
            )
        op, self._reload = self._reload, None
        if op is not None and not op.future.done():
            op.future.set_exception(
                AdapterRejectedError(
                    f"The worker stopped ({reason}) while loading the adapter "
                    f"{op.spec.adapter}; it restarts with the previous adapter."
                )
            )
        if self._started is not None and not self._started.done():
            # The very first start failed: report it to start() instead of retrying forever.
            self._state = "failed"
            self._started.set_exception(
                WorkerStartError(f"The generator could not start: {_sentence(self._last_error)}")
            )
            self._fail_all(
                WorkerStartError(f"The generator could not start: {_sentence(self._last_error)}")
            )
            return
        self._crash_streak += 1
        if handle.fatal is not None or not handle.ready:
            # It cannot even load the model: fail the queue rather than let it wait in vain.
            self._state = "failed"
            self._fail_all(
                WorkerUnavailableError(
                    f"The generator is unavailable: {_sentence(self._last_error)}"
                )
            )
        else:
            self._state = "restarting"
        delay = min(
            MAX_RESTART_DELAY_S, self.settings.restart_backoff_s * 2 ** (self._crash_streak - 1)
        )
        self._restart_task = self._spawn_task(self._restart_after(delay), "worker-restart")

    async def _restart_after(self, delay: float) -> None:
        log.info("restarting the worker in %.1f s", delay)
        await asyncio.sleep(delay)
        if self._closing:
            return
        self._restarts += 1
        if self._state == "failed":
            self._state = "restarting"
        self._spawn()

    async def _watch(self) -> None:
        """Watchdog: kill a worker that stopped beating, never loaded, or hangs in a batch."""
        settings = self.settings
        tick = max(0.05, min(0.5, settings.heartbeat_interval_s / 2))
        while True:
            await asyncio.sleep(tick)
            if self.health_file is not None and time.monotonic() - self._last_snapshot > 2.0:
                await self._write_health()
            handle = self._proc
            if handle is None or handle.kill_reason is not None or handle.reaping:
                continue
            now = time.monotonic()
            if handle.proc.exitcode is not None:
                self._start_reap(handle)
                continue
            if handle.last_seen is None:
                grace = max(settings.heartbeat_timeout_s, FIRST_HEARTBEAT_GRACE_S)
                if now - handle.spawned > grace:
                    self._kill(handle, f"no sign of life {grace:g} s after it was started")
                continue
            if now - handle.last_seen > settings.heartbeat_timeout_s:
                self._kill(handle, f"no heartbeat for {settings.heartbeat_timeout_s:g} s")
            elif not handle.ready and now - handle.spawned > settings.start_timeout_s:
                self._kill(handle, f"model not loaded within {settings.start_timeout_s:g} s")
            elif self._batch is not None and now - self._batch.started > settings.request_timeout_s:
                self._kill(handle, f"a batch ran longer than {settings.request_timeout_s:g} s")
            elif self._reload is not None and now - self._reload.started > settings.start_timeout_s:
                self._kill(handle, f"an adapter load took over {settings.start_timeout_s:g} s")

    # ------------------------------------------------------------------ scheduling

    async def _schedule(self) -> None:
        while True:
            self._wake.clear()
            delay = self._dispatch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _dispatch(self) -> float | None:
        """Send the next reload or batch when the worker is idle.

        Returns how long to wait before trying again (None: until something happens).
        """
        if any(p.future.done() for p in self._queue):
            self._queue = [p for p in self._queue if not p.future.done()]
            self._update_positions()
        handle = self._proc
        if handle is None or not handle.ready or handle.kill_reason is not None:
            return None
        if self._batch is not None or self._reload is not None:
            return None
        while self._reloads:
            op = self._reloads.popleft()
            if op.future.done():
                continue
            op.started = time.monotonic()
            self._reload = op
            if not self._send(handle, ("reload", op.id, op.spec)):
                self._reload = None
                self._reloads.appendleft(op)
            return None
        if not self._queue:
            return None
        max_size = self.settings.max_batch_size
        indices = take_batch([p.request for p in self._queue], max_size)
        now = time.monotonic()
        waited = now - self._queue[0].enqueued
        window = self.settings.batch_window_ms / 1000
        if sum(self._queue[i].request.n for i in indices) < max_size and waited < window:
            return window - waited
        chosen = set(indices)
        items = [self._queue[i] for i in indices]
        self._queue = [p for i, p in enumerate(self._queue) if i not in chosen]
        batch = _Batch(next(self._ids), items, now)
        self._batch = batch
        if not self._send(handle, ("batch", batch.id, [p.request for p in items])):
            self._batch = None
            self._queue[:0] = items
            return None
        self._update_positions()
        return None

    def _send(self, handle: _Incarnation, message: tuple[Any, ...]) -> bool:
        try:
            handle.send(message)
        except (OSError, ValueError) as exc:  # the process is dying; the supervisor handles it
            log.warning("could not send to the worker: %s", exc)
            return False
        return True

    def _update_positions(self) -> None:
        if self._batch is not None:
            for pending in self._batch.items:
                self._notify(pending, 0)
        for index, pending in enumerate(self._queue):
            self._notify(pending, index + 1)

    def _notify(self, pending: _Pending, position: int) -> None:
        if pending.position == position or pending.on_position is None:
            return
        pending.position = position
        try:
            outcome = pending.on_position(position)
            if inspect.isawaitable(outcome):
                self._spawn_task(_await_quietly(outcome), "queue-position")
        except Exception:
            log.exception("queue position callback failed")

    # ------------------------------------------------------------------ helpers

    def _avg_batch_s(self) -> float:
        if not self._batch_times:
            return 2.0  # nothing measured yet: a conservative guess
        return sum(self._batch_times) / len(self._batch_times)

    @staticmethod
    def _fail(items: list[_Pending], error: Exception) -> None:
        for pending in items:
            if not pending.future.done():
                pending.future.set_exception(error)

    def _fail_all(self, error: Exception) -> None:
        batch, self._batch = self._batch, None
        if batch is not None:
            self._fail(batch.items, error)
        queue, self._queue = self._queue, []
        self._fail(queue, error)
        ops = list(self._reloads)
        self._reloads.clear()
        if self._reload is not None:
            ops.append(self._reload)
            self._reload = None
        for op in ops:
            if not op.future.done():
                op.future.set_exception(error)


def _sentence(text: str | None) -> str:
    """``text`` ending with exactly one full stop.

    >>> _sentence("it broke."), _sentence("it broke")
    ('it broke.', 'it broke.')
    """
    return (text or "unknown error").rstrip(". ") + "."


def _resolve(path: str | os.PathLike[str]) -> tuple[Path, bool]:
    resolved = Path(path).expanduser().resolve()
    return resolved, resolved.exists()


async def _await_quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("queue position callback failed")
