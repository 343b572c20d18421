"""Activation's check: ``PipelineGenerator.prepare`` loads the adapter through the client that
serves it (the local worker, or every configured `microgenre serve`) and generates one genre
with it; whatever fails raises a short error that names no path and no address."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.service import PipelineGenerator
from model.protocol import AdapterRef, GenerationRequest, GenerationResult
from model.worker.client import WorkerClient
from model.worker.errors import AdapterRejectedError, WorkerCrashedError
from model.worker.pool import RemotePool
from model.worker.server import create_app
from model.worker.settings import SamplerSpec, ServeSettings
from tests.model.worker.conftest import FAST, serve_app
from tests.model.worker.fakes import fake_factory, write_adapter

TOKEN = "prepare-token"


def _adapter(path: Path, **options: Any) -> AdapterRef:
    """An adapter folder for the fake sampler and for serve's check (adapter_config.json)."""
    write_adapter(path, **options)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    return AdapterRef(f"guild-1-{path.name}", str(path))


def _assert_safe(error: BaseException, *secrets: str) -> None:
    """A short sentence that names neither the folder nor a server's address."""
    text = str(error)
    assert text and len(text) <= 200 and "\n" not in text, text
    for secret in secrets:
        assert secret not in text, text


class AdapterBackend:
    """serve's backend stand-in: the default answers; requests naming an adapter follow
    ``mode``: "good", "reject" (the load is refused), "empty" (only empty text), or
    "fail_after_load" (the load's own smoke request passes, every later one fails)."""

    def __init__(self, mode: str = "good") -> None:
        self.mode = mode
        self.model_name: str | None = "fake+base"
        self.requests: list[GenerationRequest] = []

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        named = [r for r in self.requests if r.adapter is not None]
        if request.adapter is not None:
            if self.mode == "reject":
                raise AdapterRejectedError(f"{request.adapter.path} holds broken weights.")
            if self.mode == "fail_after_load" and len(named) > 1:
                raise WorkerCrashedError("The worker died while generating.")
        text = "" if request.adapter is not None and self.mode == "empty" else " velvet dub\n"
        return GenerationResult(tuple(text for _ in range(request.n)), "fake+base")

    async def reload(self, adapter: str | None) -> None:
        raise AssertionError("prepare must not hot-reload the default")

    def health(self) -> dict[str, Any]:
        return {"alive": True}


Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """``await serve(backend)`` → the URL of a `microgenre serve` app over ``backend`` that
    loads adapters from ``tmp_path``."""
    runners: list[web.AppRunner] = []

    async def start(backend: AdapterBackend) -> str:
        app = create_app(backend, ServeSettings(), api_token=TOKEN, adapter_roots=[tmp_path])
        runner, url = await serve_app(app)
        runners.append(runner)
        return url

    yield start
    for runner in runners:
        await runner.cleanup()


async def _served(url: str) -> list[str]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/v1/models", headers=headers) as response,
    ):
        return [m["id"] for m in (await response.json())["data"]]


async def _remote_generator(urls: list[str]) -> PipelineGenerator:
    pool = RemotePool(urls, TOKEN, request_timeout_s=10)
    await pool.start()
    return PipelineGenerator(pool)


async def test_remote_prepare_loads_on_every_server_then_generates(
    serve: Serve, tmp_path: Path
) -> None:
    backends = [AdapterBackend(), AdapterBackend()]
    urls = [await serve(b) for b in backends]
    generator = await _remote_generator(urls)
    ref = _adapter(tmp_path / "run-0001")
    try:
        await generator.prepare(ref)
    finally:
        await generator.close()
    for url in urls:
        assert ref.name in await _served(url)  # loaded on every configured server
    named = [r for b in backends for r in b.requests if r.adapter == ref]
    # Each server's load ran its own smoke request; then one genre was generated with it.
    assert len(named) == 3
    assert any(r.prompt == "genre:" and r.n == 1 and r.max_tokens > 1 for r in named)


@pytest.mark.parametrize("mode", ["reject", "empty", "fail_after_load"])
async def test_remote_prepare_refuses_an_adapter_that_does_not_serve(
    serve: Serve, tmp_path: Path, mode: str
) -> None:
    url = await serve(AdapterBackend(mode))
    generator = await _remote_generator([url])
    ref = _adapter(tmp_path / "run-0002")
    try:
        with pytest.raises(AdapterRejectedError, match=ref.name) as caught:
            await generator.prepare(ref)
    finally:
        await generator.close()
    _assert_safe(caught.value, str(tmp_path), url.split("//", 1)[1])


async def test_remote_prepare_refuses_when_one_server_cannot_load_and_retires_it_elsewhere(
    serve: Serve, tmp_path: Path
) -> None:
    good, bad = await serve(AdapterBackend()), await serve(AdapterBackend("reject"))
    generator = await _remote_generator([good, bad])
    ref = _adapter(tmp_path / "run-0003")
    try:
        with pytest.raises(AdapterRejectedError) as caught:
            await generator.prepare(ref)
    finally:
        await generator.close()
    _assert_safe(caught.value, str(tmp_path))
    assert await _served(good) == ["genre"]  # no half-activated name left behind
    assert await _served(bad) == ["genre"]


async def test_remote_prepare_refuses_when_a_server_is_down(serve: Serve, tmp_path: Path) -> None:
    up = await serve(AdapterBackend())
    down = "http://127.0.0.1:9"  # discard port: nothing listens
    generator = await _remote_generator([up, down])
    ref = _adapter(tmp_path / "run-0004")
    try:
        with pytest.raises(AdapterRejectedError) as caught:
            await generator.prepare(ref)
    finally:
        await generator.close()
    _assert_safe(caught.value, str(tmp_path), "127.0.0.1")


@pytest.fixture
async def local() -> AsyncIterator[tuple[PipelineGenerator, WorkerClient]]:
    worker = WorkerClient(SamplerSpec(), FAST, sampler_factory=fake_factory)
    await worker.start()
    generator = PipelineGenerator(worker)
    yield generator, worker
    await generator.close()


async def test_local_prepare_loads_the_adapter_into_the_worker(
    local: tuple[PipelineGenerator, WorkerClient], tmp_path: Path
) -> None:
    generator, worker = local
    ref = _adapter(tmp_path / "run-0005", tag="g5")
    await generator.prepare(ref)
    assert ref.to_dict() in worker.health()["adapters"]  # resident in the worker process


@pytest.mark.parametrize(
    "options", [{"load_error": "corrupt weights"}, {"empty": True}, None], ids=str
)
async def test_local_prepare_refuses_an_adapter_that_does_not_serve(
    local: tuple[PipelineGenerator, WorkerClient], tmp_path: Path, options: dict[str, Any] | None
) -> None:
    generator, worker = local
    if options is None:  # a folder that is not there
        ref = AdapterRef("guild-1-run-0006", str(tmp_path / "missing"))
    else:
        ref = _adapter(tmp_path / "run-0006", **options)
    with pytest.raises(AdapterRejectedError, match=ref.name) as caught:
        await generator.prepare(ref)
    _assert_safe(caught.value, str(tmp_path))
    # The default keeps serving.
    result = await worker.complete(GenerationRequest("genre:"))
    assert result.texts[0].endswith("|base")
