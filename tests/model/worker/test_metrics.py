"""``GET /metrics`` of ``microgenre serve``: batch histograms, queue gauges, restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model.worker.client import WorkerClient
from model.worker.metrics import CollectorRegistry, exposition, watch_client
from model.worker.server import create_app
from model.worker.settings import SamplerSpec, ServeSettings
from tests.model.worker.conftest import FAST, serve_app, wait_until
from tests.model.worker.fakes import fake_factory

TOKEN = "metrics-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return parsed[(name, ())]


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, WorkerClient]]:
    # A window long enough that the three prompts of one request share one batch.
    worker = WorkerClient(
        SamplerSpec(), replace(FAST, batch_window_ms=300), sampler_factory=fake_factory
    )
    await worker.start()
    runner, url = await serve_app(create_app(worker, ServeSettings(), api_token=TOKEN))
    yield url, worker
    await runner.cleanup()
    await worker.close()


async def _get_metrics(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/metrics", headers=headers if headers is not None else AUTH) as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def _complete(url: str, body: dict[str, Any]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/completions", json=body, headers=AUTH) as resp,
    ):
        await resp.read()
        return resp.status


async def test_metrics_after_a_completion_show_the_batch(
    served: tuple[str, WorkerClient],
) -> None:
    url, worker = served
    status, kind, text = await _get_metrics(url)
    assert status == 200 and kind.startswith("text/plain")
    before = samples(text)
    assert value(before, "microgenre_worker_batch_seconds_count") == 0
    assert value(before, "microgenre_worker_up") == 1

    assert await _complete(url, {"prompt": ["a", "b", "c"], "n": 2, "max_tokens": 4}) == 200
    after = samples((await _get_metrics(url))[2])

    health = worker.health()
    assert health["batches_served"] == 1
    assert value(after, "microgenre_worker_batch_requests_count") == 1
    assert value(after, "microgenre_worker_batch_requests_sum") == 3
    assert value(after, "microgenre_worker_batch_completions_sum") == 6
    # The 6 rows land in the buckets from 8 up, not in those below.
    assert after[("microgenre_worker_batch_completions_bucket", (("le", "4.0"),))] == 0
    assert after[("microgenre_worker_batch_completions_bucket", (("le", "8.0"),))] == 1
    seconds = value(after, "microgenre_worker_batch_seconds_sum")
    assert value(after, "microgenre_worker_batch_seconds_count") == 1
    assert seconds == pytest.approx(health["avg_batch_s"], abs=1e-3) and seconds > 0
    assert value(after, "microgenre_worker_queue_length") == 0
    assert value(after, "microgenre_worker_in_flight") == 0
    assert value(after, "microgenre_worker_restarts_total") == 0


async def test_a_crash_counts_as_a_restart(served: tuple[str, WorkerClient]) -> None:
    url, worker = served
    assert await _complete(url, {"prompt": "crash", "max_tokens": 4}) == 503
    await wait_until(lambda: worker.health()["restarts"] == 1 and worker.health()["alive"])
    parsed = samples((await _get_metrics(url))[2])
    assert value(parsed, "microgenre_worker_restarts_total") == 1
    assert value(parsed, "microgenre_worker_up") == 1


async def test_metrics_need_the_token(served: tuple[str, WorkerClient]) -> None:
    url, _ = served
    status, _, _ = await _get_metrics(url, headers={})
    assert status == 401


class _Remote:
    """A backend that reports no batches (like the remote client): only its health's gauges."""

    def health(self) -> dict[str, Any]:
        return {"alive": False, "in_flight": 2}


def test_a_client_without_batches_exposes_its_health_gauges() -> None:
    registry = CollectorRegistry()
    watch_client(registry, _Remote())
    parsed = samples(exposition(registry).decode())
    assert value(parsed, "microgenre_worker_up") == 0
    assert value(parsed, "microgenre_worker_in_flight") == 2
    assert ("microgenre_worker_queue_length", ()) not in parsed
    assert value(parsed, "microgenre_worker_batch_seconds_count") == 0
