"""`microgenre serve` in front of a token holder: adapters load only from the adapter folders and
every refusal reads the same."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from model.protocol import AdapterRef, GenerationRequest
from model.worker.errors import AdapterRejectedError
from model.worker.remote import RemoteClient
from model.worker.server import create_app
from model.worker.settings import ServeSettings
from tests.model.worker.conftest import serve_app
from tests.model.worker.fakes import write_adapter
from tests.model.worker.test_server import ScriptedBackend, _post

TOKEN = "s3cret"


def _adapter(path: Path) -> Path:
    write_adapter(path)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    return path


class BrokenWeightsBackend(ScriptedBackend):
    """Fails every request naming an adapter whose folder is called "broken"."""

    async def complete(self, request: GenerationRequest) -> Any:
        if request.adapter is not None and Path(request.adapter.path).name == "broken":
            raise AdapterRejectedError(f"{request.adapter.path}: bad weights.")
        return await super().complete(request)

    async def reload(self, adapter: str | None) -> None:
        if adapter is not None and Path(adapter).name == "broken":
            raise AdapterRejectedError(f"The adapter {adapter} was rejected (bad weights).")
        await super().reload(adapter)


@dataclass
class Served:
    url: str
    backend: BrokenWeightsBackend
    root: Path  # the adapter folder
    outside: Path  # a folder beside it


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    root, outside = tmp_path / "adapters", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    backend = BrokenWeightsBackend()
    app = create_app(backend, ServeSettings(), api_token=TOKEN, adapter_roots=[root])
    runner, url = await serve_app(app)
    yield Served(url, backend, root, outside)
    await runner.cleanup()


async def _load(url: str, name: str, path: str | Path) -> tuple[int, Any]:
    body = {"lora_name": name, "lora_path": str(path)}
    status, data, _ = await _post(url, "/v1/load_lora_adapter", body, token=TOKEN)
    return status, data


async def test_an_adapter_inside_the_folder_loads(served: Served) -> None:
    path = _adapter(served.root / "run-0001")
    assert (await _load(served.url, "guild-1", path))[0] == 200
    assert (await _load(served.url, "genre", path))[0] == 200  # a hot reload of the default
    assert served.backend.reloaded == [str(path)]


def _refusals(served: Served) -> dict[str, Path | str]:
    """Every way a load is refused: the answers must not tell them apart."""
    root, outside = served.root, served.outside
    evil = _adapter(outside / "evil")
    link = root / "link"
    link.symlink_to(evil, target_is_directory=True)
    plain = root / "plain"
    plain.mkdir()
    (root / "file").write_text("x")
    _adapter(root / "broken")
    return {
        "outside": evil,
        "outside by ..": f"{root}/../elsewhere/evil",  # resolves outside
        "inside, through a link": link,  # the link points outside
        "system folder": "/etc",
        "missing": root / "missing",
        "missing outside": "/nonexistent/adapter",
        "not a folder": root / "file",
        "not an adapter": plain,
        "unloadable": root / "broken",
        "relative": "adapters/run-0001",
    }


@pytest.mark.parametrize("lora_name", ["guild-1", "genre"])
async def test_every_refusal_is_the_same_answer(served: Served, lora_name: str) -> None:
    answers = {}
    for why, path in _refusals(served).items():
        status, data = await _load(served.url, lora_name, path)
        answers[why] = (status, json.dumps(data, sort_keys=True))
    assert len(set(answers.values())) == 1, answers
    status, body = next(iter(answers.values()))
    assert status == 400
    error = json.loads(body)["error"]
    assert error["param"] == "lora_path" and "adapter folder" in error["message"]
    assert str(served.root) not in body and "/etc" not in body
    assert served.backend.reloaded == []  # nothing outside reached the worker
    assert all(
        r.adapter is None or Path(r.adapter.path).name == "broken" for r in served.backend.requests
    )


async def test_a_server_without_adapter_folders_refuses_every_load(tmp_path: Path) -> None:
    app = create_app(ScriptedBackend(), ServeSettings(), api_token=TOKEN)
    runner, url = await serve_app(app)
    try:
        status, data = await _load(url, "guild-1", _adapter(tmp_path / "a"))
        assert status == 400 and "adapter folder" in data["error"]["message"]
    finally:
        await runner.cleanup()


def test_a_link_swapped_after_the_check_is_loaded_by_its_resolved_path(
    tmp_path: Path,
) -> None:
    """The folder handed to the worker is the resolved one, not the link the client named."""
    from model.worker.server import confined_adapter

    root = tmp_path / "adapters"
    real = _adapter(root / "real")
    link = root / "current"
    link.symlink_to(real, target_is_directory=True)
    assert confined_adapter(str(link), [root]) == str(real)
    assert confined_adapter(str(link), [tmp_path / "other"]) is None
    assert os.path.isabs(confined_adapter(str(real), [root]) or "")


async def _models(url: str) -> list[str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}) as r,
    ):
        return [m["id"] for m in (await r.json())["data"]]


async def _complete(url: str, model: str) -> int:
    status, _, _ = await _post(url, "/v1/completions", {"model": model, "prompt": "genre:"})
    return status


async def test_loaded_names_are_capped_and_the_least_recently_used_goes(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    limits = ServeSettings(max_served_adapters=2)
    runner, url = await serve_app(
        create_app(backend, limits, api_token=TOKEN, adapter_roots=[tmp_path])
    )
    try:
        for name in ("a", "b"):
            assert (await _load(url, name, _adapter(tmp_path / name)))[0] == 200
        assert await _complete(url, "a") == 200  # a is now used more recently than b
        assert (await _load(url, "c", _adapter(tmp_path / "c")))[0] == 200
        assert await _models(url) == ["genre", "a", "c"]
        assert await _complete(url, "b") == 404  # evicted: a client loads it again
        # Thousands of loads never grow the list past the cap.
        for k in range(60):
            assert (await _load(url, f"n{k}", _adapter(tmp_path / f"n{k}")))[0] == 200
        assert await _models(url) == ["genre", "n58", "n59"]
        assert await _complete(url, "genre") == 200  # the default is never evicted
    finally:
        await runner.cleanup()


async def test_an_evicted_adapter_comes_back_through_the_remote_client(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    limits = ServeSettings(max_served_adapters=1)
    app = create_app(backend, limits, api_token=TOKEN, adapter_roots=[tmp_path])
    runner, url = await serve_app(app)
    first = AdapterRef("guild-1", str(_adapter(tmp_path / "g1")))
    second = AdapterRef("guild-2", str(_adapter(tmp_path / "g2")))
    try:
        async with RemoteClient(url, TOKEN) as client:
            await client.complete(GenerationRequest("genre:", adapter=first))
            await client.complete(GenerationRequest("genre:", adapter=second))
            assert await _models(url) == ["genre", "guild-2"]
            await client.complete(GenerationRequest("genre:", adapter=first))  # 404, load, retry
            assert await _models(url) == ["genre", "guild-1"]
            assert backend.requests[-1].adapter == first
    finally:
        await runner.cleanup()


async def test_adapters_given_at_start_are_capped_too(tmp_path: Path) -> None:
    refs = [AdapterRef(f"guild-{k}", str(tmp_path / f"g{k}")) for k in range(5)]
    app = create_app(
        ScriptedBackend(), ServeSettings(max_served_adapters=3), api_token=TOKEN, adapters=refs
    )
    runner, url = await serve_app(app)
    try:
        assert await _models(url) == ["genre", "guild-2", "guild-3", "guild-4"]
    finally:
        await runner.cleanup()


def test_max_served_adapters_is_validated() -> None:
    with pytest.raises(ValueError, match="max_served_adapters"):
        ServeSettings(max_served_adapters=0).validate()


async def _status(url: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url + path, headers=headers) as r:
        await r.read()
        return r.status


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # A scrape token of its own: it opens /metrics (as does the API token) and nothing else.
        (
            {"metrics_token": "scrape"},
            {(None, "/metrics"): 401, ("scrape", "/metrics"): 200, (TOKEN, "/metrics"): 200},
        ),
        # No scrape token on a loopback bind: /metrics is open to this machine.
        ({"open_metrics": True}, {(None, "/metrics"): 200, ("scrape", "/metrics"): 200}),
        # No scrape token on another address: the API token, as every route but /health.
        ({}, {(None, "/metrics"): 401, ("scrape", "/metrics"): 401, (TOKEN, "/metrics"): 200}),
    ],
    ids=["metrics token", "loopback", "public"],
)
async def test_metrics_take_their_own_token(
    options: dict[str, Any], expected: dict[tuple[str | None, str], int]
) -> None:
    app = create_app(ScriptedBackend(), ServeSettings(), api_token=TOKEN, **options)
    runner, url = await serve_app(app)
    try:
        for (token, path), status in expected.items():
            assert await _status(url, path, token) == status, (token, path)
        for token in (None, "scrape"):  # the scrape token is no key to the API
            assert await _status(url, "/v1/models", token) == 401
    finally:
        await runner.cleanup()


def test_the_metrics_token_is_never_shown() -> None:
    assert "scrape-secret" not in repr(ServeSettings(metrics_token="scrape-secret"))


async def _raw_get(url: str, path: str, authorization: bytes) -> tuple[int, bytes]:
    """GET ``path`` with these exact header bytes (no client library re-encodes them)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"GET "
            + path.encode()
            + b" HTTP/1.1\r\nHost: test\r\nAuthorization: "
            + authorization
            + b"\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    "authorization",
    [b"Bearer \xff\xfe\xfd", b"Bearer s3cr\xe9t", "Bearer s3crét".encode(), b"\xff\xfe s3cret"],
    ids=["invalid utf-8", "latin-1", "utf-8 non-ascii", "bad scheme"],
)
async def test_an_undecodable_authorization_header_is_401_not_500(
    authorization: bytes,
) -> None:
    app = create_app(ScriptedBackend(), ServeSettings(), api_token=TOKEN, metrics_token="m")
    runner, url = await serve_app(app)
    try:
        for path in ("/v1/models", "/metrics"):
            status, body = await _raw_get(url, path, authorization)
            assert status == 401, (path, body)
            assert json.loads(body)["error"]["code"] == "invalid_api_key"
        status, body = await _raw_get(url, "/health", authorization)  # liveness, no details
        assert status == 200 and json.loads(body) == {"status": "ok", "ready": True}
        assert (await _raw_get(url, "/v1/models", f"Bearer {TOKEN}".encode()))[0] == 200
    finally:
        await runner.cleanup()
