"""Downtime loses nothing: the real bot (real, unmodified discord.py) against the fake Discord.

Reactions added, removed and switched while the bot was down, or while its gateway connection
was cut, reach the store when it starts or resumes; a genre reserved by a process killed before
it posted the message is released at start; Discord's rate limits are honoured meanwhile and
commands are answered.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.cogs.voting import vote_value
from bot.store.generations import generation_by_message, reserve_generations
from bot.store.models import Favorite, Generation, Genre, Vote, utcnow
from tests.bot.fakes import ScriptedGenerator, make_config, running_bot
from tests.bot.test_integration import genre_message_ids, new_genres
from tests.fake_discord import FakeDiscord
from tests.fake_discord.limits import Limit, RateLimits

pytestmark = pytest.mark.timeout(90)


async def reconciled(running: Any, fake: FakeDiscord, runs: int = 1) -> Any:
    """Wait for the ``runs``-th reconciliation of this bot to end; returns its report."""
    reconciler = running.bot.get_cog("VotingCog").reconciler
    await fake.wait_for(lambda: reconciler.runs >= runs, within=60)
    await reconciler.wait_idle()
    return reconciler.last_report


def shown_on(fake: FakeDiscord, message_id: int) -> tuple[dict[int, int], set[int]]:
    """The votes and favorites the people's reactions on a message make."""
    kinds: dict[int, set[int]] = {}
    favorites: set[int] = set()
    for emoji, users in fake.reactions.get(message_id, {}).items():
        for user_id in users:
            if fake.users[user_id].bot:
                continue
            if emoji == "⭐":
                favorites.add(user_id)
            elif (value := vote_value(emoji)) is not None:
                kinds.setdefault(user_id, set()).add(value)
    # Nobody here shows both 👍 and 👎 (which came last is not something Discord says).
    assert all(len(k) == 1 for k in kinds.values())
    return {u: k.pop() for u, k in kinds.items()}, favorites


async def stored_on(sessions: Any, message_id: int) -> tuple[dict[int, int], set[int]]:
    ref = await generation_by_message(sessions, message_id)
    assert ref is not None
    async with sessions.begin() as session:
        votes = await session.execute(
            select(Vote.user_id, Vote.value).where(Vote.generation_id == ref.id)
        )
        favorites = await session.scalars(
            select(Favorite.user_id).where(Favorite.generation_id == ref.id)
        )
        return {int(u): int(v) for u, v in votes.all()}, {int(u) for u in favorites.all()}


async def reserve_unposted(sessions: Any, fake: FakeDiscord, name: str, age: timedelta) -> int:
    """What a process killed between reserving and posting leaves behind."""
    [r] = await reserve_generations(
        sessions,
        [name],
        guild_id=fake.guild_id,
        channel_id=fake.channel_id,
        user_id=1,
        model_name="m",
        model_version_id=None,
        options={},
    )
    assert r.generation_id is not None
    async with sessions.begin() as session:
        await session.execute(
            update(Generation)
            .where(Generation.id == r.generation_id)
            .values(created_at=utcnow() - age)
        )
    return r.generation_id


async def genre_names(sessions: Any) -> set[str]:
    async with sessions.begin() as session:
        rows = await session.scalars(select(Genre.display_name).join(Generation))
        return set(rows.all())


