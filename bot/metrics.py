"""Prometheus metrics of the bot, served on ``[bot] metrics_host:metrics_port`` (0: off).

One :class:`BotMetrics` per bot, with its own :class:`~prometheus_client.CollectorRegistry`
(never the global default), is created by the :class:`~bot.service.GenreService` and used by
whatever records: the service (refusals), the generation cog (genres posted), the voting cog
(votes) and the retraining manager (finished runs). The fair queue's lengths, the retraining
state and, through :mod:`model.worker.metrics`, the worker's batches and restarts are read when
scraped. :func:`metrics_endpoint` serves them from an aiohttp app on the bot's own loop.

>>> from bot.errors import WaitTooLongError
>>> metrics = BotMetrics()
>>> metrics.refuse(WaitTooLongError(90.0, 60.0))
>>> metrics.vote("up", added=True)
>>> text = metrics.exposition().decode()
>>> 'microgenre_bot_requests_refused_total{reason="max_wait"} 1.0' in text
True
>>> 'microgenre_bot_votes_total{action="added",kind="up"} 1.0' in text
True
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.errors import MicrogenreError, QueueRefusedError

if TYPE_CHECKING:
    from bot.config import BotConfig
    from bot.queue import FairQueue

__all__ = ["BotMetrics", "metrics_endpoint", "refusal_reason", "retrain_state"]

log = logging.getLogger(__name__)

RETRAIN_STATES = ("idle", "starting", "training", "evaluating", "activating", "finishing")
VOTE_KINDS = ("up", "down", "favorite")


class _Phase(Protocol):
    @property
    def phase(self) -> str: ...


class RetrainState(Protocol):
    """What the retrain gauge reads of a retraining manager (bot.retrain.RetrainManager)."""

    @property
    def running(self) -> bool: ...

    @property
    def progress(self) -> _Phase | None: ...


def refusal_reason(error: BaseException) -> str:
    """The ``reason`` label of a `/genre new` that got no genre because of ``error``.

    >>> from bot.errors import WaitTooLongError
    >>> from model.worker.errors import WorkerBusyError, WorkerCrashedError
    >>> refusal_reason(WaitTooLongError(90.0, 60.0)), refusal_reason(WorkerBusyError(3.0))
    ('max_wait', 'worker_busy')
    >>> refusal_reason(WorkerCrashedError("died")), refusal_reason(KeyError("bug"))
    ('crashed', 'error')
    """
    if isinstance(error, QueueRefusedError):
        return error.reason
    from model.errors import ModelError
    from model.worker import errors as worker

    reasons: tuple[tuple[type[BaseException], str], ...] = (
        (worker.WorkerBusyError, "worker_busy"),
        (worker.WorkerCrashedError, "crashed"),
        (worker.WorkerTimeoutError, "timeout"),
        (worker.WorkerClosedError, "shutting_down"),
        (worker.WorkerUnavailableError, "unavailable"),
        (ModelError, "model_error"),
    )
    return next((reason for kind, reason in reasons if isinstance(error, kind)), "error")


def retrain_state(running: bool, phase: str | None) -> str:
    """The retraining state shown for a manager (``phase``: its run's current phase).

    >>> retrain_state(False, "training"), retrain_state(True, "evaluating")
    ('idle', 'evaluating')
    >>> retrain_state(True, "finished")
    'finishing'
    """
    if not running:
        return "idle"
    if phase == "finished":
        return "finishing"
    return phase if phase in RETRAIN_STATES else "starting"


class _RetrainCollector(Collector):
    """``microgenre_bot_retrain_state{state}``: 1 for the current state, 0 for the others."""

    def __init__(self, retrainer: RetrainState) -> None:
        self._retrainer = retrainer

    def collect(self) -> Iterator[Metric]:
        progress = self._retrainer.progress
        current = retrain_state(self._retrainer.running, progress.phase if progress else None)
        family = GaugeMetricFamily(
            "microgenre_bot_retrain_state",
            "Retraining state: 1 for the current one (idle, starting, training, evaluating, "
            "activating, finishing).",
            labels=["state"],
        )
        for state in RETRAIN_STATES:
            family.add_metric([state], 1.0 if state == current else 0.0)
        yield family


class BotMetrics:
    """The bot's metrics in their own registry (see the module)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.genres_delivered = Counter(
            "microgenre_bot_genres_delivered",
            "Genres posted in answer to /genre new.",
            registry=self.registry,
        )
        self.refused = Counter(
            "microgenre_bot_requests_refused",
            "/genre new requests that got no genre, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.votes = Counter(
            "microgenre_bot_votes",
            "Vote reactions seen on generated genres, by kind (up, down, favorite) and action "
            "(added, removed).",
            ["kind", "action"],
            registry=self.registry,
        )
        self.retrain_runs = Counter(
            "microgenre_bot_retrain_runs",
            "Finished retraining runs, by status.",
            ["status"],
            registry=self.registry,
        )

    def refuse(self, error: BaseException) -> None:
        self.refused.labels(refusal_reason(error)).inc()

    def vote(self, kind: str, *, added: bool) -> None:
        self.votes.labels(kind, "added" if added else "removed").inc()

    def watch_queue(self, queue: FairQueue) -> None:
        """Gauges of the fair queue, read when scraped."""
        waiting = Gauge(
            "microgenre_bot_queue_waiting",
            "/genre new requests waiting in the bot's fair queue.",
            registry=self.registry,
        )
        waiting.set_function(lambda: queue.waiting)
        generating = Gauge(
            "microgenre_bot_queue_generating",
            "/genre new requests holding a generation slot.",
            registry=self.registry,
        )
        generating.set_function(lambda: queue.running)

    def watch_retrainer(self, retrainer: RetrainState) -> None:
        self.registry.register(_RetrainCollector(retrainer))

    def watch_worker(self, client: Any) -> None:
        """The generation client's metrics (:func:`model.worker.metrics.watch_client`)."""
        from model.worker.metrics import watch_client

        watch_client(self.registry, client)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_app(metrics: BotMetrics) -> web.Application:
    """An aiohttp app serving ``GET /metrics``."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", handle)
    return app


@contextlib.asynccontextmanager
async def metrics_endpoint(metrics: BotMetrics, config: BotConfig) -> AsyncIterator[str | None]:
    """Serve ``GET /metrics`` on ``metrics_host:metrics_port`` while inside; yields its URL
    (None, and nothing served, when ``metrics_port`` is 0, the default)."""
    host, port = config.metrics_host, config.metrics_port
    if port == 0:
        yield None
        return
    runner = web.AppRunner(metrics_app(metrics), access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise MicrogenreError(
                f"[bot] metrics_port: cannot listen on {host}:{port}: {exc.strerror or exc}."
            ) from None
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
        log.info("metrics on %s", url)
        yield url
    finally:
        await runner.cleanup()
