"""Property: whatever body a client POSTs to /v1/completions, the server never answers 5xx.

Bodies are arbitrary JSON values and near-valid completion requests (each field drawn from
valid values, edge values and values of the wrong type). Every answer is one of 200, 400, 401,
404, 413 or 429, errors come in OpenAI's shape, and every request that reaches the backend is
one a worker can serve (``check_request``).

The bodies are sent as ``application/json``, so 415 (wrong Content-Type) is not in the allowed
set: ``test_server.test_post_bodies_must_be_json`` covers it.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.protocol import GenerationRequest, GenerationResult, check_request
from model.worker.errors import WorkerBusyError, WorkerError
from model.worker.server import create_app
from tests.model.worker.conftest import serve_app
from tests.model.worker.test_server import LIMITS, ScriptedBackend

ALLOWED = {200, 400, 401, 404, 413, 429}
TOKEN = "s3cret"


class WorkerLikeBackend(ScriptedBackend):
    """Fails a request the real sampler would choke on, as the worker does (a 503)."""

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        if check_request(request) is not None:
            self.requests.append(request)
            raise WorkerError("Generation failed in the worker: RuntimeError: cannot reshape.")
        return await super().complete(request)


@dataclass
class Served:
    loop: asyncio.AbstractEventLoop
    runner: web.AppRunner
    session: aiohttp.ClientSession
    url: str
    backend: WorkerLikeBackend

    def post(self, body: Any, token: str | None) -> tuple[int, Any]:
        return self.loop.run_until_complete(self._post(body, token))

    async def _post(self, body: Any, token: str | None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.post(
            self.url + "/v1/completions", data=json.dumps(body), headers=headers
        ) as response:
            return response.status, await response.json(content_type=None)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One server for every example (a loop of its own: Hypothesis drives a sync test)."""
    loop = asyncio.new_event_loop()
    backend = WorkerLikeBackend()

    async def start() -> tuple[web.AppRunner, str, aiohttp.ClientSession]:
        runner, url = await serve_app(create_app(backend, LIMITS, api_token=TOKEN))
        return runner, url, aiohttp.ClientSession()

    runner, url, session = loop.run_until_complete(start())
    try:
        yield Served(loop, runner, session, url, backend)
    finally:
        loop.run_until_complete(session.close())
        loop.run_until_complete(runner.cleanup())
        loop.close()


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(exclude_categories=()), max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Any code point, control characters and lone surrogates included.
texts = st.text(alphabet=st.characters(exclude_categories=()), max_size=60)
small_ints = st.integers(min_value=-3, max_value=70)
edge_ints = st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63)])
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5)
wrong_types = st.booleans() | st.text(max_size=5) | st.lists(st.integers(), max_size=3)


def _field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: usually plausible, sometimes of the wrong type or any JSON at all."""
    return st.one_of(valid, valid, st.none(), wrong_types, json_values)


near_valid = st.fixed_dictionaries(
    {},
    optional={
        "model": _field(st.sampled_from(["genre", "fake+base", "gpt-4", ""])),
        "prompt": _field(texts | st.lists(texts, max_size=5)),
        "n": _field(small_ints | edge_ints),
        "max_tokens": _field(small_ints | edge_ints),
        "temperature": _field(numbers),
        "top_p": _field(numbers),
        "stop": _field(texts | st.lists(texts, max_size=6)),
        "seed": _field(small_ints | edge_ints),
        "stream": _field(st.booleans()),
        "echo": _field(st.booleans()),
        "logprobs": _field(st.integers(0, 5)),
        "user": json_values,
    },
)
tokens = st.sampled_from([TOKEN, TOKEN, TOKEN, None, "wrong"])


def _check_answer(status: int, data: Any, body: Any) -> None:
    assert status in ALLOWED, (status, data)
    if status != 200:
        error = data["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert set(error) == {"message", "type", "param", "code"}
        return
    assert data["object"] == "text_completion"
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    n = body.get("n") or 1
    assert len(data["choices"]) == n * len(prompts)
    assert all(math.isfinite(v) for v in data["usage"].values())


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=st.one_of(json_values, near_valid, near_valid), token=tokens, busy=st.booleans())
def test_no_body_gets_a_5xx(served: Served, body: Any, token: str | None, busy: bool) -> None:
    backend = served.backend
    backend.requests.clear()
    backend.raise_next = WorkerBusyError(1) if busy else None
    status, data = served.post(body, token)
    _check_answer(status, data, body)
    # Nothing a worker could not serve got past the edge.
    assert all(check_request(r) is None for r in backend.requests)
    if status in (400, 401, 404, 413):
        assert backend.requests == []
