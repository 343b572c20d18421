"""The messages of the worker pipe, and the states of the local worker.

The client (:mod:`model.worker.supervisor`, :mod:`model.worker.scheduler`) and the worker
process (:mod:`model.worker.child`) exchange these frozen dataclasses over one duplex
``multiprocessing`` pipe (pickled, so the child never needs more than this module):

* to the worker: :class:`Generate`, :class:`Reload`, :class:`Stop`;
* from the worker: :class:`Heartbeat`, :class:`Loaded` or :class:`LoadFailed` once at start,
  :class:`BatchDone` or :class:`BatchFailed` per :class:`Generate`, :class:`Reloaded` or
  :class:`ReloadFailed` per :class:`Reload`.

>>> msg = BatchFailed(batch_id=7, error="RuntimeError: boom")
>>> match msg:
...     case BatchFailed(batch_id=batch, error=error):
...         print(batch, error)
7 RuntimeError: boom
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from model.protocol import AdapterRef, GenerationRequest, GenerationResult
from model.worker.settings import SamplerSpec


class WorkerState(StrEnum):
    """The local worker's ``state`` in :meth:`WorkerClient.health` (its value is shown as is)."""

    STOPPED = "stopped"  # not started yet
    STARTING = "starting"  # the first process is loading the model
    READY = "ready"  # serving
    RESTARTING = "restarting"  # the process died; a new one is on its way
    FAILED = "failed"  # the model cannot be loaded (retried with backoff)
    CLOSED = "closed"  # shut down for good


# What the worker process is busy with (reported in its heartbeats).
Phase = Literal["loading", "ready", "generating", "reloading"]


# --------------------------------------------------------------------------- to the worker


@dataclass(frozen=True)
class Generate:
    """Generate one batch; answered by :class:`BatchDone` or :class:`BatchFailed`."""

    batch_id: int
    requests: tuple[GenerationRequest, ...]


@dataclass(frozen=True)
class Reload:
    """Load ``spec`` next to the current sampler and switch if it passes the smoke test."""

    op_id: int
    spec: SamplerSpec


@dataclass(frozen=True)
class Stop:
    """Exit after the current message."""


ToWorker = Generate | Reload | Stop


# --------------------------------------------------------------------------- from the worker


@dataclass(frozen=True)
class Heartbeat:
    rss: int
    phase: Phase


@dataclass(frozen=True)
class Loaded:
    """The model is loaded; the worker serves from now on."""

    name: str
    adapter: str | None
    pid: int
    load_s: float
    rss: int


@dataclass(frozen=True)
class LoadFailed:
    """The model could not be loaded; the worker exits after sending this."""

    error: str


@dataclass(frozen=True)
class RequestFailed:
    """In :class:`BatchDone`: this one request could not be served (its adapter did not load)."""

    error: str


@dataclass(frozen=True)
class BatchDone:
    """One answer per request, in order; ``adapters``: those resident after the batch."""

    batch_id: int
    results: tuple[GenerationResult | RequestFailed, ...]
    generate_s: float
    rss: int
    adapters: tuple[AdapterRef, ...] = ()


@dataclass(frozen=True)
class BatchFailed:
    batch_id: int
    error: str


@dataclass(frozen=True)
class Reloaded:
    """The new adapter passed the smoke test and serves from now on."""

    op_id: int
    name: str
    adapter: str | None
    load_s: float


@dataclass(frozen=True)
class ReloadFailed:
    """The new adapter was rejected; the previous one keeps serving."""

    op_id: int
    error: str


FromWorker = Heartbeat | Loaded | LoadFailed | BatchDone | BatchFailed | Reloaded | ReloadFailed
