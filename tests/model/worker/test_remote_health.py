"""The remote client reads a serve /health that shows liveness only (no token)."""

from __future__ import annotations

from model.worker.remote import RemoteClient
from model.worker.server import create_app
from tests.model.worker.conftest import serve_app
from tests.model.worker.test_server import LIMITS, ScriptedBackend


async def test_liveness_only_health_counts_as_alive() -> None:
    backend = ScriptedBackend()
    runner, url = await serve_app(create_app(backend, LIMITS))  # no token: {status, ready}
    client = RemoteClient(url)
    await client.start()
    try:
        health = await client.fetch_health()
        assert health["alive"] is True and health["ready"] is True
        backend.health_data["alive"] = False  # the worker is down: 503 {ready: false}
        health = await client.fetch_health()
        assert health["alive"] is False
    finally:
        await client.close()
        await runner.cleanup()
