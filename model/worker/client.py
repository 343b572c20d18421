"""The local transport: a supervised worker process behind an async, batching client.

:class:`WorkerClient` is a thin facade over three parts with one job each:

* :class:`~model.worker.scheduler.Scheduler` keeps the request queue in this process (queue
  positions, back-pressure), forms batches and runs hot reloads between them;
* :class:`~model.worker.supervisor.Supervisor` runs the worker process
  (:mod:`model.worker.child`, which owns the model), watches its heartbeat and restarts it;
* :class:`~model.worker.stats.WorkerStats` counts what was served, for :meth:`health`.

    async with WorkerClient(SamplerSpec(adapter="runs/7")) as client:
        result = await client.complete(GenerationRequest("genre:", n=8), on_position=print)
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from model.protocol import (
    AdapterRef,
    GenerationRequest,
    GenerationResult,
    PositionCallback,
    check_request,
)
from model.worker.errors import (
    AdapterRejectedError,
    InvalidRequestError,
    WorkerClosedError,
    WorkerStartError,
    WorkerUnavailableError,
)
from model.worker.health import HealthFile
from model.worker.lifecycle import BackgroundTasks, ClientLifecycle
from model.worker.messages import WorkerState
from model.worker.scheduler import Scheduler
from model.worker.settings import (
    DEFAULT_SMOKE_PROMPT,
    SamplerFactory,
    SamplerSpec,
    WorkerSettings,
    default_sampler_factory,
)
from model.worker.stats import BatchObserver, WorkerStats
from model.worker.supervisor import Supervisor

__all__ = ["PositionCallback", "WorkerClient"]


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
        settings = settings or WorkerSettings()
        self._tasks = BackgroundTasks()
        self._stats = WorkerStats()
        self._scheduler = Scheduler(settings, self._stats, self._tasks)
        self._supervisor = Supervisor(
            spec, settings, sampler_factory, self._scheduler, self._stats, self._tasks
        )
        # Where health() is written every few seconds for other processes (stats --json).
        self._health_file = HealthFile(Path(health_file)) if health_file is not None else None

    @property
    def spec(self) -> SamplerSpec:
        """What the worker loads (the adapter changes with :meth:`reload`)."""
        return self._supervisor.spec

    @spec.setter
    def spec(self, spec: SamplerSpec) -> None:
        self._supervisor.spec = spec

    @property
    def settings(self) -> WorkerSettings:
        return self._supervisor.settings

    @settings.setter
    def settings(self, settings: WorkerSettings) -> None:
        self._supervisor.settings = self._scheduler.settings = settings

    @property
    def health_file(self) -> Path | None:
        return self._health_file.path if self._health_file is not None else None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, wait: bool = True) -> None:
        """Spawn the worker; with ``wait`` return once the model is loaded.

        Raises :class:`WorkerStartError` when the model cannot be loaded (the client is then
        closed). Without ``wait``, requests queue up until the model is ready.
        """
        self._supervisor.start()
        self._tasks.spawn(self._scheduler.run(self._supervisor), "worker-scheduler")
        if self._health_file is not None:
            self._tasks.spawn(self._health_file.run(self.health), "worker-health")
        if wait:
            await self.wait_ready()

    async def wait_ready(self) -> None:
        """Wait for the first model load; raise :class:`WorkerStartError` if it failed."""
        try:
            await self._supervisor.wait_started()
        except WorkerStartError:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the worker process and fail whatever is still waiting. Safe to call twice."""
        if self._supervisor.state is WorkerState.CLOSED:
            return
        self._supervisor.begin_close()
        busy = self._scheduler.busy
        self._scheduler.fail_all(
            WorkerClosedError("The generator is shutting down; the request was not served.")
        )
        await self._tasks.cancel_all()
        await self._supervisor.stop(busy)
        if self._health_file is not None:
            await self._health_file.write(self.health())

    # ------------------------------------------------------------------ public API

    async def complete(
        self, request: GenerationRequest, *, on_position: PositionCallback | None = None
    ) -> GenerationResult:
        """Generate ``request.n`` completions; ``on_position`` hears the place in line.

        Raises :class:`InvalidRequestError` for a request no worker can serve (checked here,
        so it never fails the batch it would have joined), :class:`WorkerBusyError` when the
        queue is full, :class:`WorkerTimeoutError`, :class:`WorkerCrashedError` when the worker
        died while generating it, and :class:`WorkerUnavailableError` when no worker can be
        started.
        """
        if (problem := check_request(request)) is not None:
            raise InvalidRequestError(problem.message)
        self._supervisor.check_available()
        return await self._scheduler.complete(request, on_position)

    async def reload(self, adapter: str | os.PathLike[str] | None) -> None:
        """Switch the worker to another LoRA adapter (None: the base model) between batches.

        The adapter is loaded next to the current one and must pass a short smoke generation;
        otherwise :class:`AdapterRejectedError` is raised and the current adapter keeps serving.
        Queued requests are kept and served by whichever adapter is active when their batch runs.
        """
        if self._supervisor.closing or self._supervisor.state is WorkerState.STOPPED:
            raise WorkerUnavailableError("The generation worker is not running.")
        path: str | None = None
        if adapter is not None:
            resolved, exists = await asyncio.to_thread(_resolve, adapter)
            if not exists:
                raise AdapterRejectedError(
                    f"The adapter {resolved} does not exist; the current adapter keeps serving."
                )
            path = str(resolved)
        await self._scheduler.reload(self.spec.with_adapter(path))

    async def load_adapter(self, adapter: AdapterRef) -> None:
        """Make ``adapter`` resident in the worker (next to the default) under its name.

        The worker loads the adapters a batch names, so this sends one one-token request that
        names it. Raises :class:`AdapterRejectedError` when its folder is missing or the worker
        cannot load it, and the worker's errors (busy, crashed, timeout) as :meth:`complete`.
        """
        if not await asyncio.to_thread(_is_dir, adapter.path):
            raise AdapterRejectedError(
                f"The adapter {adapter.name} has no folder on the worker's machine."
            )
        await self.complete(GenerationRequest(DEFAULT_SMOKE_PROMPT, max_tokens=1, adapter=adapter))

    def health(self) -> dict[str, Any]:
        """A snapshot for ``/health``, ``microgenre stats --json`` and the bot's status."""
        now = time.monotonic()
        return {
            "transport": self.transport,
            **self._supervisor.as_dict(now),
            "queue_length": self._scheduler.queue_length,
            "in_flight": self._scheduler.in_flight,
            **self._stats.as_dict(now),
        }

    async def fetch_health(self) -> dict[str, Any]:
        """Same as :meth:`health` (the remote client has to ask its server)."""
        return self.health()

    @property
    def model_name(self) -> str | None:
        return self._supervisor.model_name

    @property
    def pid(self) -> int | None:
        """Process id of the current worker (None while it is down)."""
        return self._supervisor.pid

    def estimated_wait_s(self) -> float:
        """Seconds until a request queued now would probably be answered."""
        return self._scheduler.estimated_wait_s()

    def observe_batches(self, observer: BatchObserver) -> None:
        """Call ``observer`` with a :class:`BatchRecord` for every batch answered (metrics)."""
        self._stats.observers.append(observer)


def _is_dir(path: str) -> bool:
    return Path(path).expanduser().is_dir()


def _resolve(path: str | os.PathLike[str]) -> tuple[Path, bool]:
    resolved = Path(path).expanduser().resolve()
    return resolved, resolved.exists()
