"""The client test suite, run over both transports (local process, and HTTP to the server)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from model.protocol import GenerationRequest
from model.worker.errors import (
    AdapterRejectedError,
    WorkerBusyError,
    WorkerError,
    WorkerTimeoutError,
)
from model.worker.server import ADAPTER_REFUSED
from tests.model.worker.conftest import MakeHarness, wait_until
from tests.model.worker.fakes import expected_prefix, write_adapter


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_round_trip(make_harness: MakeHarness) -> None:
    h = await make_harness()
    request = GenerationRequest("genre:", n=3, temperature=0.7, stop=("\n",))
    result = await h.client.complete(request)
    assert result.texts == tuple(f"{expected_prefix(request)}|{i}|base" for i in range(3))
    assert result.model == "fake+base"
    assert list(result.finished) == [True, True, True]


async def test_each_request_gets_its_own_completions(make_harness: MakeHarness) -> None:
    h = await make_harness()
    requests = [
        GenerationRequest(
            f"prompt {i}",
            n=1 + i % 3,
            temperature=(0.5, 1.0, 1.3)[i % 3],
            top_p=(0.9, 0.95)[i % 2],
            max_tokens=8 + i % 2,
            stop=("\n",) if i % 4 else (),
            seed=i if i % 5 == 0 else None,
        )
        for i in range(24)
    ]
    results = await asyncio.gather(*(h.client.complete(r) for r in requests))
    for request, result in zip(requests, results, strict=True):
        assert len(result.texts) == request.n
        for i, text in enumerate(result.texts):
            assert text == f"{expected_prefix(request)}|{i}|base"
    # Concurrent requests were generated together, never more than one option set per batch.
    assert h.worker.health()["batches_served"] < len(requests)


async def test_queue_full_is_a_busy_error(make_harness: MakeHarness) -> None:
    h = await make_harness(queue_size=2, max_batch_size=1)
    first = asyncio.ensure_future(h.client.complete(GenerationRequest("sleep:1.5")))
    await wait_until(lambda: h.worker.health()["in_flight"] == 1)
    queued = [asyncio.ensure_future(h.client.complete(GenerationRequest(f"q{i}"))) for i in (1, 2)]
    await wait_until(lambda: h.worker.health()["queue_length"] == 2)
    with pytest.raises(WorkerBusyError, match=r"busy — try again in about \d+ s"):
        await h.client.complete(GenerationRequest("one too many"))
    # Everything accepted is still served.
    assert len((await first).texts) == 1
    assert [len((await q).texts) for q in queued] == [1, 1]


async def test_sigkill_mid_batch_fails_fast_and_recovers(make_harness: MakeHarness) -> None:
    h = await make_harness()
    pid = h.worker.pid
    assert pid is not None
    victim = asyncio.ensure_future(h.client.complete(GenerationRequest("sleep:30", n=2)))
    await wait_until(lambda: h.worker.health()["in_flight"] == 1)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerError, match="stopped unexpectedly"):
        await victim
    assert time.monotonic() - killed < 5
    # The next request is served by a restarted worker.
    result = await asyncio.wait_for(h.client.complete(GenerationRequest("after")), 10)
    assert result.texts[0].startswith("after|")
    assert h.worker.pid != pid
    assert h.worker.health()["restarts"] == 1


async def test_hung_worker_is_killed_and_restarted(make_harness: MakeHarness) -> None:
    h = await make_harness(heartbeat_timeout_s=1.0)
    pid = h.worker.pid
    assert pid is not None
    victim = asyncio.ensure_future(h.client.complete(GenerationRequest("sleep:30")))
    await wait_until(lambda: h.worker.health()["in_flight"] == 1)
    os.kill(pid, signal.SIGSTOP)  # frozen: no heartbeat any more
    started = time.monotonic()
    with pytest.raises(WorkerError, match="no heartbeat"):
        await victim
    assert time.monotonic() - started < 5
    result = await asyncio.wait_for(h.client.complete(GenerationRequest("again")), 10)
    assert result.texts[0].startswith("again|")
    assert not _alive(pid)


async def test_generation_error_keeps_the_worker(make_harness: MakeHarness) -> None:
    h = await make_harness()
    pid = h.worker.pid
    with pytest.raises(WorkerError, match="told to fail"):
        await h.client.complete(GenerationRequest("raise"))
    assert (await h.client.complete(GenerationRequest("fine"))).texts
    assert h.worker.pid == pid


async def test_request_timeout(make_harness: MakeHarness) -> None:
    h = await make_harness(request_timeout_s=0.5)
    with pytest.raises(WorkerTimeoutError):
        await h.client.complete(GenerationRequest("sleep:3"))


async def test_hot_reload_good_adapter(make_harness: MakeHarness, tmp_path: Path) -> None:
    h = await make_harness()
    adapter = write_adapter(tmp_path / "v2", tag="v2")
    await h.client.reload(str(adapter))
    result = await h.client.complete(GenerationRequest("genre:"))
    assert result.texts[0].endswith("|v2")
    assert result.model == "fake+v2"
    assert h.worker.health()["adapter"] == str(adapter)


@pytest.mark.parametrize(
    ("options", "reason"),
    [({"load_error": "corrupt weights"}, "corrupt weights"), ({"empty": True}, "empty text")],
)
async def test_hot_reload_broken_adapter_keeps_the_old_one(
    make_harness: MakeHarness,
    tmp_path: Path,
    transport: str,
    options: dict[str, object],
    reason: str,
) -> None:
    h = await make_harness()
    good = write_adapter(tmp_path / "good", tag="good")
    await h.client.reload(str(good))
    broken = write_adapter(tmp_path / "broken", **options)
    if transport == "remote":  # serve tells no client why (its log does): one refusal text
        reason = ADAPTER_REFUSED.split(":", 1)[0]
    with pytest.raises(AdapterRejectedError, match=reason):
        await h.client.reload(str(broken))
    result = await h.client.complete(GenerationRequest("genre:"))
    assert result.texts[0].endswith("|good")
    assert h.worker.health()["adapter"] == str(good)
