"""Plain settings of the worker (no dependency on the bot's config classes).

:func:`model.worker.factory.make_client` builds them from the ``[model]`` and ``[worker]``
sections of the bot's configuration; tests build them directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from model.protocol import GenerationRequest, GenerationResult

# A prompt the smoke generation of a hot reload completes; the exact text matters little: the
# check is that the adapter loads and samples finite, non-empty text.
DEFAULT_SMOKE_PROMPT = "genre:"


class SamplerLike(Protocol):
    """What the worker needs from a model: ``model.sampler.Sampler`` or a fake in tests."""

    name: str

    def complete_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]: ...


@dataclass(frozen=True)
class SamplerSpec:
    """Which weights the worker loads (the arguments of ``Sampler.load``)."""

    base_model: str = "smollm2-135m"
    # LoRA adapter folder; None serves the base model alone.
    adapter: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0
    # Where the converted base model is cached (None: the model library's default).
    data_dir: str | None = None

    def with_adapter(self, adapter: str | None) -> SamplerSpec:
        return dataclasses.replace(self, adapter=adapter)


# Called in the worker process with the spec; must be picklable (a module-level function or a
# functools.partial of one) because the worker is started with the "spawn" method.
SamplerFactory = Callable[[SamplerSpec], SamplerLike]


def default_sampler_factory(spec: SamplerSpec) -> SamplerLike:
    """Load the real model (imports torch; only ever called inside the worker process)."""
    from model.sampler import Sampler

    sampler: SamplerLike = Sampler.load(
        spec.base_model,
        spec.adapter,
        device=spec.device,
        dtype=spec.dtype,
        threads=spec.threads,
        data_dir=spec.data_dir,
    )
    return sampler


@dataclass(frozen=True)
class WorkerSettings:
    """Batching, back-pressure and supervision knobs (``[worker]`` in the config)."""

    # How long the oldest queued request waits for company before its batch starts.
    batch_window_ms: float = 25.0
    # Most completions (sum of ``n``) generated together in one batch.
    max_batch_size: int = 256
    # Most requests waiting in the queue; beyond it callers get WorkerBusyError.
    queue_size: int = 256
    # The worker process reports that it is alive this often...
    heartbeat_interval_s: float = 1.0
    # ...and is killed and restarted when no report came for this long.
    heartbeat_timeout_s: float = 10.0
    # A caller waits at most this long (queue + generation); a batch running this long is hung.
    request_timeout_s: float = 120.0
    # First delay before restarting a crashed worker; doubles on each crash in a row (≤ 60 s).
    restart_backoff_s: float = 1.0
    # How long loading the model may take (the first run converts the GGUF base model).
    start_timeout_s: float = 300.0
    # Prompt of the smoke generation an adapter must pass before a hot reload switches to it.
    smoke_prompt: str = DEFAULT_SMOKE_PROMPT
