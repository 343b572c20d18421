"""Store queries (votes, leaderboard, community selection), the generation service, the map."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from bot.cogs._leaderboard_map import WordIndex, place_all, render_png
from bot.service import GenreRequest, GenreService
from bot.store.generations import attach_message, reserve_generations
from bot.store.leaderboard import top_generations, user_favorites
from bot.store.models import Generation, utcnow
from bot.store.votes import add_favorite, remove_vote, set_vote, tally
from tests.bot.fakes import ScriptedGenerator


async def issue(sessions: Any, names: list[str], guild: int = 1, start: int = 100) -> list[int]:
    reserved = await reserve_generations(
        sessions,
        names,
        guild_id=guild,
        channel_id=2,
        user_id=3,
        model_name="m",
        model_version_id=None,
        options={},
    )
    ids = []
    for i, r in enumerate(reserved):
        assert r.generation_id is not None, r
        await attach_message(sessions, r.generation_id, message_id=start + i, channel_id=2)
        ids.append(r.generation_id)
    return ids


async def test_reservation_refuses_real_and_reissued_genres(sessions: Any) -> None:
    from bot.store.genres import import_records
    from scraping.records import GenreRecord

    await import_records(sessions, [GenreRecord.create("Post-Rock", "wikipedia")])
    await issue(sessions, ["glass polka"])
    reserved = await reserve_generations(
        sessions,
        ["post rock", "Glass  Polka", "new thing", ""],
        guild_id=1,
        channel_id=2,
        user_id=3,
        model_name="m",
        model_version_id=None,
        options={},
    )
    assert [(r.name, r.reason) for r in reserved] == [
        ("post rock", "real"),
        ("Glass  Polka", "issued"),
        ("new thing", None),
        ("", "invalid"),
    ]
    # Another guild may get the same invented genre.
    other = await reserve_generations(
        sessions,
        ["glass polka"],
        guild_id=2,
        channel_id=2,
        user_id=3,
        model_name="m",
        model_version_id=None,
        options={},
    )
    assert other[0].generation_id is not None


async def test_concurrent_votes_are_idempotent(sessions: Any) -> None:
    [gid] = await issue(sessions, ["x y"])
    await asyncio.gather(*(set_vote(sessions, gid, 1, 1) for _ in range(10)))
    await asyncio.gather(*(add_favorite(sessions, gid, 1) for _ in range(10)))
    assert await tally(sessions, gid) == {"up": 1, "down": 0, "score": 1, "favorites": 1}
    assert await set_vote(sessions, gid, 1, -1) is True
    assert await remove_vote(sessions, gid, 1, 1) is False  # stale removal
    assert await tally(sessions, gid) == {"up": 0, "down": 1, "score": -1, "favorites": 1}


async def test_leaderboard_period_order_and_community_selection(sessions: Any) -> None:
    a, b, c, d = await issue(sessions, ["aa bb", "cc dd", "ee ff", "gg hh"])
    for user in range(4):
        await set_vote(sessions, b, user, 1)
    for user in range(2):
        await set_vote(sessions, a, user, 1)
        await set_vote(sessions, c, user + 10, 1)
    await set_vote(sessions, c, 20, -1)
    for user in range(3):
        await set_vote(sessions, d, 30 + user, -1)
    async with sessions.begin() as s:
        await s.execute(
            update(Generation)
            .where(Generation.id == b)
            .values(created_at=utcnow() - timedelta(days=10))
        )
    week = [r.name for r in await top_generations(sessions, 1, period="week")]
    assert week == ["aa bb", "ee ff", "gg hh"]  # a: +2 2 up; c: +1; d: -3
    everything = [r.name for r in await top_generations(sessions, 1, period="all")]
    assert everything == ["cc dd", "aa bb", "ee ff", "gg hh"]
    assert await top_generations(sessions, 99, period="all") == []
    with pytest.raises(ValueError):
        await top_generations(sessions, 1, period="year")
    await add_favorite(sessions, c, 10)
    assert [r.name for r in await user_favorites(sessions, 1, 10)] == ["ee ff"]


async def test_service_never_issues_twice_in_a_guild_even_concurrently(sessions: Any) -> None:
    gen = ScriptedGenerator()
    gen.delay_s = 0.05
    gen.enqueue(["same thing", "same thing", "other thing"])
    service = GenreService(gen, sessions)
    first, second = await asyncio.gather(
        service.deliver(GenreRequest(1, guild_id=1, user_id=1)),
        service.deliver(GenreRequest(1, guild_id=1, user_id=2)),
    )
    assert sorted(first.genres + second.genres) == ["other thing", "same thing"]
    # The store's reservation decided: one request lost "same thing" and got a replacement.
    assert first.stats.get("refused:issued", 0) + second.stats.get("refused:issued", 0) == 1
    # A released genre (its message could not be posted) may be offered again.
    [other] = [d for d in (first, second) if d.genres == ["other thing"]]
    await service.release(1, other.reserved)
    gen.enqueue(["other thing"])
    again = await service.deliver(GenreRequest(1, guild_id=1, user_id=1))
    assert again.genres == ["other thing"]
    # The exclude hint passed to the generator held the guild's other genre.
    assert gen.calls[-1]["exclude"] == {"same thing"}


async def test_a_failing_later_round_releases_what_earlier_rounds_reserved(sessions: Any) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["taken thing", "first thing"])
    service = GenreService(gen, sessions)
    await reserve_generations(
        sessions,
        ["taken thing"],
        guild_id=1,
        channel_id=1,
        user_id=9,
        model_name="m",
        model_version_id=None,
        options={},
    )
    real_generate = gen.generate

    async def fail_second_round(*args: Any, **kwargs: Any) -> Any:
        if len(gen.calls) == 1:
            gen.error = RuntimeError("worker crashed")
        return await real_generate(*args, **kwargs)

    gen.generate = fail_second_round  # type: ignore[method-assign]
    # Round 1 hands out "taken thing" (not in the cache: another process issued it) and
    # "first thing"; the store refuses the first, round 2 crashes.
    service.issued.seed(1, set())
    with pytest.raises(RuntimeError):
        await service.deliver(GenreRequest(2, guild_id=1, user_id=1))
    gen.error = None
    gen.enqueue(["first thing"])
    again = await service.deliver(GenreRequest(1, guild_id=1, user_id=1))
    assert again.genres == ["first thing"]


def test_map_places_by_shared_words(tmp_path: Path) -> None:
    index = WordIndex({"finnish metal": (10.0, 10.0), "polka": (30.0, 50.0), "k-pop": (0, 0)})
    assert index.nearest("finnish glitch polka") == ["polka", "finnish metal"]
    placed, unplaced = place_all(index, ["finnish glitch polka", "zzyzx"])
    assert unplaced == ["zzyzx"]
    [p] = placed
    assert abs(p.x - 20) <= 20 and abs(p.y - 30) <= 20
    png = render_png(index, placed, "test")
    assert png.startswith(b"\x89PNG")


async def test_pipeline_generator_routes_positions_per_call() -> None:
    from bot.service import PipelineGenerator
    from model.protocol import GenerateOptions, GenerationRequest, GenerationResult

    class Client:
        """A worker client double: reports a position, then answers distinct names."""

        def __init__(self) -> None:
            self.count = 0

        async def complete(
            self, request: GenerationRequest, *, on_position: Any = None
        ) -> GenerationResult:
            if on_position is not None:
                on_position(len(request.prompt))
            await asyncio.sleep(0.01)
            texts = []
            for _ in range(request.n):
                self.count += 1
                texts.append(f" brand{'x' * (self.count % 7)} new wave {self.count}")
            return GenerationResult(tuple(texts), "double", finished=tuple([True] * request.n))

        def health(self) -> dict[str, Any]:
            return {"queue_length": 0}

    generator = PipelineGenerator(Client(), known=["new wave"])
    seen: dict[str, list[int]] = {"a": [], "b": []}
    out_a, out_b = await asyncio.gather(
        generator.generate(2, GenerateOptions(), on_position=seen["a"].append),
        generator.generate(2, GenerateOptions(like="dub"), on_position=seen["b"].append),
    )
    assert len(out_a.genres) == 2 and len(out_b.genres) == 2 and out_a.model == "double"
    # Each call heard only its own requests (the "like" prompt is longer).
    assert seen["a"] and seen["b"] and max(seen["a"]) < min(seen["b"])


async def test_service_waits_in_the_fair_queue_and_reports_its_positions_first(
    sessions: Any,
) -> None:
    from bot.queue import FairQueue, QueueSettings

    gen = ScriptedGenerator()
    gen.gate = asyncio.Event()
    gen.positions = [0]  # the worker's own report: generating now
    gen.enqueue(["first thing", "second thing", "third thing"])
    queue = FairQueue(QueueSettings(slots=1))
    service = GenreService(gen, sessions, queue=queue)
    heard: dict[int, list[int]] = {1: [], 2: [], 3: []}
    tasks = []
    for user in heard:
        tasks.append(
            asyncio.create_task(
                service.deliver(
                    GenreRequest(1, guild_id=1, user_id=user), on_position=heard[user].append
                )
            )
        )
        await asyncio.sleep(0.01)
    assert len(gen.calls) == 1 and queue.waiting == 2
    assert service.health()["bot_waiting"] == 2
    gen.gate.set()
    deliveries = await asyncio.gather(*tasks)
    assert [d.genres for d in deliveries] == [["first thing"], ["second thing"], ["third thing"]]
    # The bot's line first (2nd, then 1st), then the worker's positions.
    assert heard == {1: [0], 2: [1, 0], 3: [2, 1, 0]}
    assert queue.running == 0 and queue.lanes == 0


async def test_service_frees_its_slot_when_the_generator_fails(sessions: Any) -> None:
    from bot.queue import FairQueue, QueueSettings

    gen = ScriptedGenerator()
    gen.error = RuntimeError("worker crashed")
    queue = FairQueue(QueueSettings(slots=1))
    service = GenreService(gen, sessions, queue=queue)
    with pytest.raises(RuntimeError):
        await service.deliver(GenreRequest(1, guild_id=1, user_id=1))
    assert queue.running == 0 and queue.users == 0
