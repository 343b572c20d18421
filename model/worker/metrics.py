"""Prometheus metrics of a generation worker client (``microgenre serve``'s ``/metrics``, and
the bot's endpoint when it runs the worker itself).

Everything goes into a :class:`~prometheus_client.CollectorRegistry` the caller owns (one per
process or app, never the global default), so tests and apps stay apart. Batches are pushed
as they are answered (:meth:`WorkerMetrics.observe_batch`); the gauges and the restart count
are read from the client's ``health()`` at scrape time, so they never drift from it. Only the
parent process imports this module; the worker child never does.

>>> registry = CollectorRegistry()
>>> metrics = WorkerMetrics(registry, health=lambda: {"queue_length": 3, "restarts": 1})
>>> metrics.observe_batch(BatchRecord(requests=2, completions=16, generate_s=0.4))
>>> text = exposition(registry).decode()
>>> "microgenre_worker_queue_length 3.0" in text, "microgenre_worker_restarts_total 1.0" in text
(True, True)
>>> "microgenre_worker_batch_completions_sum 16.0" in text
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from model.worker.stats import BatchObserver, BatchRecord

__all__ = [
    "CONTENT_TYPE",
    "BatchRecord",
    "CollectorRegistry",
    "WorkerMetrics",
    "exposition",
    "watch_client",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Rows (completions) and requests per batch: powers of two up to a large max_batch_size.
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Seconds one batch generates: from a tiny test model to a slow CPU batch.
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

# (health key, metric name, help) of the gauges read at scrape time.
HEALTH_GAUGES = (
    ("queue_length", "microgenre_worker_queue_length", "Requests waiting in the worker's queue."),
    ("in_flight", "microgenre_worker_in_flight", "Requests being generated now."),
)


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format (serve with :data:`CONTENT_TYPE`)."""
    return generate_latest(registry)


class _HealthCollector(Collector):
    """Gauges and the restart counter, read from ``health()`` when scraped."""

    def __init__(self, health: Callable[[], Mapping[str, Any]]) -> None:
        self._health = health

    def collect(self) -> Iterator[Metric]:
        try:
            health = self._health()
        except Exception:  # a scrape must not fail over one broken source
            log.exception("reading the worker's health for metrics failed")
            return
        for key, name, documentation in HEALTH_GAUGES:
            if isinstance(health.get(key), int | float):
                yield GaugeMetricFamily(name, documentation, value=health[key])
        if "alive" in health:
            yield GaugeMetricFamily(
                "microgenre_worker_up",
                "1 while a worker is loaded and answering, else 0.",
                value=1.0 if health["alive"] else 0.0,
            )
        if isinstance(health.get("restarts"), int):
            yield CounterMetricFamily(
                "microgenre_worker_restarts",
                "Times the worker process was restarted after a crash or hang.",
                value=health["restarts"],
            )


class WorkerMetrics:
    """Batch histograms plus the gauges of ``health`` (see the module), in ``registry``."""

    def __init__(
        self, registry: CollectorRegistry, *, health: Callable[[], Mapping[str, Any]]
    ) -> None:
        self.batch_requests = Histogram(
            "microgenre_worker_batch_requests",
            "Requests answered together in one batch.",
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_completions = Histogram(
            "microgenre_worker_batch_completions",
            "Completions (rows) generated in one batch.",
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "microgenre_worker_batch_seconds",
            "Seconds the worker spent generating one batch.",
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        registry.register(_HealthCollector(health))

    def observe_batch(self, record: BatchRecord) -> None:
        self.batch_requests.observe(record.requests)
        self.batch_completions.observe(record.completions)
        self.batch_seconds.observe(record.generate_s)


@runtime_checkable
class ObservableClient(Protocol):
    """A client that reports its batches (the local :class:`~model.worker.WorkerClient`)."""

    def observe_batches(self, observer: BatchObserver) -> None: ...


class HealthSource(Protocol):
    def health(self) -> dict[str, Any]: ...


def watch_client(registry: CollectorRegistry, client: HealthSource) -> WorkerMetrics:
    """Metrics of ``client`` in ``registry``; batches are observed when the client reports them
    (a local worker; a remote client only has its health's gauges)."""
    metrics = WorkerMetrics(registry, health=client.health)
    if isinstance(client, ObservableClient):
        client.observe_batches(metrics.observe_batch)
    return metrics
