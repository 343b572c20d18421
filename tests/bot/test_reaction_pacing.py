"""The bot lives within Discord's rate limits (the fake enforces them): vote reactions come
from a paced per-channel queue, and a failed reaction never fails a posted genre."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.cogs.common import REACTIONS
from bot.store.models import Generation
from tests.bot.fakes import ScriptedGenerator, make_config, running_bot
from tests.fake_discord import FakeDiscord

pytestmark = pytest.mark.timeout(90)

SECOND_CHANNEL = 2001


def genre_messages(fake: FakeDiscord, interaction: Any) -> list[int]:
    return [int(m["id"]) for m in fake.followups(interaction) if not m.get("_ephemeral")]


def error_texts(fake: FakeDiscord, interaction: Any) -> list[str]:
    """Every ⚠️ reply or follow-up of ``interaction`` (how the bot reports a failed command)."""
    texts = []
    for call in fake.calls:
        if interaction.token not in call.path or not isinstance(call.json, dict):
            continue
        body = call.json.get("data") if "data" in call.json else call.json
        content = str((body or {}).get("content") or "")
        if content.startswith("⚠️"):
            texts.append(content)
    return texts


def has_all_reactions(fake: FakeDiscord, message_id: int) -> bool:
    return set(fake.reactions.get(message_id, {})) == set(REACTIONS)


async def test_a_rate_limited_reaction_does_not_fail_the_command(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["tidal crunk"])
    # discord.py retries a 429 five times, then raises HTTPException(429): force that.
    fake_discord.force_rate_limit("PUT", "/reactions/", times=5, retry_after=0.01)
    async with running_bot(make_config(tmp_path), sessions, gen):
        inter = await fake_discord.invoke(fake_discord.member("ann"), "genre", "new")
        [message_id] = await fake_discord.wait_for(lambda: genre_messages(fake_discord, inter))
        # The other two reactions still come.
        await fake_discord.wait_for(lambda: len(fake_discord.reactions.get(message_id, {})) == 2)
        original = fake_discord.original(inter)
        assert original is not None and not original.get("_deleted")
        assert "a new micro-genre" in original["content"]
        await asyncio.sleep(0.3)
    assert fake_discord.rate_limited["forced"] == 5
    assert error_texts(fake_discord, inter) == []
    async with sessions.begin() as s:
        [generation] = (await s.execute(select(Generation))).scalars().all()
    assert generation.message_id == message_id  # issued and recorded


async def test_forbidden_reactions_are_skipped_with_one_note(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["harbour gabber", "velvet skronk"])
    async with running_bot(make_config(tmp_path), sessions, gen):
        fake_discord.no_reactions_in.add(fake_discord.channel_id)
        # Discord's app_permissions still allows it (changed after the interaction was made).
        inter = await fake_discord.invoke(
            fake_discord.member("ann"), "genre", "new", {"count": 2}, app_permissions=(1 << 50) - 1
        )
        await fake_discord.wait_for(lambda: len(genre_messages(fake_discord, inter)) == 2)
        note = await fake_discord.wait_for(
            lambda: [m["content"] for m in fake_discord.followups(inter) if m.get("_ephemeral")]
        )
        assert "cannot add reactions" in note[0]
        await asyncio.sleep(0.6)
        assert len([m for m in fake_discord.followups(inter) if m.get("_ephemeral")]) == 1
        # Known from app_permissions: no doomed requests at all.
        before = len(fake_discord.calls_matching("PUT", "/reactions/"))
        gen.enqueue(["ash lounge"])
        again = await fake_discord.invoke(fake_discord.member("ben"), "genre", "new")
        await fake_discord.wait_for(
            lambda: [m for m in fake_discord.followups(again) if m.get("_ephemeral")]
        )
        assert len(fake_discord.calls_matching("PUT", "/reactions/")) == before
    assert error_texts(fake_discord, inter) == error_texts(fake_discord, again) == []


async def test_burst_over_two_channels_within_the_limits(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    fake_discord.add_channel(SECOND_CHANNEL)
    gen = ScriptedGenerator()
    gen.enqueue([f"burst genre {i}" for i in range(40)])
    config = make_config(tmp_path)
    async with running_bot(config, sessions, gen) as running:
        users = [fake_discord.member(f"user{i}") for i in range(40)]
        channels = [fake_discord.channel_id, SECOND_CHANNEL]
        interactions = await asyncio.gather(
            *(
                fake_discord.invoke(u, "genre", "new", channel_id=channels[n % 2])
                for n, u in enumerate(users)
            )
        )
        await fake_discord.wait_for(
            lambda: all(len(genre_messages(fake_discord, i)) == 1 for i in interactions),
            within=20,
        )
        # Every command is done once its genre is posted; the reactions trickle in after.
        cog = running.bot.get_cog("GenerationCog")
        assert cog.pacer.pending > 0
        posted = [genre_messages(fake_discord, i)[0] for i in interactions]
        await fake_discord.wait_for(
            lambda: all(has_all_reactions(fake_discord, m) for m in posted), within=60
        )
    latencies = [fake_discord.ack_latencies()[i.token] for i in interactions]
    assert all(lat is not None and lat < 3.0 for lat in latencies)
    assert all(error_texts(fake_discord, i) == [] for i in interactions)
    assert fake_discord.too_many_requests <= 2
    # Reactions stayed under about 4/s in each channel.
    for channel in channels:
        times = [c.at for c in fake_discord.calls_matching("PUT", f"/channels/{channel}/")]
        assert len(times) == 60
        assert times[-1] - times[0] >= 59 * 0.25 * 0.9
