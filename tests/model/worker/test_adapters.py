"""Many adapters in one local worker: per-request adapters, LRU eviction, failures, health."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from model.protocol import AdapterRef, GenerationRequest
from model.worker.adapters import ResidentAdapters
from model.worker.client import WorkerClient
from model.worker.errors import AdapterRejectedError
from model.worker.health import read_snapshot
from model.worker.settings import SamplerSpec
from tests.model.worker.conftest import FAST, wait_until
from tests.model.worker.fakes import fake_factory, write_adapter


def _client(tmp_path: Path, **overrides: Any) -> WorkerClient:
    default = write_adapter(tmp_path / "default", tag="default")
    return WorkerClient(
        SamplerSpec(adapter=str(default)),
        replace(FAST, **overrides),
        sampler_factory=fake_factory,
        health_file=tmp_path / "worker_health.json",
    )


def _ref(tmp_path: Path, name: str, **options: Any) -> AdapterRef:
    return AdapterRef(name, str(write_adapter(tmp_path / name, tag=name, **options)))


def _tag(text: str) -> str:
    return text.rsplit("|", 1)[1]


async def test_each_request_is_served_by_its_own_adapter_in_one_batch(tmp_path: Path) -> None:
    a, b = _ref(tmp_path, "a"), _ref(tmp_path, "b")
    async with _client(tmp_path, batch_window_ms=200) as client:
        results = await asyncio.gather(
            *(client.complete(GenerationRequest("p", n=2, adapter=r)) for r in (a, None, b))
        )
    assert [{_tag(t) for t in r.texts} for r in results] == [{"a"}, {"default"}, {"b"}]
    assert {r.extra["batch_requests"] for r in results} == {3}


async def test_least_recently_used_adapter_is_evicted_never_the_default(tmp_path: Path) -> None:
    a, b, c = (_ref(tmp_path, n) for n in "abc")
    async with _client(tmp_path, max_adapters=2) as client:
        for ref in (a, b, a, c):  # b is now the least recently used
            await client.complete(GenerationRequest("p", adapter=ref))
        names = [entry["name"] for entry in client.health()["adapters"]]
        assert names == ["default", "a", "c"]
        # b was evicted: using it again loads it again (a fourth load), evicting a.
        result = await client.complete(GenerationRequest("p", adapter=b))
        assert result.extra["adapter_loads"] == 4
        assert [e["name"] for e in client.health()["adapters"]] == ["default", "c", "b"]
        again = await client.complete(GenerationRequest("p", adapter=c))
        assert again.extra["adapter_loads"] == 4  # resident: not loaded again


async def test_an_adapter_that_fails_to_load_fails_only_its_request(tmp_path: Path) -> None:
    good = _ref(tmp_path, "good")
    bad = _ref(tmp_path, "bad", load_error="size mismatch for lora_A")
    missing = AdapterRef("missing", str(tmp_path / "nowhere"))
    async with _client(tmp_path, batch_window_ms=200) as client:
        outcomes = await asyncio.gather(
            *(
                client.complete(GenerationRequest("p", adapter=ref))
                for ref in (good, bad, None, missing)
            ),
            return_exceptions=True,
        )
        assert _tag(outcomes[0].texts[0]) == "good"
        assert _tag(outcomes[2].texts[0]) == "default"
        for failed, name, why in (
            (outcomes[1], "bad", "size mismatch"),
            (outcomes[3], "missing", "not a LoRA"),
        ):
            assert isinstance(failed, AdapterRejectedError)
            assert name in str(failed) and why in str(failed)
        assert [e["name"] for e in client.health()["adapters"]] == ["default", "good"]


async def test_a_request_naming_the_default_folder_uses_the_default(tmp_path: Path) -> None:
    async with _client(tmp_path) as client:
        ref = AdapterRef("default-v1", str(tmp_path / "default"))
        result = await client.complete(GenerationRequest("p", adapter=ref))
        assert _tag(result.texts[0]) == "default"
        assert result.extra["adapter_loads"] == 0


async def test_after_a_crash_adapters_load_again_on_demand(tmp_path: Path) -> None:
    a = _ref(tmp_path, "a")
    async with _client(tmp_path) as client:
        await client.complete(GenerationRequest("p", adapter=a))
        old_pid = client.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        await wait_until(lambda: client.pid not in (None, old_pid) and client.health()["alive"])
        assert [e["name"] for e in client.health()["adapters"]] == ["default"]
        result = await client.complete(GenerationRequest("p", adapter=a))
        assert _tag(result.texts[0]) == "a" and result.extra["adapter_loads"] == 1


async def test_health_file_lists_adapters_with_paths(tmp_path: Path) -> None:
    a = _ref(tmp_path, "a")
    async with _client(tmp_path) as client:
        await client.complete(GenerationRequest("p", adapter=a))
        await client._health_file.write(client.health())  # type: ignore[union-attr]
        snapshot = read_snapshot(tmp_path / "worker_health.json")
    assert snapshot["adapters"] == [
        {"name": "default", "path": str(tmp_path / "default")},
        {"name": "a", "path": a.path},
    ]
    json.dumps(snapshot)


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_resident_adapters_never_exceed_the_limit_after_a_batch(limit: int) -> None:
    class Fake:
        def __init__(self) -> None:
            self.loaded: set[str] = set()

        def load_adapter(self, name: str, path: str) -> None:
            self.loaded.add(name)

        def unload_adapter(self, name: str) -> None:
            self.loaded.discard(name)

    sampler, resident = Fake(), ResidentAdapters(limit)
    for name in "abcabd":
        ref = AdapterRef(name, f"/m/{name}")
        prepared = resident.prepare(
            sampler, [GenerationRequest("p", adapter=ref)], default_path=None
        )
        assert [r.adapter for _, r in prepared.runnable] == [ref]  # loaded for its batch
        resident.trim(sampler)
        assert sampler.loaded == {r.name for r in resident.refs()}
        assert len(sampler.loaded) <= limit
