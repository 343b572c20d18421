"""The queue in front of the local worker: back-pressure, batch forming, positions, reloads.

Requests wait in this process, so the scheduler can report each one's place in line and refuse
work when the queue is full. The worker process runs one job at a time: a batch of requests
(formed by :meth:`Scheduler.form_batch`, the one place that decides what is generated
together) or a hot reload, which always goes before the next batch. The scheduler never
touches the process itself; it sends through a :class:`WorkerPort` (the supervisor).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from model.protocol import GenerationRequest, GenerationResult, PositionCallback
from model.worker.batching import estimate_wait_s, request_tokens, take_batch
from model.worker.errors import (
    AdapterRejectedError,
    WorkerBusyError,
    WorkerCrashedError,
    WorkerError,
    WorkerTimeoutError,
    as_sentence,
)
from model.worker.lifecycle import BackgroundTasks
from model.worker.messages import (
    BatchDone,
    BatchFailed,
    Generate,
    Reload,
    Reloaded,
    ReloadFailed,
    RequestFailed,
    ToWorker,
)
from model.worker.settings import SamplerSpec, WorkerSettings
from model.worker.stats import WorkerStats

log = logging.getLogger(__name__)


class WorkerPort(Protocol):
    """The worker process as the scheduler sees it."""

    def accepting(self) -> bool:
        """Whether a loaded, healthy process is there to take a job."""
        ...

    def send(self, message: ToWorker) -> bool:
        """Send a job; False when the process is going away (the job is then kept)."""
        ...


@dataclass(eq=False)
class Pending:
    request: GenerationRequest
    future: asyncio.Future[GenerationResult]
    enqueued: float
    on_position: PositionCallback | None = None
    position: int | None = None


@dataclass(eq=False)
class Batch:
    id: int
    items: list[Pending]
    started: float

    def message(self) -> Generate:
        return Generate(self.id, tuple(p.request for p in self.items))


@dataclass(eq=False)
class ReloadOp:
    id: int
    spec: SamplerSpec
    future: asyncio.Future[None]
    started: float = 0.0

    def message(self) -> Reload:
        return Reload(self.id, self.spec)


Job = Batch | ReloadOp
J = TypeVar("J", Batch, ReloadOp)


class Scheduler:
    """Queues requests and reloads and hands the worker one job at a time."""

    def __init__(
        self, settings: WorkerSettings, stats: WorkerStats, tasks: BackgroundTasks
    ) -> None:
        self.settings = settings
        self._stats = stats
        self._tasks = tasks
        self._queue: list[Pending] = []
        self._reloads: deque[ReloadOp] = deque()
        self._job: Job | None = None  # what the worker is doing now
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ callers

    async def complete(
        self, request: GenerationRequest, on_position: PositionCallback | None
    ) -> GenerationResult:
        """Queue ``request`` and wait for its result (see :meth:`WorkerClient.complete`)."""
        if len(self._queue) >= self.settings.queue_size:
            raise WorkerBusyError(self.estimated_wait_s())
        loop = asyncio.get_running_loop()
        pending = Pending(request, loop.create_future(), time.monotonic(), on_position)
        self._queue.append(pending)
        self._update_positions()
        self.wake()
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
            self.wake()

    async def reload(self, spec: SamplerSpec) -> None:
        """Switch the worker to ``spec`` before the next batch; raises if it was rejected."""
        op = ReloadOp(next(self._ids), spec, asyncio.get_running_loop().create_future())
        self._reloads.append(op)
        self.wake()
        await asyncio.shield(op.future)

    def estimated_wait_s(self) -> float:
        """Seconds until a request queued now would probably be answered."""
        queued = sum(p.request.n for p in self._queue)
        return estimate_wait_s(queued, self.settings.max_batch_size, self._stats.avg_batch_s())

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Requests being generated now."""
        return len(self._job.items) if isinstance(self._job, Batch) else 0

    @property
    def busy(self) -> bool:
        """Whether the worker is running a job."""
        return self._job is not None

    # ------------------------------------------------------------------ dispatch

    def wake(self) -> None:
        """Something changed: look again for work to send."""
        self._wake.set()

    async def run(self, worker: WorkerPort) -> None:
        """Task: send the next job whenever the worker is idle."""
        while True:
            self._wake.clear()
            delay = self.dispatch(worker)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def dispatch(self, worker: WorkerPort) -> float | None:
        """Send the next reload or batch; return how long to wait (None: until woken)."""
        if any(p.future.done() for p in self._queue):
            self._queue = [p for p in self._queue if not p.future.done()]
            self._update_positions()
        if self._job is not None or not worker.accepting():
            return None
        job = self._next_reload() or self.form_batch(time.monotonic())
        if not isinstance(job, Batch | ReloadOp):
            return job
        self._job = job
        if not worker.send(job.message()):
            self._job = None
            self._requeue(job)
            return None
        self._update_positions()
        return None

    def _next_reload(self) -> ReloadOp | None:
        while self._reloads:
            op = self._reloads.popleft()
            if not op.future.done():
                op.started = time.monotonic()
                return op
        return None

    def form_batch(self, now: float) -> Batch | float | None:
        """Take the next batch off the queue, or say how long to wait for one to fill.

        Returns None when the queue is empty, the seconds left in the batch window while the
        oldest request may still be joined by others, else the :class:`Batch` (taken out of
        the queue). Which requests go together is :func:`~model.worker.batching.take_batch`.
        """
        if not self._queue:
            return None
        max_size, max_tokens = self.settings.max_batch_size, self.settings.max_batch_tokens
        indices = take_batch([p.request for p in self._queue], max_size, max_tokens=max_tokens)
        waited = now - self._queue[0].enqueued
        window = self.settings.batch_window_ms / 1000
        taken = [self._queue[i].request for i in indices]
        full = (
            sum(r.n for r in taken) >= max_size
            or sum(request_tokens(r) for r in taken) >= max_tokens
        )
        if not full and waited < window:
            return window - waited
        chosen = set(indices)
        items = [self._queue[i] for i in indices]
        self._queue = [p for i, p in enumerate(self._queue) if i not in chosen]
        return Batch(next(self._ids), items, now)

    def _requeue(self, job: Job) -> None:
        if isinstance(job, Batch):
            self._queue[:0] = job.items
        else:
            self._reloads.appendleft(job)

    # ------------------------------------------------------------------ answers

    def _take_job(self, kind: type[J], job_id: int) -> J | None:
        """The running job if it is the ``kind`` with ``job_id`` (it is then done), else None."""
        job = self._job
        if not isinstance(job, kind) or job.id != job_id:
            return None
        self._job = None
        return job

    def batch_done(self, message: BatchDone) -> bool:
        """Hand out the results; False when the batch was no longer waited for."""
        batch = self._take_job(Batch, message.batch_id)
        if batch is None:
            return False
        served = [r for r in message.results if isinstance(r, GenerationResult)]
        self._stats.record_batch(served, message.generate_s)
        for pending, result in zip(batch.items, message.results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, RequestFailed):
                pending.future.set_exception(_adapter_failed(pending.request, result.error))
            else:
                queue_s = max(0.0, batch.started - pending.enqueued)
                pending.future.set_result(
                    dataclasses.replace(result, queue_s=queue_s, generate_s=message.generate_s)
                )
        return True

    def batch_failed(self, message: BatchFailed) -> None:
        batch = self._take_job(Batch, message.batch_id)
        if batch is not None:
            self._stats.last_error = message.error
            error = f"Generation failed in the worker: {as_sentence(message.error)}"
            _fail(batch.items, WorkerError(error))

    def reloaded(self, message: Reloaded) -> SamplerSpec | None:
        """The spec now serving (None when the reload was not ours)."""
        op = self._take_job(ReloadOp, message.op_id)
        if op is None:
            return None
        log.info("worker now serves adapter %s", op.spec.adapter or "(base model)")
        if not op.future.done():
            op.future.set_result(None)
        return op.spec

    def reload_failed(self, message: ReloadFailed) -> None:
        op = self._take_job(ReloadOp, message.op_id)
        if op is None:
            return
        log.warning("adapter %s rejected: %s", op.spec.adapter, message.error)
        if not op.future.done():
            op.future.set_exception(
                AdapterRejectedError(
                    f"The adapter {op.spec.adapter or '(base model)'} was rejected "
                    f"({message.error}); the previous adapter keeps serving."
                )
            )

    # ------------------------------------------------------------------ failures

    def overdue(self, now: float) -> str | None:
        """Why the running job means the worker hangs (None while it is in time)."""
        job, settings = self._job, self.settings
        if isinstance(job, Batch) and now - job.started > settings.request_timeout_s:
            return f"a batch ran longer than {settings.request_timeout_s:g} s"
        if isinstance(job, ReloadOp) and now - job.started > settings.start_timeout_s:
            return f"an adapter load took over {settings.start_timeout_s:g} s"
        return None

    def worker_lost(self, reason: str) -> None:
        """The process died: fail the job it was running; the queue waits for the next one."""
        job, self._job = self._job, None
        if isinstance(job, Batch):
            _fail(
                job.items,
                WorkerCrashedError(
                    f"The generator stopped unexpectedly ({reason}) while working on this "
                    "request; it is restarting — please try again in a few seconds."
                ),
            )
        elif job is not None and not job.future.done():
            job.future.set_exception(
                AdapterRejectedError(
                    f"The worker stopped ({reason}) while loading the adapter "
                    f"{job.spec.adapter}; it restarts with the previous adapter."
                )
            )

    def fail_all(self, error: Exception) -> None:
        """Fail every queued and running request and reload with ``error``."""
        job, self._job = self._job, None
        queue, self._queue = self._queue, []
        reloads = list(self._reloads)
        self._reloads.clear()
        if isinstance(job, Batch):
            queue[:0] = job.items
        elif job is not None:
            reloads.append(job)
        _fail(queue, error)
        for op in reloads:
            if not op.future.done():
                op.future.set_exception(error)

    # ------------------------------------------------------------------ positions

    def _update_positions(self) -> None:
        if isinstance(self._job, Batch):
            for pending in self._job.items:
                self._notify(pending, 0)
        for index, pending in enumerate(self._queue):
            self._notify(pending, index + 1)

    def _notify(self, pending: Pending, position: int) -> None:
        if pending.position == position or pending.on_position is None:
            return
        pending.position = position
        try:
            outcome = pending.on_position(position)
            if inspect.isawaitable(outcome):
                self._tasks.spawn(_await_quietly(outcome), "queue-position")
        except Exception:
            log.exception("queue position callback failed")


def _adapter_failed(request: GenerationRequest, error: str) -> AdapterRejectedError:
    name = request.adapter.name if request.adapter is not None else "(default)"
    return AdapterRejectedError(
        f"The model {name} could not be loaded ({as_sentence(error)}); this request was not served."
    )


def _fail(items: list[Pending], error: Exception) -> None:
    for pending in items:
        if not pending.future.done():
            pending.future.set_exception(error)


async def _await_quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("queue position callback failed")
