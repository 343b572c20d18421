"""The bot's Prometheus metrics: refusals by reason, genres delivered, votes, retraining state,
and the ``[bot] metrics_port`` endpoint."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.cogs.generation import GenerationCog
from bot.cogs.voting import VotingCog
from bot.config import BotConfig
from bot.errors import QueueRefusedError
from bot.metrics import RETRAIN_STATES, BotMetrics, metrics_endpoint
from bot.queue import FairQueue, QueueSettings
from bot.service import GenreRequest, GenreService
from model.errors import ModelError
from model.worker.errors import WorkerBusyError, WorkerCrashedError, WorkerTimeoutError
from tests.bot.fakes import ScriptedGenerator
from tests.bot.test_cogs import FakeBot, fake_interaction, reaction
from tests.bot.test_queue import measured_queue

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: BotMetrics) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }


def refused(metrics: BotMetrics) -> dict[str, float]:
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in samples(metrics).items()
        if name == "microgenre_bot_requests_refused_total"
    }


async def _hold_a_slot(service: GenreService, gen: ScriptedGenerator) -> asyncio.Task[Any]:
    """A request of user 1 in guild 1 generating until ``gen.gate`` is set."""
    gen.gate, generating = asyncio.Event(), asyncio.Event()
    gen.positions = [0]  # told to the caller once it generates
    task = asyncio.ensure_future(
        service.deliver(
            GenreRequest(1, guild_id=1, user_id=1), on_position=lambda _: generating.set()
        )
    )
    await asyncio.wait_for(generating.wait(), 5)
    return task


# (queue settings, requests made while one generates: (guild, user), the expected reason)
QUEUE_REFUSALS = [
    (QueueSettings(slots=1, user_cap=1), [(1, 1)], "user_cap"),
    (QueueSettings(slots=1, guild_cap=1), [(1, 2), (1, 3)], "guild_cap"),
    (QueueSettings(slots=1, max_wait_s=60), [(2, 2)], "max_wait"),
]


@pytest.mark.parametrize(("settings", "requests", "reason"), QUEUE_REFUSALS)
async def test_queue_refusals_count_by_reason(
    sessions: Any, settings: QueueSettings, requests: list[tuple[int, int]], reason: str
) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["a", "b", "c"])
    # For the wait: a measured rate of 0.01 genres/s (a prior alone refuses nothing).
    measured = reason == "max_wait"
    queue = await measured_queue(settings, 1, 100.0) if measured else FairQueue(settings)
    service = GenreService(gen, sessions, queue=queue)
    first = await _hold_a_slot(service, gen)
    tasks = [
        asyncio.ensure_future(service.deliver(GenreRequest(1, guild_id=g, user_id=u)))
        for g, u in requests
    ]
    await asyncio.wait([tasks[-1]], timeout=5)
    assert isinstance(tasks[-1].exception(), QueueRefusedError)
    assert refused(service.metrics) == {reason: 1}
    gen.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(first, *tasks, return_exceptions=True)
    assert refused(service.metrics) == {reason: 1}  # the others were served


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (WorkerBusyError(2.0), "worker_busy"),
        (WorkerCrashedError("the worker died"), "crashed"),
        (WorkerTimeoutError("too slow"), "timeout"),
        (ModelError("could not generate"), "model_error"),
        (None, "nothing_generated"),
    ],
)
async def test_generator_failures_count_by_reason(
    sessions: Any, error: Exception | None, reason: str
) -> None:
    gen = ScriptedGenerator()  # nothing enqueued: without an error, nothing is generated
    gen.error = error
    service = GenreService(gen, sessions)
    if error is None:
        assert (await service.deliver(GenreRequest(1, guild_id=1, user_id=1))).genres == []
    else:
        with pytest.raises(type(error)):
            await service.deliver(GenreRequest(1, guild_id=1, user_id=1))
    assert refused(service.metrics) == {reason: 1}


async def test_delivered_genres_and_votes_are_counted(sessions: Any, tmp_path: Path) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["moss waltz", "polder grime"])
    bot = FakeBot(tmp_path, sessions, gen)
    await GenerationCog(bot).new(fake_interaction(), count=2, like=None, weirdness=3)  # type: ignore[arg-type]
    cog = VotingCog(bot)  # type: ignore[arg-type]
    for event in [
        reaction(7, 5000, "👍"),
        reaction(8, 5000, "👍🏽"),
        reaction(9, 5001, "👎"),
        reaction(7, 5000, "⭐"),
        reaction(1, 5000, "👍"),  # the bot's own reaction is no vote
        reaction(7, 9999, "👍"),  # nor one on a message that is not a genre
        reaction(7, 5000, "🎸"),
    ]:
        await cog.on_raw_reaction_add(event)
    await cog.on_raw_reaction_remove(reaction(7, 5000, "⭐", add=False))
    parsed = samples(bot.service.metrics)
    assert parsed[("microgenre_bot_genres_delivered_total", ())] == 2
    votes = {
        (dict(labels)["kind"], dict(labels)["action"]): value
        for (name, labels), value in parsed.items()
        if name == "microgenre_bot_votes_total"
    }
    assert votes == {
        ("up", "added"): 2,
        ("down", "added"): 1,
        ("favorite", "added"): 1,
        ("favorite", "removed"): 1,
    }
    assert refused(bot.service.metrics) == {}


@pytest.mark.parametrize(
    ("running", "phase", "state"),
    [(False, None, "idle"), (True, "training", "training"), (True, "finished", "finishing")],
)
def test_retraining_state_is_one_of_the_states(
    running: bool, phase: str | None, state: str
) -> None:
    metrics = BotMetrics()
    progress = SimpleNamespace(phase=phase) if phase else None
    metrics.watch_retrainer(SimpleNamespace(running=running, progress=progress))  # type: ignore[arg-type]
    shown = {
        dict(labels)["state"]: value
        for (name, labels), value in samples(metrics).items()
        if name == "microgenre_bot_retrain_state"
    }
    assert shown == {s: float(s == state) for s in RETRAIN_STATES}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_endpoint_serves_the_metrics_when_a_port_is_set(sessions: Any) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["moss waltz"])
    service = GenreService(gen, sessions)
    service.metrics.watch_worker(gen)
    service.metrics.watch_retrainer(SimpleNamespace(running=False, progress=None))  # type: ignore[arg-type]
    await service.deliver(GenreRequest(1, guild_id=1, user_id=1))
    async with metrics_endpoint(service.metrics, BotConfig(metrics_port=_free_port())) as url:
        assert url is not None and url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    for name in (
        "microgenre_bot_queue_waiting",
        "microgenre_bot_queue_generating",
        "microgenre_bot_genres_delivered_total",
        "microgenre_bot_requests_refused_total",
        "microgenre_bot_votes_total",
        "microgenre_bot_retrain_state",
        "microgenre_bot_retrain_runs_total",
        "microgenre_worker_queue_length",
        "microgenre_worker_restarts_total",
    ):
        assert f"# TYPE {name} " in text, name
    assert 'microgenre_bot_retrain_state{state="idle"} 1.0' in text
    assert "microgenre_bot_requests_refused_total{" not in text  # the request was served


async def test_no_endpoint_without_a_port() -> None:
    async with metrics_endpoint(BotMetrics(), BotConfig()) as url:
        assert url is None


def test_registries_are_separate() -> None:
    one, two = BotMetrics(), BotMetrics()
    one.vote("up", added=True)
    assert ("microgenre_bot_votes_total", (("action", "added"), ("kind", "up"))) in samples(one)
    assert not any(name == "microgenre_bot_votes_total" for name, _ in samples(two))
