"""The genre of the day, with the real discord.py against the fake Discord and a clock the test
drives: `/genre daily set|off` (Manage Server), one post a day at the hour with 👍 👎 ⭐, a
catch-up after downtime, one post under two bots racing for it (SQLite and PostgreSQL), and no
post but a reason the admin sees (and a next try an hour later, not before) when the channel is
gone or the bot lacks a permission there."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import bot.daily
from bot.daily import DailyScheduler
from bot.store import daily as daily_store
from bot.store.engine import SessionMaker
from bot.store.models import DailyPost, Generation
from tests.bot.fakes import ScriptedGenerator, make_config, running_bot
from tests.bot.test_integration import ephemeral_texts
from tests.fake_discord import FakeDiscord
from tests.fake_discord.server import MANAGE_GUILD, MEMBER_PERMISSIONS, ChannelOption

pytestmark = pytest.mark.timeout(60)

DAY = date(2027, 3, 1)
ADMIN = MEMBER_PERMISSIONS | MANAGE_GUILD


def at(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


class Clock:
    """The scheduler's ``now()``, set by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Every scheduler the bot makes reads this clock, and checks by itself only at start (the
    test calls ``tick()`` for the rest)."""
    clock = Clock(at(8))
    monkeypatch.setattr(bot.daily, "system_now", clock)
    monkeypatch.setattr(bot.daily, "CHECK_INTERVAL_S", 3600.0)
    return clock


def scheduler_of(running: Any) -> DailyScheduler:
    scheduler = running.bot.get_cog("DailyCog").scheduler
    assert isinstance(scheduler, DailyScheduler)
    return scheduler


def channel_posts(fake: FakeDiscord, channel_id: int) -> list[Any]:
    """The bot's POSTs of a message in ``channel_id`` (answered or refused)."""
    return fake.calls_matching("POST", f"/channels/{channel_id}/messages")


async def answer(
    fake: FakeDiscord, user: Any, subcommand: str, permissions: int = ADMIN, **options: Any
) -> str:
    """The ephemeral answer to ``/genre <subcommand>`` (by a server manager by default)."""
    interaction = await fake.invoke(user, "genre", subcommand, options, permissions=permissions)
    [text] = await fake.wait_for(lambda: ephemeral_texts(fake, interaction))
    return text


async def stats_field(fake: FakeDiscord, user: Any) -> str:
    interaction = await fake.invoke(user, "genre", "stats")
    [message] = await fake.wait_for(lambda: fake.followups(interaction))
    [field] = [f for f in message["embeds"][0]["fields"] if f["name"] == "Genre of the day"]
    return str(field["value"])


async def test_one_genre_a_day_at_the_hour_and_a_catch_up_after_downtime(
    fake_discord: FakeDiscord, sessions: SessionMaker, tmp_path: Path, clock: Clock
) -> None:
    channel = fake_discord.channel_id
    gen = ScriptedGenerator()
    gen.enqueue(["tidal polka", "moss gospel"])
    admin = fake_discord.member("admin")
    async with running_bot(make_config(tmp_path), sessions, gen) as running:
        scheduler = scheduler_of(running)
        text = await answer(
            fake_discord, admin, "daily set", channel=ChannelOption(channel), hour=9
        )
        assert f"<#{channel}>" in text and "09:00 UTC" in text and "today" in text
        assert await scheduler.tick() == 0  # 08:00: not yet
        clock.now = at(9, 1)
        assert await scheduler.tick() == 1
        for later in (at(9, 30), at(23, 59)):
            clock.now = later
            assert await scheduler.tick() == 0
        [post] = channel_posts(fake_discord, channel)
        assert "Genre of the day" in post.json["content"] and "tidal polka" in post.json["content"]
        [first] = [m for m in fake_discord.messages.values() if "tidal polka" in m["content"]]
        await fake_discord.wait_for(
            lambda: len(fake_discord.reactions.get(int(first["id"]), {})) == 3
        )
        assert set(fake_discord.reactions[int(first["id"])]) == {"👍", "👎", "⭐"}
        # Its buttons, like any genre message's: they name its generation.
        buttons = [b["custom_id"] for row in first["components"] for b in row["components"]]
        async with sessions.begin() as s:
            [(generation_id, kind)] = (
                await s.execute(
                    select(Generation.id, Generation.lineage_kind).where(
                        Generation.message_id == int(first["id"])
                    )
                )
            ).all()
        assert buttons == [f"mg:more:{generation_id}", f"mg:weirder:{generation_id}"]
        assert kind == "daily"

    # Down at the next day's hour; back at 15:00 the same day: one post, at once.
    clock.now = at(15, day=DAY + timedelta(days=1))
    async with running_bot(make_config(tmp_path), sessions, gen) as running:
        await fake_discord.wait_for(lambda: len(channel_posts(fake_discord, channel)) == 2)
        assert await scheduler_of(running).tick() == 0
        field = await stats_field(fake_discord, admin)
    assert f"<#{channel}>" in field and "09:00 UTC" in field
    assert "2027-03-02" in field  # the last post
    assert len(channel_posts(fake_discord, channel)) == 2
    async with sessions.begin() as s:
        posts = (await s.execute(select(DailyPost.day, DailyPost.message_id))).all()
        generations = (await s.execute(select(Generation.message_id, Generation.user_id))).all()
    assert sorted(day for day, _ in posts) == [DAY, DAY + timedelta(days=1)]
    # Each post is a generation of the server, voted on like any other.
    assert {m for _, m in posts} == {m for m, _ in generations}
    assert all(user is None for _, user in generations)


