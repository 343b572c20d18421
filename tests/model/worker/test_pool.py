"""RemotePool: several `microgenre serve` apps, requests split to the server's max_n, a server
that is down skipped, all down a readable error."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from model.protocol import GenerationRequest, GenerationResult
from model.worker.errors import InvalidRequestError, WorkerUnavailableError
from model.worker.pool import RemotePool
from model.worker.remote import RemoteClient
from model.worker.server import create_app
from model.worker.settings import ServeSettings
from tests.model.worker.conftest import serve_app


class CountingBackend:
    """A served backend that answers ``n`` distinct texts, or fails while ``down``."""

    model_name = "fake-genre"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.down = False
        self.sizes: list[int] = []  # n of every request that reached it
        self.seeds: list[int | None] = []

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        if self.down:
            raise WorkerUnavailableError("The worker is restarting.")
        self.sizes.append(request.n)
        self.seeds.append(request.seed)
        await asyncio.sleep(self.delay_s)
        texts = tuple(f" genre {request.seed} {i}" for i in range(request.n))
        return GenerationResult(texts=texts, model=self.model_name, completion_tokens=request.n)

    async def reload(self, adapter: str | None) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {"alive": True, "queue_length": 0}


Serve = Callable[..., Awaitable[tuple[CountingBackend, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(delay_s: float = 0.0, max_n: int = 64) -> tuple[CountingBackend, str]:
        backend = CountingBackend(delay_s)
        runner, url = await serve_app(create_app(backend, ServeSettings(max_n=max_n)))
        runners.append(runner)
        return backend, url

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_request_over_the_servers_max_n_is_split(serve: Serve) -> None:
    backend, url = await serve(max_n=64)
    request = GenerationRequest("genre:", n=150, max_tokens=8, seed=3)
    async with RemoteClient(url) as plain:
        with pytest.raises(InvalidRequestError):
            await plain.complete(request)
    async with RemotePool([url], max_n=64) as pool:
        result = await pool.complete(request)
    assert len(result.texts) == 150 and len(set(result.texts)) == 150
    assert sorted(backend.sizes) == [22, 64, 64]
    assert sorted(s for s in backend.seeds if s is not None) == [3, 4, 5]
    assert result.completion_tokens == 150


async def test_requests_spread_over_the_servers(serve: Serve) -> None:
    first, url_a = await serve(delay_s=0.05)
    second, url_b = await serve(delay_s=0.05)
    async with RemotePool([url_a, url_b]) as pool:
        results = await asyncio.gather(
            *(pool.complete(GenerationRequest("genre:", n=2, max_tokens=8)) for _ in range(20))
        )
    assert all(len(r.texts) == 2 for r in results)
    assert len(first.sizes) + len(second.sizes) == 20
    assert 5 <= len(first.sizes) <= 15, (first.sizes, second.sizes)


async def test_a_server_that_is_down_is_skipped_for_the_backoff(serve: Serve) -> None:
    broken, url_a = await serve()
    healthy, url_b = await serve()
    broken.down = True
    async with RemotePool([url_a, url_b], down_for_s=60.0) as pool:
        for _ in range(6):
            result = await pool.complete(GenerationRequest("genre:", n=1, max_tokens=8))
            assert len(result.texts) == 1
        assert len(healthy.sizes) == 6
        assert pool.health()["servers"][0]["up"] is False
        # Back again and its backoff over: it takes work again.
        broken.down = False
        pool.endpoints.mark_up(0)
        await asyncio.gather(
            *(pool.complete(GenerationRequest("genre:", n=1, max_tokens=8)) for _ in range(6))
        )
    assert broken.sizes, "the recovered server got no work"


async def test_an_unreachable_server_is_skipped(serve: Serve) -> None:
    healthy, url = await serve()
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with RemotePool([closed_url, url]) as pool:
        for _ in range(3):
            result = await pool.complete(GenerationRequest("genre:", n=3, max_tokens=8))
            assert len(result.texts) == 3
        assert pool.health()["servers"][0]["up"] is False
    assert healthy.sizes == [3, 3, 3]


async def test_every_server_down_is_one_readable_error(serve: Serve) -> None:
    first, url_a = await serve()
    second, url_b = await serve()
    first.down = second.down = True
    async with RemotePool([url_a, url_b]) as pool:
        with pytest.raises(WorkerUnavailableError, match="Every generation server is down"):
            await pool.complete(GenerationRequest("genre:", n=1, max_tokens=8))
