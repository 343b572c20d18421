"""`microgenre serve` serves many adapters: a registry of served names, loaded on demand."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from model.protocol import AdapterRef, GenerationRequest
from model.worker.client import WorkerClient
from model.worker.errors import AdapterRejectedError
from model.worker.remote import RemoteClient
from model.worker.server import create_app
from model.worker.settings import SamplerSpec, ServeSettings
from tests.model.worker.conftest import FAST, serve_app
from tests.model.worker.fakes import fake_factory, write_adapter
from tests.model.worker.test_server import LIMITS, ScriptedBackend, _get_health, _post

TOKEN = "s3cret"


def _adapter(path: Path, **options: Any) -> str:
    """A folder that is a LoRA adapter for is_adapter (and for the fake sampler)."""
    write_adapter(path, **options)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    return str(path)


class RefusingBackend(ScriptedBackend):
    """Fails every request that names an adapter whose path contains "broken"."""

    async def complete(self, request: GenerationRequest) -> Any:
        if request.adapter is not None and "broken" in request.adapter.path:
            self.requests.append(request)
            raise AdapterRejectedError("The model could not be loaded (bad weights).")
        return await super().complete(request)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, RefusingBackend]]:
    backend = RefusingBackend()
    app = create_app(backend, LIMITS, api_token=TOKEN, adapter_roots=[tmp_path])
    runner, url = await serve_app(app)
    yield url, backend
    await runner.cleanup()


async def _load(url: str, name: str, path: str) -> tuple[int, Any]:
    status, data, _ = await _post(
        url, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}
    )
    return status, data


async def _complete(url: str, model: str) -> tuple[int, Any]:
    status, data, _ = await _post(url, "/v1/completions", {"model": model, "prompt": "genre:"})
    return status, data


async def _models(url: str) -> list[str]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/v1/models", headers=headers) as response,
    ):
        return [m["id"] for m in (await response.json())["data"]]


async def test_a_loaded_adapter_is_listed_and_serves_its_name(
    server: tuple[str, RefusingBackend], tmp_path: Path
) -> None:
    url, backend = server
    path = _adapter(tmp_path / "g1")
    assert (await _complete(url, "guild-1"))[0] == 404  # unknown until loaded
    assert (await _load(url, "guild-1", path))[0] == 200
    assert await _models(url) == ["genre", "guild-1"]
    status, data = await _complete(url, "guild-1")
    assert status == 200 and data["model"] == "guild-1"
    assert backend.requests[-1].adapter == AdapterRef("guild-1", path)
    status, _ = await _complete(url, "genre")  # the default still serves without an adapter
    assert status == 200 and backend.requests[-1].adapter is None


async def test_loading_a_name_again_swaps_and_a_failed_load_keeps_the_old(
    server: tuple[str, RefusingBackend], tmp_path: Path
) -> None:
    url, backend = server
    old, new = _adapter(tmp_path / "old"), _adapter(tmp_path / "new")
    broken = _adapter(tmp_path / "broken")
    assert (await _load(url, "g", old))[0] == 200
    not_adapter = tmp_path / "plain"
    not_adapter.mkdir()
    for path in (str(not_adapter), str(tmp_path / "missing"), broken):
        status, data = await _load(url, "g", path)
        assert status == 400, path
        assert "error" in data
        await _complete(url, "g")
        assert backend.requests[-1].adapter == AdapterRef("g", old)
    assert (await _load(url, "g", new))[0] == 200
    await _complete(url, "g")
    assert backend.requests[-1].adapter == AdapterRef("g", new)


async def test_a_first_load_that_fails_registers_nothing(
    server: tuple[str, RefusingBackend], tmp_path: Path
) -> None:
    url, _ = server
    assert (await _load(url, "g", _adapter(tmp_path / "broken")))[0] == 400
    assert await _models(url) == ["genre"]
    assert (await _complete(url, "g"))[0] == 404


async def test_unload_removes_the_name(server: tuple[str, RefusingBackend], tmp_path: Path) -> None:
    url, _ = server
    assert (await _load(url, "g", _adapter(tmp_path / "g")))[0] == 200
    status, _, _ = await _post(url, "/v1/unload_lora_adapter", {"lora_name": "g"})
    assert status == 200
    assert (await _complete(url, "g"))[0] == 404
    assert await _models(url) == ["genre"]
    status, data, _ = await _post(url, "/v1/unload_lora_adapter", {"lora_name": "g"})
    assert status == 404 and data["error"]["code"] == "model_not_found"
    status, _, _ = await _post(url, "/v1/unload_lora_adapter", {"lora_name": "genre"})
    assert status == 400  # the default cannot be unloaded, only replaced
    status, _, _ = await _post(url, "/v1/unload_lora_adapter", {"lora_name": "g"}, token=None)
    assert status == 401


@pytest.mark.parametrize("name", ["", 7, None, "a\x00b", "x" * 300])
async def test_a_bad_lora_name_is_400(
    server: tuple[str, RefusingBackend], tmp_path: Path, name: Any
) -> None:
    url, _ = server
    body = {"lora_name": name, "lora_path": _adapter(tmp_path / "a")}
    if name is None:
        body.pop("lora_name")  # no name: the default (a hot reload of the served model)
    status, _, _ = await _post(url, "/v1/load_lora_adapter", body)
    assert status == (200 if name is None else 400)


async def test_health_with_the_token_lists_the_served_adapters(
    server: tuple[str, RefusingBackend], tmp_path: Path
) -> None:
    url, backend = server
    backend.health_data["adapters"] = [{"name": "default", "path": "/srv/a"}]
    path = _adapter(tmp_path / "g")
    await _load(url, "g", path)
    _, data = await _get_health(url, TOKEN)
    assert data["adapters"] == [{"name": "default", "path": "/srv/a"}]  # resident (worker)
    assert data["served"] == [{"name": "g", "path": path}]
    assert await _get_health(url, None) == (200, {"status": "ok", "ready": True})


async def test_adapters_given_at_start_are_served(tmp_path: Path) -> None:
    ref = AdapterRef("guild-9", _adapter(tmp_path / "g9"))
    backend = ScriptedBackend()
    runner, url = await serve_app(create_app(backend, LIMITS, api_token=TOKEN, adapters=[ref]))
    try:
        assert await _models(url) == ["genre", "guild-9"]
        assert (await _complete(url, "guild-9"))[0] == 200
        assert backend.requests[-1].adapter == ref
    finally:
        await runner.cleanup()


async def test_loading_other_names_needs_a_token_on_the_server(tmp_path: Path) -> None:
    runner, url = await serve_app(create_app(ScriptedBackend(), LIMITS))
    try:
        status, _ = await _load(url, "g", _adapter(tmp_path / "g"))
        assert status == 403
    finally:
        await runner.cleanup()


async def test_remote_client_loads_on_demand_through_a_real_worker(tmp_path: Path) -> None:
    """RemoteClient → serve → worker process: an unknown adapter is loaded, then served."""
    worker = WorkerClient(SamplerSpec(), FAST, sampler_factory=fake_factory)
    await worker.start()
    app = create_app(worker, ServeSettings(), api_token=TOKEN, adapter_roots=[tmp_path])
    runner, url = await serve_app(app)
    remote = RemoteClient(url, TOKEN, request_timeout_s=20)
    await remote.start()
    try:
        ref = AdapterRef("guild-1-run-0001", _adapter(tmp_path / "g1", tag="g1"))
        result = await remote.complete(GenerationRequest("genre:", n=2, adapter=ref))
        assert [t.rsplit("|", 1)[1] for t in result.texts] == ["g1", "g1"]
        plain = await remote.complete(GenerationRequest("genre:", n=1))
        assert plain.texts[0].endswith("|base")
        health = await remote.fetch_health()
        assert ref.to_dict() in health["adapters"] and ref.to_dict() in health["served"]
    finally:
        await remote.close()
        await runner.cleanup()
        await worker.close()
