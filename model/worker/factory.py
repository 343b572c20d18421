"""Build the generation client the configuration asks for.

``config`` is the bot's :class:`bot.config.Config`, used by duck typing (``model/`` never
imports the bot): ``config.worker`` (a :class:`~model.worker.settings.WorkerSettings`),
``config.model``, ``config.data_dir`` and ``config.resolve_path``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.artifacts import default_adapter
from model.worker.client import WorkerClient
from model.worker.health import HEALTH_FILE
from model.worker.pool import RemotePool
from model.worker.settings import (
    SamplerFactory,
    SamplerSpec,
    default_sampler_factory,
)


def sampler_spec(config: Any) -> SamplerSpec:
    """The weights ``[model]`` names, with paths resolved against the config file's folder."""
    model = config.model
    adapter = str(config.resolve_path(model.adapter)) if model.adapter else default_adapter()
    base = model.base_model
    candidate = config.resolve_path(base)
    if ("/" in base or base.startswith(".")) and candidate.exists():
        base = str(candidate)
    return SamplerSpec(
        base_model=base,
        adapter=adapter,
        device=model.device,
        dtype=model.dtype,
        threads=model.threads,
        data_dir=str(config.data_dir),
        fast=model.fast(),
    )


def make_local_client(
    config: Any, *, sampler_factory: SamplerFactory | None = None
) -> WorkerClient:
    """A supervised local worker for the configured model (whatever ``transport`` says)."""
    return WorkerClient(
        sampler_spec(config),
        config.worker,
        sampler_factory=sampler_factory or default_sampler_factory,
        health_file=Path(config.data_dir) / HEALTH_FILE,
    )


def make_client(
    config: Any, *, sampler_factory: SamplerFactory | None = None
) -> WorkerClient | RemotePool:
    """The client ``[worker] transport`` selects; start it with ``async with``.

    The remote transport is a :class:`RemotePool` over ``[worker] urls`` (or ``url`` alone).
    """
    w = config.worker
    if w.transport == "remote":
        return RemotePool(
            w.endpoints,
            w.api_token,
            model=w.remote_model,
            request_timeout_s=w.request_timeout_s,
            max_n=w.remote_max_n,
            down_for_s=w.down_backoff_s,
        )
    return make_local_client(config, sampler_factory=sampler_factory)
