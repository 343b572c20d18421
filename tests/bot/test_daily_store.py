"""The genre of the day in the store, on SQLite and on a real PostgreSQL server: one claim per
server and day however many processes race for it, a claim that never got its message is taken
over only when stale (or its holder is gone), a posted day is never claimed again, and the
schedules due are those whose hour has come on a day they have not been posted."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select, update

from bot.store import daily as daily_store
from bot.store.engine import SessionMaker
from bot.store.models import DailyPost

pytestmark = pytest.mark.timeout(60)

GUILD, OTHER_GUILD, CHANNEL = 111, 222, 333
DAY = date(2027, 3, 1)


def at(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


@pytest.fixture
def store(both_stores: SessionMaker) -> SessionMaker:
    return both_stores


async def test_racing_claims_of_one_day_have_one_winner(store: SessionMaker) -> None:
    holders = [f"process-{i}" for i in range(8)]
    won = await asyncio.gather(*(daily_store.claim_day(store, GUILD, DAY, h) for h in holders))
    assert sum(won) == 1
    # Another server and another day are claims of their own.
    assert await daily_store.claim_day(store, OTHER_GUILD, DAY, "process-0")
    assert await daily_store.claim_day(store, GUILD, DAY + timedelta(days=1), "process-0")
    async with store.begin() as session:
        rows = (await session.execute(select(DailyPost.guild_id, DailyPost.day))).all()
    assert sorted(rows) == [(GUILD, DAY), (GUILD, DAY + timedelta(days=1)), (OTHER_GUILD, DAY)]
    # A claim given back (its attempt failed) may be claimed again, by its holder only.
    [winner] = [h for h, w in zip(holders, won, strict=True) if w]
    loser = next(h for h in holders if h != winner)
    await daily_store.give_back_claim(store, GUILD, DAY, loser)
    assert not await daily_store.claim_day(store, GUILD, DAY, loser)
    await daily_store.give_back_claim(store, GUILD, DAY, winner)
    assert await daily_store.claim_day(store, GUILD, DAY, loser)


async def test_a_fresh_claim_is_kept_a_stale_one_taken_over(store: SessionMaker) -> None:
    assert await daily_store.claim_day(store, GUILD, DAY, "crashed")
    # Fresh: another process leaves it alone (its holder may be generating still).
    assert not await daily_store.claim_day(store, GUILD, DAY, "live")
    assert await daily_store.holds_claim(store, GUILD, DAY, "crashed")
    # Ten minutes later on the database's clock, with no message: the live process takes it.
    async with store.begin() as session:
        await session.execute(
            update(DailyPost).values(claimed_at=datetime.now(UTC) - timedelta(minutes=11))
        )
    assert await daily_store.claim_day(store, GUILD, DAY, "live")
    assert await daily_store.holds_claim(store, GUILD, DAY, "live")
    assert not await daily_store.holds_claim(store, GUILD, DAY, "crashed")
    # The old holder, back from a hang, cannot record its post any more.
    assert not await daily_store.record_post(
        store, GUILD, DAY, "crashed", channel_id=CHANNEL, message_id=1, generation_id=None
    )
    # A fresh claim whose holder is known to be gone (a process of this machine that died) is
    # taken over at once.
    assert await daily_store.claim_day(store, OTHER_GUILD, DAY, "gone")
    assert not await daily_store.claim_day(store, OTHER_GUILD, DAY, "live", is_dead=lambda h: False)
    assert await daily_store.claim_day(
        store, OTHER_GUILD, DAY, "live", is_dead=lambda h: h == "gone"
    )


async def test_a_posted_day_is_never_claimed_again(store: SessionMaker) -> None:
    await daily_store.set_schedule(store, GUILD, channel_id=CHANNEL, hour=9, set_by=5, now=at(8))
    assert await daily_store.claim_day(store, GUILD, DAY, "a")
    await daily_store.record_problem(store, GUILD, "old problem", now=at(9), retry_at=at(10))
    assert await daily_store.record_post(
        store, GUILD, DAY, "a", channel_id=CHANNEL, message_id=77, generation_id=None
    )
    async with store.begin() as session:
        await session.execute(
            update(DailyPost).values(claimed_at=datetime.now(UTC) - timedelta(days=1))
        )
    assert not await daily_store.claim_day(store, GUILD, DAY, "b", is_dead=lambda h: True)
    schedule = await daily_store.get_schedule(store, GUILD)
    assert schedule is not None
    assert (schedule.last_day, schedule.last_message_id) == (DAY, 77)
    assert schedule.problem is None and schedule.retry_at is None  # a post clears the problem


async def test_schedules_due(store: SessionMaker) -> None:
    set_ = daily_store.set_schedule
    yesterday = DAY - timedelta(days=1)
    await set_(store, 1, channel_id=CHANNEL, hour=9, set_by=None, now=at(0, day=yesterday))
    await set_(store, 2, channel_id=CHANNEL, hour=12, set_by=None, now=at(0))
    # Set after today's hour: the first post is tomorrow's.
    await set_(store, 3, channel_id=CHANNEL, hour=9, set_by=None, now=at(9, 30))
    await set_(store, 4, channel_id=CHANNEL, hour=9, set_by=None, now=at(0))
    await set_(store, 5, channel_id=CHANNEL, hour=9, set_by=None, now=at(0))
    await daily_store.record_problem(store, 5, "channel gone", now=at(9), retry_at=at(11))
    assert await daily_store.claim_day(store, 4, DAY, "x")
    assert await daily_store.record_post(
        store, 4, DAY, "x", channel_id=CHANNEL, message_id=9, generation_id=None
    )

    async def due(now: datetime, guilds: tuple[int, ...] = (1, 2, 3, 4, 5)) -> list[int]:
        rows = await daily_store.schedules_due(store, now=now, guild_ids=guilds)
        return sorted(s.guild_id for s in rows)

    assert await due(at(8, 59)) == []
    assert await due(at(10)) == [1]  # 2: not its hour; 3: set too late; 4: posted; 5: waits
    assert await due(at(10), guilds=(2, 3, 4, 5)) == []  # only this process's servers
    assert await due(at(11)) == [1, 5]
    assert await due(at(23, 59)) == [1, 2, 5]
    tomorrow = DAY + timedelta(days=1)
    assert await due(at(9, day=tomorrow)) == [1, 3, 4, 5]
    # A claim in progress stays due (claim_day decides whether it may be taken over).
    assert await daily_store.claim_day(store, 1, DAY, "y")
    assert await due(at(10)) == [1]
    assert not await daily_store.claim_day(store, 1, DAY, "z")


async def test_set_replaces_and_remove_deletes(store: SessionMaker) -> None:
    first = await daily_store.set_schedule(
        store, GUILD, channel_id=CHANNEL, hour=9, set_by=5, now=at(1), problem="no view"
    )
    assert (first.channel_id, first.hour, first.problem) == (CHANNEL, 9, "no view")
    second = await daily_store.set_schedule(
        store, GUILD, channel_id=CHANNEL + 1, hour=23, set_by=6, now=at(2)
    )
    assert (second.channel_id, second.hour, second.set_by, second.problem) == (
        CHANNEL + 1,
        23,
        6,
        None,
    )
    assert second.set_at == at(2)
    assert await daily_store.remove_schedule(store, GUILD)
    assert not await daily_store.remove_schedule(store, GUILD)
    assert await daily_store.get_schedule(store, GUILD) is None
