"""Worker health as other processes (microgenre stats) see it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from bot.cli import entry
from bot.config import load_config
from model.protocol import GenerationRequest
from model.worker.client import WorkerClient
from model.worker.health import HEALTH_FILE, read_snapshot, worker_health
from model.worker.settings import SamplerSpec
from tests.model.worker.conftest import FAST, serve_app, wait_until
from tests.model.worker.fakes import fake_factory


async def test_local_snapshot_is_written_and_read(tmp_path: Path) -> None:
    config = load_config(None)
    path = config.data_dir / HEALTH_FILE
    assert (await worker_health(config))["state"] == "not running"
    async with WorkerClient(
        SamplerSpec(), replace(FAST), sampler_factory=fake_factory, health_file=path
    ) as client:
        await client.complete(GenerationRequest("x"))
        await wait_until(lambda: path.is_file() and read_snapshot(path).get("batches_served") == 1)
        live = await worker_health(config)
        assert live["alive"] is True and live["pid"] == client.pid and live["snapshot_age_s"] < 5
    closed = await worker_health(config)
    assert closed["state"] == "closed" and closed["alive"] is False


def test_snapshot_of_a_dead_process_is_stale(tmp_path: Path) -> None:
    path = tmp_path / HEALTH_FILE
    path.write_text(json.dumps({"state": "ready", "alive": True, "owner_pid": 2**22 + 12345}))
    data = read_snapshot(path)
    assert data["alive"] is False and data["state"].startswith("stopped")


async def test_remote_health_comes_from_the_server() -> None:
    from aiohttp import web

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"alive": True, "queue_length": 3})

    app = web.Application()
    app.router.add_get("/health", health)
    runner, url = await serve_app(app)
    try:
        config = load_config(
            None, environ={"MICROGENRE_WORKER_TRANSPORT": "remote", "MICROGENRE_WORKER_URL": url}
        )
        data = await worker_health(config)
        assert data["alive"] is True and data["queue_length"] == 3
        assert data["transport"] == "remote"
    finally:
        await runner.cleanup()


def test_stats_json_includes_the_worker(tmp_path: Path, capsys: object) -> None:
    assert entry(["db", "upgrade"]) == 0
    assert entry(["stats", "--json"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    data = json.loads(out[out.index("{") :])
    assert data["worker"]["state"] == "not running"
