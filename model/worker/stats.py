"""Counters of the local worker: what ``health()`` reports and the busy estimate uses."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from model.protocol import GenerationResult

log = logging.getLogger(__name__)

# Until a batch has been timed, assume this many seconds per batch (a conservative guess).
DEFAULT_BATCH_S = 2.0


@dataclass(frozen=True)
class BatchRecord:
    """One batch the worker answered: what :attr:`WorkerStats.observers` hear (metrics)."""

    requests: int
    completions: int
    generate_s: float


BatchObserver = Callable[[BatchRecord], None]


@dataclass
class WorkerStats:
    """Served counters, recent batch times, memory and the last error.

    >>> stats = WorkerStats()
    >>> stats.record_batch([GenerationResult(texts=("a", "b"), model="m")], generate_s=0.5)
    >>> stats.avg_batch_s(), stats.as_dict(now=0.0)["completions_served"]
    (0.5, 2)
    """

    restarts: int = 0
    last_error: str | None = None
    rss: int = 0
    ready_since: float | None = None
    batches_served: int = 0
    requests_served: int = 0
    completions_served: int = 0
    batch_times: deque[float] = field(default_factory=lambda: deque(maxlen=20))
    # Called with every batch answered (e.g. model.worker.metrics.WorkerMetrics.observe_batch).
    observers: list[BatchObserver] = field(default_factory=list)

    def record_batch(self, results: Sequence[GenerationResult], generate_s: float) -> None:
        completions = sum(len(r.texts) for r in results)
        self.batch_times.append(generate_s)
        self.batches_served += 1
        self.requests_served += len(results)
        self.completions_served += completions
        record = BatchRecord(len(results), completions, generate_s)
        for observer in self.observers:
            try:
                observer(record)
            except Exception:  # metrics must never fail a batch
                log.exception("batch observer failed")

    def avg_batch_s(self) -> float:
        """Mean seconds of the last 20 batches."""
        if not self.batch_times:
            return DEFAULT_BATCH_S
        return sum(self.batch_times) / len(self.batch_times)

    def as_dict(self, now: float) -> dict[str, Any]:
        """The counters' part of :meth:`WorkerClient.health` (``now``: ``time.monotonic()``)."""
        return {
            "restarts": self.restarts,
            "batches_served": self.batches_served,
            "requests_served": self.requests_served,
            "completions_served": self.completions_served,
            "avg_batch_s": round(self.avg_batch_s(), 4) if self.batch_times else None,
            "rss_bytes": self.rss,
            "uptime_s": round(now - self.ready_since, 1) if self.ready_since else None,
            "last_error": self.last_error,
        }