async def test_daily_set_and_off_need_manage_server_and_off_stops_it(
    fake_discord: FakeDiscord, sessions: SessionMaker, tmp_path: Path, clock: Clock
) -> None:
    channel = fake_discord.channel_id
    async with running_bot(make_config(tmp_path), sessions) as running:
        scheduler = scheduler_of(running)
        member = fake_discord.member("member")
        options: dict[str, Any] = {"channel": ChannelOption(channel), "hour": 9}
        for subcommand, given in (("daily set", options), ("daily off", {})):
            text = await answer(fake_discord, member, subcommand, MEMBER_PERMISSIONS, **given)
            assert "Manage Server" in text
        assert await daily_store.get_schedule(sessions, fake_discord.guild_id) is None

        admin = fake_discord.member("admin")
        await answer(fake_discord, admin, "daily set", channel=ChannelOption(channel), hour=9)
        assert "No more genre of the day" in await answer(fake_discord, admin, "daily off")
        assert "no genre of the day" in await answer(fake_discord, admin, "daily off")
        clock.now = at(9, 5)
        assert await scheduler.tick() == 0
        assert "off" in await stats_field(fake_discord, admin)
    assert channel_posts(fake_discord, channel) == []


async def test_a_gone_channel_gets_no_post_a_reason_and_a_try_an_hour_later(
    fake_discord: FakeDiscord,
    sessions: SessionMaker,
    tmp_path: Path,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = fake_discord.channel_id
    gen = ScriptedGenerator()
    gen.enqueue(["late bloom dub"])
    admin = fake_discord.member("admin")
    async with running_bot(make_config(tmp_path), sessions, gen) as running:
        scheduler = scheduler_of(running)
        await answer(fake_discord, admin, "daily set", channel=ChannelOption(channel), hour=9)
        await fake_discord.remove_channel(channel)
        await fake_discord.wait_for(lambda: running.bot.get_channel(channel) is None)
        caplog.set_level(logging.WARNING, logger="bot.daily")
        clock.now = at(9)
        assert await scheduler.tick() == 0
        schedule = await daily_store.get_schedule(sessions, fake_discord.guild_id)
        assert schedule is not None and schedule.problem is not None
        assert f"<#{channel}>" in schedule.problem and "deleted" in schedule.problem
        assert schedule.retry_at == at(10)
        [line] = [r.getMessage() for r in caplog.records if r.name == "bot.daily"]
        assert "not posted" in line and "deleted" in line and "10:00" in line
        # No tight loop: nothing more is tried before 10:00.
        for minute in (1, 30, 59):
            clock.now = at(9, minute)
            assert await scheduler.tick() == 0
        assert len([r for r in caplog.records if r.name == "bot.daily"]) == 1
        field = await stats_field(fake_discord, admin)
        assert "deleted" in field and "10:00 UTC" in field
        clock.now = at(10)
        assert await scheduler.tick() == 0
        assert len([r for r in caplog.records if r.name == "bot.daily"]) == 2
        # Nothing was generated for a channel that is not there, and nothing was claimed.
        assert gen.calls == []
        async with sessions.begin() as s:
            assert (await s.scalars(select(DailyPost))).all() == []
        # A new channel, set after today's hour: posted from tomorrow on.
        other = 2001
        fake_discord.add_channel(other)
        await fake_discord.dispatch(
            "CHANNEL_CREATE", fake_discord.channel_payload(fake_discord.guild_id, other, 1)
        )
        await fake_discord.wait_for(lambda: running.bot.get_channel(other) is not None)
        text = await answer(fake_discord, admin, "daily set", channel=ChannelOption(other), hour=9)
        assert "⚠️" not in text and "tomorrow" in text
        assert await scheduler.tick() == 0
        clock.now = at(9, day=DAY + timedelta(days=1))
        assert await scheduler.tick() == 1
    assert channel_posts(fake_discord, channel) == []
    assert len(channel_posts(fake_discord, other)) == 1


async def test_missing_permissions_get_no_post_and_a_reason(
    fake_discord: FakeDiscord, sessions: SessionMaker, tmp_path: Path, clock: Clock
) -> None:
    """Known from the start (the bot's cached permissions): said at `daily set`, nothing
    generated. Lost after the start (Discord refuses the post): the genre is released."""
    no_reactions, no_send = fake_discord.channel_id, 2001
    fake_discord.add_channel(no_send)
    fake_discord.no_reactions_in.add(no_reactions)
    gen = ScriptedGenerator()
    gen.enqueue(["glass reggae"])
    admin = fake_discord.member("admin")
    async with running_bot(make_config(tmp_path), sessions, gen) as running:
        scheduler = scheduler_of(running)
        text = await answer(
            fake_discord, admin, "daily set", channel=ChannelOption(no_reactions), hour=9
        )
        assert "⚠️" in text and "Add Reactions" in text
        clock.now = at(9)
        assert await scheduler.tick() == 0
        assert gen.calls == [] and channel_posts(fake_discord, no_reactions) == []
        assert "Add Reactions" in await stats_field(fake_discord, admin)

        fake_discord.no_messages_in.add(no_send)  # taken away while the bot runs
        text = await answer(
            fake_discord, admin, "daily set", channel=ChannelOption(no_send), hour=9
        )
        assert "⚠️" not in text  # the bot cannot know yet
        assert await scheduler.tick() == 0
        [refused] = channel_posts(fake_discord, no_send)
        assert refused.status == 403
        schedule = await daily_store.get_schedule(sessions, fake_discord.guild_id)
        assert schedule is not None and schedule.problem is not None
        assert "Send Messages" in schedule.problem and schedule.retry_at == at(10)
        async with sessions.begin() as s:
            # The genre went back (it may be issued again) and the day is free to claim.
            assert (await s.scalars(select(Generation))).all() == []
            assert (await s.scalars(select(DailyPost))).all() == []


@pytest.mark.timeout(90)
async def test_two_bots_racing_post_once_a_day(
    fake_discord: FakeDiscord, both_stores: SessionMaker, tmp_path: Path, clock: Clock
) -> None:
    """Two bot processes that both see the server (here in one process, each with its own
    client, scheduler and holder id) check at the same moments: one post a day."""
    channel = fake_discord.channel_id
    await daily_store.set_schedule(
        both_stores, fake_discord.guild_id, channel_id=channel, hour=9, set_by=None, now=at(0)
    )
    gens = [ScriptedGenerator(), ScriptedGenerator()]
    for gen in gens:
        gen.enqueue(["first light", "second wind", "third rail"])
    async with (
        running_bot(make_config(tmp_path / "a"), both_stores, gens[0]) as a,
        running_bot(make_config(tmp_path / "b"), both_stores, gens[1]) as b,
    ):
        schedulers = [scheduler_of(a), scheduler_of(b)]
        assert schedulers[0].holder != schedulers[1].holder
        for now in (at(9), at(9, 1), at(12), at(9, day=DAY + timedelta(days=1))):
            clock.now = now
            for _ in range(3):
                await asyncio.gather(*(s.tick() for s in schedulers))
    assert len(channel_posts(fake_discord, channel)) == 2
    async with both_stores.begin() as s:
        rows = (await s.execute(select(DailyPost.day, DailyPost.message_id))).all()
    assert sorted(d for d, _ in rows) == [DAY, DAY + timedelta(days=1)]
    assert all(m is not None for _, m in rows)
