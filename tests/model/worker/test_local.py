"""Local-transport specifics: queue positions, batching window, reload ordering, lifecycle."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from model.protocol import GenerationRequest
from model.worker.client import WorkerClient
from model.worker.errors import (
    AdapterRejectedError,
    WorkerClosedError,
    WorkerStartError,
    WorkerUnavailableError,
)
from model.worker.settings import SamplerSpec
from tests.model.worker.conftest import FAST, wait_until
from tests.model.worker.fakes import fake_factory, write_adapter


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _client(**overrides: Any) -> WorkerClient:
    return WorkerClient(SamplerSpec(), replace(FAST, **overrides), sampler_factory=fake_factory)


async def test_requests_within_the_window_share_one_batch() -> None:
    async with _client(batch_window_ms=200) as client:
        requests = [GenerationRequest(f"p{i}", n=2) for i in range(5)]
        results = await asyncio.gather(*(client.complete(r) for r in requests))
        assert {r.extra["batch_requests"] for r in results} == {5}
        assert {r.extra["batch_rows"] for r in results} == {10}
        assert client.health()["batches_served"] == 1


async def test_max_batch_size_caps_completions_per_batch() -> None:
    async with _client(batch_window_ms=100, max_batch_size=4) as client:
        results = await asyncio.gather(
            *(client.complete(GenerationRequest(f"p{i}", n=2)) for i in range(6))
        )
        assert all(r.extra["batch_rows"] <= 4 for r in results)
        assert client.health()["batches_served"] == 3


async def test_different_options_are_separate_batches() -> None:
    async with _client(batch_window_ms=100) as client:
        cold, hot = await asyncio.gather(
            client.complete(GenerationRequest("a", temperature=0.5)),
            client.complete(GenerationRequest("b", temperature=1.5)),
        )
        assert cold.texts[0].startswith("a|0.5|") and hot.texts[0].startswith("b|1.5|")
        assert cold.extra["batch_requests"] == hot.extra["batch_requests"] == 1


async def test_queue_positions_count_down_to_zero() -> None:
    async with _client(max_batch_size=1) as client:
        seen: dict[str, list[int]] = {"a": [], "b": [], "c": []}
        first = asyncio.ensure_future(
            client.complete(GenerationRequest("sleep:0.5"), on_position=seen["a"].append)
        )
        await wait_until(lambda: client.health()["in_flight"] == 1)

        async def record(name: str, position: int) -> None:  # awaitable callbacks work too
            seen[name].append(position)

        rest = [
            asyncio.ensure_future(
                client.complete(
                    GenerationRequest(f"sleep:0.2 {name}"),
                    on_position=partial(record, name),
                )
            )
            for name in ("b", "c")
        ]
        await asyncio.gather(first, *rest)
        await asyncio.sleep(0.05)
        assert seen["a"] == [1, 0]
        assert seen["b"] == [1, 0]
        assert seen["c"] == [2, 1, 0]


async def test_reload_between_batches_keeps_queued_requests(tmp_path: Path) -> None:
    async with _client(max_batch_size=1) as client:
        adapter = write_adapter(tmp_path / "v2", tag="v2")
        before = asyncio.ensure_future(client.complete(GenerationRequest("sleep:0.3")))
        await wait_until(lambda: client.health()["in_flight"] == 1)
        queued = [
            asyncio.ensure_future(client.complete(GenerationRequest(f"q{i}"))) for i in (1, 2)
        ]
        await asyncio.sleep(0.05)
        await client.reload(adapter)
        assert (await before).texts[0].endswith("|base")  # already running: old adapter
        assert [(await q).texts[0].split("|")[-1] for q in queued] == ["v2", "v2"]


async def test_reload_of_a_missing_folder_is_refused(tmp_path: Path) -> None:
    async with _client() as client:
        with pytest.raises(AdapterRejectedError, match="does not exist"):
            await client.reload(tmp_path / "nope")
        assert (await client.complete(GenerationRequest("ok"))).texts


async def test_start_failure_is_one_clear_error() -> None:
    client = WorkerClient(SamplerSpec(base_model="broken"), FAST, sampler_factory=fake_factory)
    with pytest.raises(
        WorkerStartError, match="could not start: could not load the model: The base"
    ):
        await client.start()
    with pytest.raises(WorkerClosedError):
        await client.complete(GenerationRequest("x"))


async def test_restart_that_cannot_load_fails_fast(tmp_path: Path) -> None:
    adapter = write_adapter(tmp_path / "a", tag="a")
    async with WorkerClient(
        SamplerSpec(adapter=str(adapter)), FAST, sampler_factory=fake_factory
    ) as client:
        pid = client.pid
        assert pid is not None
        (adapter / "fake.json").unlink()  # the adapter disappears under the running worker
        os.kill(pid, 9)
        await wait_until(lambda: client.health()["state"] == "failed")
        with pytest.raises(WorkerUnavailableError, match="not a LoRA adapter folder"):
            await client.complete(GenerationRequest("x"))


async def test_close_stops_the_process_and_fails_waiters() -> None:
    client = _client()
    await client.start()
    pid = client.pid
    assert pid is not None and _alive(pid)
    pending = asyncio.ensure_future(client.complete(GenerationRequest("sleep:5")))
    await wait_until(lambda: client.health()["in_flight"] == 1)
    await client.close()
    with pytest.raises(WorkerClosedError):
        await pending
    assert not _alive(pid)
    await client.close()  # twice is fine


async def test_health_reports_the_worker() -> None:
    async with _client() as client:
        await client.complete(GenerationRequest("x", n=3))
        health = client.health()
        assert health["alive"] is True
        assert health["state"] == "ready"
        assert health["pid"] == client.pid
        assert health["model"] == "fake+base"
        assert health["batches_served"] == 1
        assert health["completions_served"] == 3
        assert health["queue_length"] == 0
        assert health["rss_bytes"] > 0
        assert health["restarts"] == 0
        await wait_until(lambda: (client.health()["last_heartbeat_age_s"] or 9) < 1)


async def test_round_trip_with_a_tiny_real_model(tmp_path: Path) -> None:
    """The real Sampler in the worker process, on a tiny random Llama built locally."""
    tiny = pytest.importorskip("model.tiny")
    path = await asyncio.to_thread(tiny.build_tiny_model, tmp_path / "tiny")
    spec = SamplerSpec(base_model=str(path), device="cpu", dtype="float32", threads=1)
    async with WorkerClient(spec, replace(FAST, heartbeat_timeout_s=30)) as client:
        requests = [
            GenerationRequest("genre:", n=3, max_tokens=4, stop=("\n",)),
            GenerationRequest("like: dub\ngenre:", n=2, max_tokens=4, stop=("\n",)),
            GenerationRequest("genre:", n=2, max_tokens=6, temperature=0.8),
        ]
        results = await asyncio.gather(*(client.complete(r) for r in requests))
        assert [len(r.texts) for r in results] == [3, 2, 2]
        assert all(isinstance(t, str) for r in results for t in r.texts)
        assert results[0].model == "tiny"
        assert all(r.completion_tokens > 0 for r in results)
