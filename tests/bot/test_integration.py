"""The real discord.py client against the fake Discord: /genre new, votes, leaderboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bot.fakes import ScriptedGenerator, make_config, running_bot
from tests.fake_discord import FakeDiscord


async def test_genre_new_end_to_end(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    gen = ScriptedGenerator()
    gen.enqueue(["glitch polka", "finnish doom jazz", "harbour shoegaze"])
    async with running_bot(config, sessions, gen):
        alice = fake_discord.member("alice")
        inter = await fake_discord.invoke(alice, "genre", "new", {"count": 3})
        await fake_discord.wait_for(lambda: len(fake_discord.followups(inter)) == 3)
        await fake_discord.wait_for(
            lambda: len(fake_discord.calls_matching("PUT", "/reactions/")) == 9
        )
        print(fake_discord.calls)