async def test_after_downtime_the_store_equals_the_reactions(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_discord
    closed_channel = 2001
    fake.add_channel(closed_channel)
    config = make_config(tmp_path)
    gen = ScriptedGenerator()
    gen.enqueue(["tidal house", "velvet sludge", "moss trap", "gone gaze", "hidden polka"])
    ann, ben, cat, dan, eve = (fake.member(n) for n in ("ann", "ben", "cat", "dan", "eve"))
    robot = fake.member("robot", bot=True)
    async with running_bot(config, sessions, gen) as running:
        await reconciled(running, fake)
        tidal, velvet, moss, gone = await new_genres(fake, ann, 4)
        hidden_inter = await fake.invoke(
            ann, "genre", "new", {"count": 1}, channel_id=closed_channel
        )
        [hidden] = await fake.wait_for(lambda: genre_message_ids(fake, hidden_inter))
        await fake.wait_for(lambda: len(fake.reactions.get(hidden, {})) == 3)
        await fake.react(ann, tidal, "👍")
        await fake.react(ben, tidal, "👎")
        await fake.react(cat, velvet, "⭐")
        await fake.react(dan, velvet, "👍")
        await fake.react(ann, hidden, "👍")
        await fake.wait_for(lambda: True)
        await asyncio.sleep(0.3)
        assert await stored_on(sessions, tidal) == ({ann.id: 1, ben.id: -1}, set())
    assert fake.identify_count == 1

    # The bot is down: Discord changes, the bot hears nothing.
    await fake.react(ann, tidal, "👍", add=False)  # ann switches to 👎
    await fake.react(ann, tidal, "👎")
    await fake.react(ben, tidal, "👎", add=False)  # ben withdraws
    await fake.react(cat, velvet, "⭐", add=False)  # cat un-stars velvet, stars moss
    await fake.react(cat, moss, "⭐")
    await fake.react(dan, velvet, "👍", add=False)  # dan switches with a skin tone
    await fake.react(dan, velvet, "👎🏽")
    await fake.react(eve, moss, "👍")
    await fake.react(robot, moss, "👎")  # bots never count
    crowd = [fake.member(f"fan{i}") for i in range(120)]  # more than one page of users
    for fan in crowd:
        await fake.react(fan, moss, "👍")
    await fake.react(eve, gone, "👍")
    fake.delete_message(gone)
    fake.no_history_in.add(closed_channel)
    await fake.react(ben, hidden, "👍")
    stale = await reserve_unposted(sessions, fake, "ghost polka", timedelta(hours=1))
    fresh = await reserve_unposted(sessions, fake, "busy polka", timedelta(minutes=1))
    calls_before = len(fake.calls)

    caplog.set_level("INFO", logger="bot")
    async with running_bot(config, sessions, ScriptedGenerator()) as running:
        report = await reconciled(running, fake)
    for message_id in (tidal, velvet, moss):
        assert await stored_on(sessions, message_id) == shown_on(fake, message_id)
    assert await stored_on(sessions, tidal) == ({ann.id: -1}, set())
    votes, favorites = await stored_on(sessions, moss)
    assert len(votes) == 121 and favorites == {cat.id} and robot.id not in votes
    # Skipped, never fatal: the deleted message, the channel the bot may no longer read.
    assert await stored_on(sessions, hidden) == ({ann.id: 1}, set())
    assert report.messages == 5 and report.skipped == 2 and report.failed == 0
    assert f"no access to channel {closed_channel}" in caplog.text
    assert f"message {gone} in channel {fake.channel_id} is gone" in caplog.text
    # The stale reservation was released at start; the recent one may still be posted.
    names = await genre_names(sessions)
    assert "ghost polka" not in names and "busy polka" in names
    async with sessions.begin() as session:
        ids = set((await session.scalars(select(Generation.id))).all())
    assert stale not in ids and fresh in ids
    # Read through the real endpoints, politely: no 429, pages of at most 100 users.
    reads = [c for c in fake.calls[calls_before:] if c.method == "GET" and "/messages/" in c.path]
    assert reads and all(c.status in (200, 403, 404) for c in reads)
    pages = [c for c in reads if "/reactions/" in c.path]
    assert all(1 <= int(c.query["limit"]) <= 100 for c in pages)
    assert any(c.query.get("after") for c in pages)


async def test_a_resume_reconciles_what_the_cut_connection_missed(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    fake = fake_discord
    gen = ScriptedGenerator()
    gen.enqueue(["harbour shoegaze"])
    ann, ben = fake.member("ann"), fake.member("ben")
    async with running_bot(make_config(tmp_path), sessions, gen) as running:
        await reconciled(running, fake)
        [message] = await new_genres(fake, ann, 1)
        await fake.react(ann, message, "👍")
        await fake.wait_for(lambda: True)
        await asyncio.sleep(0.3)
        assert await stored_on(sessions, message) == ({ann.id: 1}, set())

        await fake.cut_gateway()
        await fake.react(ann, message, "👍", add=False)  # missed: nobody is connected
        await fake.react(ann, message, "👎")
        await fake.react(ben, message, "⭐")
        fake.reopen_gateway()
        await reconciled(running, fake, runs=2)
        assert fake.resume_count == 1 and fake.identify_count == 1
        assert await stored_on(sessions, message) == ({ann.id: -1}, {ben.id})
        # The live events carry on from there.
        await fake.react(ann, message, "👎", add=False)
        await fake.wait_for(lambda: True)
        await asyncio.sleep(0.3)
        assert await stored_on(sessions, message) == ({}, {ben.id})


async def test_rate_limits_are_honoured_and_commands_answered_meanwhile(
    monkeypatch: pytest.MonkeyPatch, sessions: Any, tmp_path: Path
) -> None:
    fake = FakeDiscord(limits=RateLimits(reaction_users=Limit(1, 0.5)))
    await fake.start()
    fake.patch(monkeypatch)
    try:
        config = make_config(tmp_path)
        gen = ScriptedGenerator()
        gen.enqueue([f"paced genre {i}" for i in range(4)])
        voters = [fake.member(f"voter{i}") for i in range(3)]
        async with running_bot(config, sessions, gen) as running:
            await reconciled(running, fake)
            messages = await new_genres(fake, voters[0], 4)
        for message in messages:  # while the bot is down
            for voter in voters:
                await fake.react(voter, message, "👍")
        fake.force_rate_limit("GET", "/reactions/", times=2, retry_after=0.4)
        calls_before, overruns_before = len(fake.calls), fake.rate_limited["user"]
        async with running_bot(config, sessions, ScriptedGenerator()) as running:
            reconciler = running.bot.get_cog("VotingCog").reconciler
            await fake.wait_for(lambda: fake.rate_limited["forced"] == 2)
            # A command during the reconciliation is answered at once.
            top = await fake.invoke(voters[1], "genre", "top", {"period": "all"})
            await fake.wait_for(lambda: fake.original(top) is not None)
            latency = fake.ack_latencies()[top.token]
            assert latency is not None and latency < 1.0
            assert reconciler.runs == 0 and not reconciler.idle  # still reconciling
            await reconciled(running, fake)
        for message in messages:
            assert await stored_on(sessions, message) == shown_on(fake, message)
        pages = [
            c for c in fake.calls[calls_before:] if c.method == "GET" and "/reactions/" in c.path
        ]
        # The two 429s were waited out (retry_after), and the bucket was never overrun.
        assert [c.status for c in pages].count(429) == 2
        assert fake.rate_limited["user"] == overruns_before
        for limited, retry in itertools.pairwise(pages):
            if limited.status == 429:
                assert retry.at - limited.at >= 0.4
        gaps = [b.at - a.at for a, b in itertools.pairwise(pages) if a.status == 200]
        assert min(gaps) >= 0.45  # one per 0.5 s, as the bucket allows
    finally:
        await fake.stop()
