"""A genre another process issued in this server first: the bot posts a different one.

The service's set of issued names is a cache of this process; the unique constraint on
``(guild_id, genre_id)`` decides. A genre that comes back "issued" at reservation stays in the
cache (it is issued here) and the command asks for a replacement instead of failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.store.generations import reserve_generations
from tests.bot.fakes import ScriptedGenerator, make_config, running_bot
from tests.fake_discord import FakeDiscord

pytestmark = pytest.mark.timeout(60)


def genre_texts(fake: FakeDiscord, interaction: Any) -> list[str]:
    return [m["content"] for m in fake.followups(interaction) if not m.get("_ephemeral")]


async def issue_elsewhere(sessions: Any, name: str, guild_id: int) -> None:
    """What another bot process (or `microgenre generate`) does: reserve ``name`` in the store."""
    reserved = await reserve_generations(
        sessions,
        [name],
        guild_id=guild_id,
        channel_id=1,
        user_id=1,
        model_name="other-process",
        model_version_id=None,
        options={},
    )
    assert reserved[0].generation_id is not None


async def test_a_genre_issued_by_another_process_is_replaced(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["moss waltz"])
    async with running_bot(make_config(tmp_path), sessions, gen):
        alice = fake_discord.member("alice")
        first = await fake_discord.invoke(alice, "genre", "new", {"count": 1})
        await fake_discord.wait_for(lambda: genre_texts(fake_discord, first))
        # This process has its cache of the server's names now; another one issues two more.
        await issue_elsewhere(sessions, "velvet dub", fake_discord.guild_id)
        await issue_elsewhere(sessions, "fog cumbia", fake_discord.guild_id)
        gen.enqueue(["velvet dub", "glass polka", "fog cumbia", "tin shoegaze"])
        second = await fake_discord.invoke(alice, "genre", "new", {"count": 2})
        await fake_discord.wait_for(lambda: len(genre_texts(fake_discord, second)) == 2)
        # The names taken elsewhere stay excluded from later requests.
        gen.enqueue(["velvet dub", "harbour polka"])
        third = await fake_discord.invoke(alice, "genre", "new", {"count": 1})
        await fake_discord.wait_for(lambda: genre_texts(fake_discord, third))

    assert genre_texts(fake_discord, second) == ["🎵 **glass polka**", "🎵 **tin shoegaze**"]
    assert genre_texts(fake_discord, third) == ["🎵 **harbour polka**"]
    assert "velvet dub" in gen.calls[-1]["exclude"]
