"""Request validation, authentication and error mapping of the OpenAI-compatible server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from model.protocol import GenerationRequest, GenerationResult
from model.worker.errors import (
    AdapterRejectedError,
    WorkerBusyError,
    WorkerCrashedError,
    WorkerError,
    WorkerTimeoutError,
    WorkerUnavailableError,
)
from model.worker.server import ADAPTER_REFUSED, create_app
from model.worker.settings import ServeSettings
from tests.model.worker.conftest import serve_app
from tests.model.worker.fakes import write_adapter


class ScriptedBackend:
    """In-process stand-in for the worker client: echoes, or raises what it is told."""

    def __init__(self) -> None:
        self.model_name: str | None = "fake+base"
        self.raise_next: WorkerError | None = None
        self.requests: list[GenerationRequest] = []
        self.reloaded: list[str | None] = []
        self.health_data: dict[str, Any] = {
            "alive": True,
            "state": "ready",
            "queue_length": 0,
            "pid": 4242,
            "adapter": "/srv/secret/adapters/run-7",
            "last_error": "RuntimeError at /srv/secret/model.py",
        }

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        if self.raise_next is not None:
            raise self.raise_next
        return GenerationResult(
            texts=tuple(f"{request.prompt}#{i}" for i in range(request.n)),
            model="fake+base",
            prompt_tokens=2,
            completion_tokens=3 * request.n,
            finished=tuple([i % 2 == 0 for i in range(request.n)]),
        )

    async def reload(self, adapter: str | None) -> None:
        if adapter is not None and Path(adapter).name == "bad":
            raise AdapterRejectedError(f"The adapter {adapter} was rejected (broken).")
        self.reloaded.append(adapter)

    def health(self) -> dict[str, Any]:
        return dict(self.health_data)


LIMITS = ServeSettings(max_n=8, max_tokens=32, max_prompt_chars=50)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, ScriptedBackend]]:
    """The server over a scripted backend; ``tmp_path`` is its adapter folder, holding the
    adapters "good" and "bad" (which the backend rejects)."""
    backend = ScriptedBackend()
    for name in ("good", "bad"):
        write_adapter(tmp_path / name)
    app = create_app(backend, LIMITS, api_token="s3cret", adapter_roots=[tmp_path])
    runner, url = await serve_app(app)
    yield url, backend
    await runner.cleanup()


async def _post(
    url: str,
    path: str,
    body: Any,
    token: str | None = "s3cret",
    raw: str | bytes | None = None,
    content_type: str | None = "application/json",
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    data = raw if raw is not None else json.dumps(body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + path, data=data, headers=headers) as response,
    ):
        text = await response.text()
        try:
            data = await response.json(content_type=None)
        except ValueError:
            data = text
        return response.status, data, dict(response.headers)


async def test_completion_in_openai_shape(server: tuple[str, ScriptedBackend]) -> None:
    url, backend = server
    body = {
        "model": "genre",
        "prompt": ["genre:", "like: dub\ngenre:"],
        "n": 2,
        "max_tokens": 12,
        "temperature": 0.8,
        "top_p": 0.9,
        "stop": "\n",
        "seed": 7,
        "avoid_known": True,
    }
    status, data, _ = await _post(url, "/v1/completions", body)
    assert status == 200, data
    assert data["object"] == "text_completion"
    assert data["model"] == "fake+base"
    assert [c["text"] for c in data["choices"]] == [
        "genre:#0",
        "genre:#1",
        "like: dub\ngenre:#0",
        "like: dub\ngenre:#1",
    ]
    assert [c["index"] for c in data["choices"]] == [0, 1, 2, 3]
    assert [c["finish_reason"] for c in data["choices"]] == ["stop", "length"] * 2
    assert data["usage"] == {"prompt_tokens": 4, "completion_tokens": 12, "total_tokens": 16}
    assert backend.requests[0] == GenerationRequest(
        "genre:",
        n=2,
        temperature=0.8,
        top_p=0.9,
        max_tokens=12,
        stop=("\n",),
        seed=7,
        avoid_known=True,
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "n": 9}, "n"),
        ({"prompt": ["a", "b", "c"], "n": 3}, "n"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": "2"}, "n"),
        ({"prompt": "x", "max_tokens": 33}, "max_tokens"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x" * 51}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [1, 2]}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "x", "temperature": 2.5}, "temperature"),
        ({"prompt": "x", "temperature": True}, "temperature"),
        ({"prompt": "x", "top_p": 0}, "top_p"),
        ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"prompt": "x", "stop": 3}, "stop"),
        ({"prompt": "x", "seed": 1.5}, "seed"),
        ({"prompt": "x", "stream": True}, "stream"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": ["genre:", ""]}, "prompt"),
        ({"prompt": "a\x00b"}, "prompt"),
        ({"prompt": "genre:\x1b[2J"}, "prompt"),
        ({"prompt": "\ud800"}, "prompt"),
        ({"prompt": "x", "n": True}, "n"),
        ({"prompt": "x", "n": 1.0}, "n"),
        ({"prompt": "x", "max_tokens": True}, "max_tokens"),
        ({"prompt": "x", "max_tokens": "4"}, "max_tokens"),
        ({"prompt": "x", "stop": ""}, "stop"),
        ({"prompt": "x", "stop": ["\n", ""]}, "stop"),
        ({"prompt": "x", "stop": "\x00"}, "stop"),
        ({"prompt": "x", "temperature": -0.5}, "temperature"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "seed": 2**64}, "seed"),
        ({"prompt": "x", "seed": True}, "seed"),
        ({"prompt": "x", "model": ["genre"]}, "model"),
        ({"prompt": "x", "logprobs": 2}, "logprobs"),
        ({"prompt": "x", "avoid_known": "yes"}, "avoid_known"),
        ({"prompt": "x", "avoid_known": 1}, "avoid_known"),
    ],
)
async def test_invalid_requests_are_400(
    server: tuple[str, ScriptedBackend], body: dict[str, Any], param: str
) -> None:
    url, backend = server
    status, data, _ = await _post(url, "/v1/completions", body)
    assert status == 400
    assert data["error"]["type"] == "invalid_request_error"
    assert data["error"]["param"] == param
    assert data["error"]["message"]
    assert backend.requests == []


async def test_malformed_json_and_unknown_model(server: tuple[str, ScriptedBackend]) -> None:
    url, _ = server
    status, data, _ = await _post(url, "/v1/completions", None, raw="{not json")
    assert status == 400 and "not valid JSON" in data["error"]["message"]
    status, data, _ = await _post(url, "/v1/completions", ["a list"])
    assert status == 400
    status, data, _ = await _post(url, "/v1/completions", {"model": "gpt-4", "prompt": "x"})
    assert status == 404 and data["error"]["code"] == "model_not_found"
    status, data, _ = await _post(url, "/v1/nothing", {})
    assert status == 404 and "error" in data


@pytest.mark.parametrize("token", [None, "wrong", "S3CRET", "s3cret2"])
async def test_missing_or_wrong_token_is_401(
    server: tuple[str, ScriptedBackend], token: str | None
) -> None:
    url, backend = server
    status, data, headers = await _post(url, "/v1/completions", {"prompt": "x"}, token=token)
    assert status == 401
    assert data["error"]["code"] == "invalid_api_key"
    assert headers["WWW-Authenticate"] == "Bearer"
    assert backend.requests == []
    assert "s3cret" not in str(data)


async def test_models_needs_the_token_but_health_does_not(
    server: tuple[str, ScriptedBackend],
) -> None:
    url, _ = server
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/v1/models") as response:
            assert response.status == 401
        async with session.get(
            url + "/v1/models", headers={"Authorization": "Bearer s3cret"}
        ) as response:
            data = await response.json()
            assert [m["id"] for m in data["data"]] == ["genre"]
            assert data["data"][0]["root"] == "fake+base"
        async with session.get(url + "/health") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok", "ready": True}


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (WorkerBusyError(3), 429, "busy"),
        (WorkerTimeoutError("too slow"), 504, "timeout"),
        (WorkerCrashedError("it stopped unexpectedly"), 503, "worker_crashed"),
        (WorkerUnavailableError("no worker"), 503, "unavailable"),
        (WorkerError("Generation failed in the worker: boom."), 503, "worker_error"),
    ],
)
async def test_worker_errors_map_to_statuses(
    server: tuple[str, ScriptedBackend], error: WorkerError, status: int, code: str
) -> None:
    url, backend = server
    backend.raise_next = error
    got, data, headers = await _post(url, "/v1/completions", {"prompt": "x"})
    assert got == status
    assert data["error"]["code"] == code
    assert data["error"]["message"] == str(error)
    if status == 429:
        assert headers["Retry-After"] == "3"


async def test_load_lora_adapter(server: tuple[str, ScriptedBackend], tmp_path: Path) -> None:
    url, backend = server
    good, bad = str(tmp_path / "good"), str(tmp_path / "bad")  # tmp_path is resolved
    status, data, _ = await _post(
        url, "/v1/load_lora_adapter", {"lora_name": "genre", "lora_path": good}
    )
    assert status == 200 and backend.reloaded == [good]
    status, data, _ = await _post(
        url, "/v1/load_lora_adapter", {"lora_name": "genre", "lora_path": bad}
    )
    assert status == 400 and data["error"]["message"] == ADAPTER_REFUSED
    status, data, _ = await _post(url, "/v1/load_lora_adapter", {"lora_name": "genre"})
    assert status == 400
    status, data, _ = await _post(
        url, "/v1/load_lora_adapter", {"lora_name": "genre", "lora_path": good}, token=None
    )
    assert status == 401


async def test_reload_can_be_disabled() -> None:
    app = create_app(ScriptedBackend(), ServeSettings(allow_reload=False))
    runner, url = await serve_app(app)
    try:
        status, _, _ = await _post(url, "/v1/load_lora_adapter", {"lora_path": "/good"}, token=None)
        assert status == 403
    finally:
        await runner.cleanup()


async def test_unexpected_errors_are_a_json_500(server: tuple[str, ScriptedBackend]) -> None:
    url, backend = server
    backend.raise_next = ZeroDivisionError("bug")  # type: ignore[assignment]
    status, data, _ = await _post(url, "/v1/completions", {"prompt": "x"})
    assert status == 500
    assert data["error"]["message"] == "Internal server error."


async def test_create_app_with_its_defaults_serves_models_and_completions() -> None:
    """No token and the default limits: both OpenAI routes answer, from the backend."""
    backend = ScriptedBackend()
    runner, url = await serve_app(create_app(backend))
    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/v1/models") as r:
            assert r.status == 200
            models = await r.json()
        status, data, _ = await _post(url, "/v1/completions", {"prompt": "genre:", "n": 2}, None)
    finally:
        await runner.cleanup()
    assert "genre" in [m["id"] for m in models["data"]]
    assert status == 200
    assert [c["text"] for c in data["choices"]] == ["genre:#0", "genre:#1"]
    assert [r.n for r in backend.requests] == [2]


@pytest.mark.parametrize("body", ["genre:", 3, None, True, [], [{"prompt": "x"}]])
async def test_a_body_that_is_not_an_object_is_400(
    server: tuple[str, ScriptedBackend], body: Any
) -> None:
    url, backend = server
    status, data, _ = await _post(url, "/v1/completions", body)
    assert status == 400
    assert data["error"]["message"] == "The request body must be a JSON object."
    assert backend.requests == []


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "like: dub\n\tgenre:"},
        {"prompt": "x", "stop": []},
        {"prompt": "x", "stop": None, "seed": None, "n": None},
        {"prompt": "x", "temperature": 0, "seed": 0, "top_p": 1},
        {"prompt": "ünïcödé 🎸", "stop": "🎸"},
        {"prompt": "x", "user": "someone", "suffix": None},
    ],
)
async def test_edge_cases_openai_accepts_are_served(
    server: tuple[str, ScriptedBackend], body: dict[str, Any]
) -> None:
    url, backend = server
    status, data, _ = await _post(url, "/v1/completions", body)
    assert status == 200, data
    assert len(data["choices"]) == 1
    assert backend.requests[0].prompt == body["prompt"]


async def test_deeply_nested_json_is_400_not_500(server: tuple[str, ScriptedBackend]) -> None:
    url, _ = server
    status, data, _ = await _post(url, "/v1/completions", None, raw="[" * 100_000)
    assert status == 400
    assert data["error"]["type"] == "invalid_request_error"


async def test_invalid_utf8_is_400(server: tuple[str, ScriptedBackend]) -> None:
    url, _ = server
    status, data, _ = await _post(url, "/v1/completions", None, raw=b'{"prompt": "\xff"}')
    assert status == 400 and "not valid JSON" in data["error"]["message"]


async def test_a_body_over_the_size_limit_is_413(server: tuple[str, ScriptedBackend]) -> None:
    url, _ = server
    big = json.dumps({"prompt": "x" * (2 * 1024 * 1024)})
    status, data, _ = await _post(url, "/v1/completions", None, raw=big)
    assert status == 413
    assert data["error"]["message"]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("Application/JSON", 200),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        (None, 415),
    ],
)
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/load_lora_adapter"])
async def test_post_bodies_must_be_json(
    server: tuple[str, ScriptedBackend],
    tmp_path: Path,
    content_type: str | None,
    status: int,
    path: str,
) -> None:
    url, backend = server
    body = {"prompt": "x", "lora_name": "genre", "lora_path": str(tmp_path / "good")}
    got, data, _ = await _post(url, path, body, content_type=content_type)
    assert got == status, data
    if status == 415:
        assert data["error"]["code"] == "unsupported_media_type"
        assert "Content-Type: application/json" in data["error"]["message"]
        assert backend.requests == [] and backend.reloaded == []


async def test_one_request_over_the_token_budget_is_refused() -> None:
    limits = ServeSettings(max_n=8, max_tokens=32, max_request_tokens=100)
    backend = ScriptedBackend()
    runner, url = await serve_app(create_app(backend, limits))
    try:
        # (40 prompt bytes + 10 new tokens) x 2 rows = 100: just fits.
        ok = {"prompt": "x" * 40, "n": 2, "max_tokens": 10}
        status, _, _ = await _post(url, "/v1/completions", ok)
        assert status == 200
        for too_much in (
            {"prompt": "x" * 40, "n": 3, "max_tokens": 10},
            {"prompt": ["x" * 40, "y" * 40], "n": 1, "max_tokens": 11},
            # Prompts count in UTF-8 bytes, an upper bound of byte-level BPE tokens: 60 + 10.
            {"prompt": "é" * 30, "n": 2, "max_tokens": 10},
        ):
            status, data, _ = await _post(url, "/v1/completions", too_much)
            assert status == 413, too_much
            assert data["error"]["code"] == "request_too_large"
            assert "max_request_tokens" in data["error"]["message"]
        assert len(backend.requests) == 1
    finally:
        await runner.cleanup()


def test_max_request_tokens_is_validated() -> None:
    with pytest.raises(ValueError, match="max_request_tokens"):
        ServeSettings(max_request_tokens=0).validate()


async def test_reload_is_off_without_a_token() -> None:
    backend = ScriptedBackend()
    runner, url = await serve_app(create_app(backend, ServeSettings(allow_reload=True)))
    try:
        body = {"lora_name": "genre", "lora_path": "/good"}
        status, data, _ = await _post(url, "/v1/load_lora_adapter", body, token=None)
        assert status == 403
        assert data["error"]["code"] == "reload_disabled"
        assert "api_token" in data["error"]["message"]
        assert backend.reloaded == []
    finally:
        await runner.cleanup()


async def _get_health(url: str, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/health", headers=headers) as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize("token", [None, "wrong", "S3CRET"])
async def test_health_without_the_token_is_liveness_only(
    server: tuple[str, ScriptedBackend], token: str | None
) -> None:
    url, backend = server
    assert await _get_health(url, token) == (200, {"status": "ok", "ready": True})
    backend.health_data.update(alive=False, state="restarting")
    assert await _get_health(url, token) == (503, {"status": "unavailable", "ready": False})


async def test_health_with_the_token_has_the_details(
    server: tuple[str, ScriptedBackend],
) -> None:
    url, backend = server
    status, data = await _get_health(url, "s3cret")
    assert status == 200
    assert data["status"] == "ok" and data["ready"] is True
    assert data["pid"] == 4242 and data["last_error"] == backend.health_data["last_error"]
    assert data["adapter"] == "/srv/secret/adapters/run-7"


async def test_health_of_a_server_without_a_token_is_liveness_only() -> None:
    runner, url = await serve_app(create_app(ScriptedBackend(), LIMITS))
    try:
        assert await _get_health(url, None) == (200, {"status": "ok", "ready": True})
        assert await _get_health(url, "anything") == (200, {"status": "ok", "ready": True})
    finally:
        await runner.cleanup()
