"""The local client refuses an unservable request before it reaches the sampler."""

from __future__ import annotations

import pytest

from model.protocol import GenerationRequest
from model.worker.client import WorkerClient
from model.worker.errors import InvalidRequestError
from model.worker.settings import SamplerSpec
from tests.model.worker.conftest import FAST
from tests.model.worker.fakes import fake_factory

BAD = [
    GenerationRequest(prompt=""),
    GenerationRequest(prompt="genre:", n=0),
    GenerationRequest(prompt="genre:", stop=("",)),
    GenerationRequest(prompt="genre:\x00"),
    GenerationRequest(prompt="genre:", temperature=-1.0),
]


async def test_bad_requests_are_refused_alone_before_the_worker() -> None:
    client = WorkerClient(SamplerSpec(), FAST, sampler_factory=fake_factory)
    await client.start()
    try:
        for request in BAD:
            with pytest.raises(InvalidRequestError, match=r"^'"):
                await client.complete(request)
        health = client.health()
        assert health["batches_served"] == 0 and health["last_error"] is None
        (text,) = (await client.complete(GenerationRequest("genre:"))).texts
        assert text.startswith("genre:|")
    finally:
        await client.close()
