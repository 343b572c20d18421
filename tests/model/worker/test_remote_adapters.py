"""The remote client against a fake vLLM: adapters by served name, load on demand, safe reload."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from model.protocol import AdapterRef, GenerationRequest
from model.worker.errors import AdapterRejectedError
from model.worker.remote import RemoteClient
from tests.model.worker.conftest import serve_app


class FakeVllm:
    """Serves the LoRA names it holds; a path containing "bad" fails to load."""

    def __init__(self) -> None:
        self.loras: dict[str, str] = {"genre": "/adapters/shipped"}
        self.loads: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/load_lora_adapter", self.load)
        app.router.add_post("/v1/unload_lora_adapter", self.unload)
        return app

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body["model"]
        if name not in self.loras:
            error = {"message": f"The model `{name}` does not exist.", "code": 404}
            return web.json_response({"error": error}, status=404)
        choices = [
            {"index": i, "text": self.loras[name], "finish_reason": "stop"}
            for i in range(body["n"])
        ]
        return web.json_response({"model": name, "choices": choices})

    async def load(self, request: web.Request) -> web.Response:
        body = await request.json()
        name, path = body["lora_name"], body["lora_path"]
        if name in self.loras:
            return web.json_response(
                {"error": {"message": f"The lora adapter '{name}' has already been loaded."}},
                status=400,
            )
        if "bad" in path:
            return web.json_response({"error": {"message": "failed to load"}}, status=400)
        self.loras[name] = path
        self.loads.append(name)
        return web.Response(text="ok")

    async def unload(self, request: web.Request) -> web.Response:
        self.loras.pop((await request.json())["lora_name"], None)
        return web.Response(text="ok")


@pytest.fixture
async def vllm() -> AsyncIterator[tuple[FakeVllm, RemoteClient]]:
    fake = FakeVllm()
    runner, url = await serve_app(fake.app())
    client = RemoteClient(url, "token", model="genre")
    async with client:
        yield fake, client
    await runner.cleanup()


async def test_failed_reload_keeps_the_old_adapter_serving(
    vllm: tuple[FakeVllm, RemoteClient],
) -> None:
    fake, client = vllm
    with pytest.raises(AdapterRejectedError, match="failed to load"):
        await client.reload("/adapters/bad-run")
    result = await client.complete(GenerationRequest("genre:"))
    assert result.texts == ("/adapters/shipped",)
    assert fake.loras == {"genre": "/adapters/shipped"}


async def test_reload_loads_under_a_new_name_then_retires_the_old(
    vllm: tuple[FakeVllm, RemoteClient],
) -> None:
    fake, client = vllm
    await client.reload("/adapters/run-2")
    assert client.model != "genre" and fake.loras == {client.model: "/adapters/run-2"}
    result = await client.complete(GenerationRequest("genre:"))
    assert result.texts == ("/adapters/run-2",)


async def test_request_adapter_is_the_model_and_is_loaded_on_demand(
    vllm: tuple[FakeVllm, RemoteClient],
) -> None:
    fake, client = vllm
    ref = AdapterRef("guild-1-run-0001", "/adapters/guild-1")
    first = await client.complete(GenerationRequest("genre:", adapter=ref))
    second = await client.complete(GenerationRequest("genre:", adapter=ref))
    assert first.texts == second.texts == ("/adapters/guild-1",)
    assert fake.loads == ["guild-1-run-0001"]  # loaded once, on the first 404
    with pytest.raises(AdapterRejectedError, match="guild-2"):
        await client.complete(GenerationRequest("genre:", adapter=AdapterRef("guild-2", "/bad")))
