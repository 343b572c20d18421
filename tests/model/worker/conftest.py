"""Fixtures: a worker client of either transport over the fake sampler."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from model.worker.client import WorkerClient
from model.worker.remote import RemoteClient
from model.worker.server import create_app
from model.worker.settings import SamplerSpec, ServeSettings, WorkerSettings
from tests.model.worker.fakes import fake_factory

FAST = WorkerSettings(
    batch_window_ms=20,
    max_batch_size=64,
    queue_size=64,
    heartbeat_interval_s=0.2,
    heartbeat_timeout_s=2.0,
    request_timeout_s=20.0,
    restart_backoff_s=0.1,
    start_timeout_s=60.0,
)


@dataclass
class Harness:
    """A started client; ``worker`` is the local client behind it (the same for "local")."""

    client: WorkerClient | RemoteClient
    worker: WorkerClient
    url: str | None = None


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture(params=["local", "remote"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_harness(transport: str, tmp_path: Path) -> AsyncIterator[MakeHarness]:
    """``await make_harness(**settings)`` → a started :class:`Harness` of the transport.

    The remote server loads adapters from the test's ``tmp_path``."""
    cleanups: list[Callable[[], Awaitable[Any]]] = []

    # The remote server has a token by default: without one it refuses hot reloads.
    async def make(
        spec: SamplerSpec | None = None, token: str | None = "harness-token", **overrides: Any
    ) -> Harness:
        worker = WorkerClient(
            spec or SamplerSpec(), replace(FAST, **overrides), sampler_factory=fake_factory
        )
        await worker.start()
        cleanups.append(worker.close)
        if transport == "local":
            return Harness(worker, worker)
        app = create_app(worker, ServeSettings(), api_token=token, adapter_roots=[tmp_path])
        runner, url = await serve_app(app)
        cleanups.append(runner.cleanup)
        remote = RemoteClient(url, token, request_timeout_s=overrides.get("request_timeout_s", 20))
        await remote.start()
        cleanups.append(remote.close)
        return Harness(remote, worker, url)

    yield make
    for cleanup in reversed(cleanups):
        await cleanup()
