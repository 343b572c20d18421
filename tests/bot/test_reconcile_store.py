"""The store queries behind reconciliation, on SQLite and on a real PostgreSQL server: stale
unposted reservations are released (and nothing else), the posted genre messages of a window
are listed per guild, and one user's reactions are made exactly what Discord shows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.store.engine import SessionMaker
from bot.store.generations import (
    attach_message,
    posted_generations,
    release_stale_reservations,
    reserve_generations,
)
from bot.store.models import Generation, utcnow
from bot.store.votes import add_favorite, put_reactions, put_vote, reactors, tally
from tests.bot.test_migrations import postgres_url  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(60)

GUILD, OTHER_GUILD, CHANNEL = 111, 222, 333


@pytest.fixture
def store(both_stores: SessionMaker) -> SessionMaker:
    return both_stores


async def reserve(
    store: SessionMaker, name: str, *, guild_id: int | None = GUILD, age: timedelta | None = None
) -> int:
    [r] = await reserve_generations(
        store,
        [name],
        guild_id=guild_id,
        channel_id=None if guild_id is None else CHANNEL,
        user_id=1,
        model_name="m",
        model_version_id=None,
        options={},
    )
    assert r.generation_id is not None
    if age is not None:
        async with store.begin() as session:
            await session.execute(
                update(Generation)
                .where(Generation.id == r.generation_id)
                .values(created_at=utcnow() - age)
            )
    return r.generation_id


async def generation_ids(store: SessionMaker) -> set[int]:
    async with store.begin() as session:
        return set((await session.scalars(select(Generation.id))).all())


async def test_only_stale_unposted_reservations_of_servers_are_released(
    store: SessionMaker,
) -> None:
    stale = await reserve(store, "stale dub", age=timedelta(hours=2))
    fresh = await reserve(store, "fresh dub", age=timedelta(minutes=1))
    posted = await reserve(store, "posted dub", age=timedelta(days=2))
    await attach_message(store, posted, message_id=5000, channel_id=CHANNEL)
    cli = await reserve(store, "cli dub", guild_id=None, age=timedelta(days=2))  # no message ever
    released = await release_stale_reservations(store, older_than=utcnow() - timedelta(minutes=15))
    assert released == ["stale dub"]
    assert await generation_ids(store) == {fresh, posted, cli}
    assert stale not in await generation_ids(store)
    # The genre may be issued in that server again.
    again = await reserve(store, "stale dub")
    assert again in await generation_ids(store)
    assert await release_stale_reservations(store, older_than=utcnow() - timedelta(hours=1)) == []


async def test_posted_generations_of_a_window_and_of_given_guilds_newest_first(
    store: SessionMaker,
) -> None:
    old = await reserve(store, "old polka", age=timedelta(days=9))
    await attach_message(store, old, message_id=1, channel_id=CHANNEL)
    first = await reserve(store, "first polka", age=timedelta(days=3))
    await attach_message(store, first, message_id=2, channel_id=CHANNEL)
    second = await reserve(store, "second polka", age=timedelta(hours=1))
    await attach_message(store, second, message_id=3, channel_id=CHANNEL)
    await reserve(store, "unposted polka")
    elsewhere = await reserve(store, "elsewhere polka", guild_id=OTHER_GUILD)
    await attach_message(store, elsewhere, message_id=4, channel_id=CHANNEL)
    since = utcnow() - timedelta(days=7)

    found = await posted_generations(store, since=since, guild_ids=[GUILD])
    assert [(g.id, g.message_id, g.channel_id, g.guild_id) for g in found] == [
        (second, 3, CHANNEL, GUILD),
        (first, 2, CHANNEL, GUILD),
    ]
    assert found[0].genre_name == "second polka"
    both = await posted_generations(store, since=since, guild_ids=[GUILD, OTHER_GUILD])
    assert {g.id for g in both} == {first, second, elsewhere}
    assert await posted_generations(store, since=since, guild_ids=[]) == []
    # Many servers are asked for in chunks: all of them are found.
    many = [*range(10_000, 12_000), OTHER_GUILD]
    assert [g.id for g in await posted_generations(store, since=since, guild_ids=many)] == [
        elsewhere
    ]


async def test_put_reactions_makes_a_users_vote_and_favorite_exactly_so(
    store: SessionMaker,
) -> None:
    generation = await reserve(store, "velvet sludge")
    await put_vote(store, generation, 7, 1)
    await add_favorite(store, generation, 8)
    assert await reactors(store, generation) == {7, 8}

    assert await put_reactions(store, generation, 7, vote=-1, favorite=True)  # switched, starred
    assert not await put_reactions(store, generation, 7, vote=-1, favorite=True)  # no change
    assert await put_reactions(store, generation, 8, vote=None, favorite=False)  # all withdrawn
    assert await put_reactions(store, generation, 9, vote=1, favorite=False)  # new voter
    assert await tally(store, generation) == {"up": 1, "down": 1, "score": 0, "favorites": 1}
    assert await reactors(store, generation) == {7, 9}
    with pytest.raises(ValueError, match="a vote is -1 or \\+1"):
        await put_reactions(store, generation, 7, vote=2, favorite=False)
    assert await tally(store, generation) == {"up": 1, "down": 1, "score": 0, "favorites": 1}
