"""Cog callbacks called directly with specced fakes (no gateway, no HTTP)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock, create_autospec

import discord
import pytest
from discord import app_commands

from bot.app import user_message
from bot.cogs.common import NotAdminError, require_admin
from bot.cogs.generation import GenerationCog, NothingGeneratedError, clean_like
from bot.cogs.voting import VotingCog
from bot.errors import InputError, UserQueueFullError
from bot.posting import PostsInFlight
from bot.queue import FairQueue, QueueSettings
from bot.service import GenreRequest, GenreService
from bot.store.generations import generation_by_message
from bot.store.votes import tally
from tests.bot.fakes import ScriptedGenerator, make_config

GUILD, CHANNEL = 1000, 2000


class FakeBot:
    """The attributes of MicrogenreBot the cogs use."""

    def __init__(self, tmp_path: Path, sessions: Any, generator: ScriptedGenerator, **bot_cfg: Any):
        self.config = make_config(tmp_path, **bot_cfg)
        self.sessions = sessions
        self.service = GenreService(
            generator, sessions, queue=FairQueue(QueueSettings.from_config(self.config.bot))
        )
        self.posts_in_flight = PostsInFlight()
        self.genre_group = app_commands.Group(name="genre", description="g")
        self.user = MagicMock(spec=discord.ClientUser, id=1)
        self.partial = create_autospec(discord.PartialMessage, instance=True)
        self.partial.add_reaction = AsyncMock()
        channel = MagicMock(spec=discord.PartialMessageable)
        channel.get_partial_message.return_value = self.partial
        self.get_partial_messageable = MagicMock(return_value=channel)
        self.get_user = MagicMock(return_value=None)
        self.closing = False

    def track_work(self) -> Any:
        import contextlib

        return contextlib.nullcontext()


def fake_interaction(user_id: int = 42, first_message_id: int = 5000) -> Any:
    interaction = MagicMock(spec=discord.Interaction)
    interaction.guild_id = GUILD
    interaction.channel_id = CHANNEL
    interaction.user = MagicMock(spec=discord.Member, id=user_id)
    interaction.extras = {}
    interaction.response = MagicMock(spec=discord.InteractionResponse)
    interaction.response.defer = AsyncMock()
    interaction.edit_original_response = AsyncMock()
    interaction.followup = MagicMock(spec=discord.Webhook)
    ids = iter(range(first_message_id, first_message_id + 1000))

    async def send(content: str = "", **kwargs: Any) -> Any:
        message = MagicMock(spec=discord.WebhookMessage, id=next(ids), content=content)
        message.channel = MagicMock(id=CHANNEL)
        return message

    interaction.followup.send = AsyncMock(side_effect=send)
    return interaction


async def test_new_defers_first_posts_and_records(sessions: Any, tmp_path: Path) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["glass harp dub", "polder grime"])
    bot = FakeBot(tmp_path, sessions, gen)
    cog = GenerationCog(bot)  # type: ignore[arg-type]
    interaction = fake_interaction()
    await cog.new(interaction, count=2, like=None, weirdness=1)
    interaction.response.defer.assert_awaited_once_with(thinking=True)
    sent = [c.args[0] for c in interaction.followup.send.await_args_list]
    assert sent == ["🎵 **glass harp dub**", "🎵 **polder grime**"]
    await cog.pacer.close()  # the reactions are paced, after the command: let them drain
    assert [c.args[0] for c in bot.partial.add_reaction.await_args_list] == ["👍", "👎", "⭐"] * 2
    ref = await generation_by_message(sessions, 5000)
    assert ref is not None and ref.genre_name == "glass harp dub" and ref.user_id == 42
    # Weirdness picks a plausibility band at the pipeline's own temperature.
    assert gen.calls[0]["weirdness"] == 1 and gen.calls[0]["temperature"] is None


async def test_new_waits_in_line_instead_of_refusing(sessions: Any, tmp_path: Path) -> None:
    gen = ScriptedGenerator()
    gen.gate = asyncio.Event()
    gen.enqueue([f"genre number {i}" for i in range(12)])
    bot = FakeBot(tmp_path, sessions, gen)
    cog = GenerationCog(bot)  # type: ignore[arg-type]
    interactions = [fake_interaction(user, 10_000 * user) for user in range(1, 13)]
    tasks = [asyncio.create_task(cog.new(i, count=1, like=None, weirdness=3)) for i in interactions]
    await asyncio.sleep(0.05)
    gen.gate.set()
    await asyncio.gather(*tasks)  # nobody refused
    posted = [c.args[0] for i in interactions for c in i.followup.send.await_args_list if c.args]
    assert sorted(posted) == sorted(f"🎵 **genre number {i}**" for i in range(12))


async def test_new_shows_the_place_in_the_bots_line(sessions: Any, tmp_path: Path) -> None:
    gen = ScriptedGenerator()
    gen.gate = asyncio.Event()
    gen.enqueue(["a b", "c d", "e f"])
    bot = FakeBot(tmp_path, sessions, gen, generation_slots=1)
    cog = GenerationCog(bot)  # type: ignore[arg-type]
    interactions = [fake_interaction(user, 10_000 * user) for user in (1, 2, 3)]
    tasks = []
    for i in interactions:
        tasks.append(asyncio.create_task(cog.new(i, count=1, like=None, weirdness=3)))
        await asyncio.sleep(0.02)
    edits = [
        [c.kwargs.get("content") for c in i.edit_original_response.await_args_list]
        for i in interactions
    ]
    assert edits[1] == ["⏳ Waiting for the generator: you are number 1 in line."]
    assert edits[2] == ["⏳ Waiting for the generator: you are number 2 in line."]
    gen.gate.set()
    await asyncio.gather(*tasks)


async def test_new_refuses_a_users_request_beyond_the_cap(sessions: Any, tmp_path: Path) -> None:
    gen = ScriptedGenerator()
    gen.gate = asyncio.Event()
    gen.enqueue(["a b", "c d"])
    bot = FakeBot(tmp_path, sessions, gen, user_queue_cap=1)
    cog = GenerationCog(bot)  # type: ignore[arg-type]
    first = asyncio.create_task(cog.new(fake_interaction(1), count=1, like=None, weirdness=3))
    await asyncio.sleep(0.05)
    second = fake_interaction(1)
    with pytest.raises(UserQueueFullError) as refused:
        await cog.new(second, count=1, like=None, weirdness=3)
    second.response.defer.assert_awaited_once()  # deferred before refusing
    assert "about" in (user_message(refused.value) or "")
    gen.gate.set()
    await first


async def test_new_reports_when_nothing_new_is_left(sessions: Any, tmp_path: Path) -> None:
    bot = FakeBot(tmp_path, sessions, ScriptedGenerator())
    cog = GenerationCog(bot)  # type: ignore[arg-type]
    with pytest.raises(NothingGeneratedError):
        await cog.new(fake_interaction(), count=1, like=None, weirdness=3)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("  Dream  Pop ", "dream pop"), ("", None), (None, None), ("Sigur Rós", "sigur rós")],
)
def test_clean_like_accepts(raw: str | None, expected: str | None) -> None:
    assert clean_like(raw, 48) == expected


@pytest.mark.parametrize("raw", ["x" * 49, "<@123>", "**bold**", "line\u0000break"])
def test_clean_like_refuses(raw: str) -> None:
    with pytest.raises(InputError):
        clean_like(raw, 48)


def reaction(
    user_id: int, message_id: int, emoji: str, *, add: bool = True, bot: bool = False
) -> Any:
    data: dict[str, Any] = {
        "user_id": str(user_id),
        "channel_id": str(CHANNEL),
        "message_id": str(message_id),
        "guild_id": str(GUILD),
        "burst": False,
        "type": 0,
    }
    event = discord.RawReactionActionEvent(
        data,  # type: ignore[arg-type]
        discord.PartialEmoji(name=emoji),
        "REACTION_ADD" if add else "REACTION_REMOVE",
    )
    if add:
        event.member = MagicMock(spec=discord.Member, bot=bot)
    return event


async def test_voting_cog_rules(sessions: Any, tmp_path: Path) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["moss waltz"])
    bot = FakeBot(tmp_path, sessions, gen)
    await GenerationCog(bot).new(fake_interaction(), count=1, like=None, weirdness=3)  # type: ignore[arg-type]
    ref = await generation_by_message(sessions, 5000)
    assert ref is not None
    cog = VotingCog(bot)  # type: ignore[arg-type]
    add, remove = cog.on_raw_reaction_add, cog.on_raw_reaction_remove
    events = [
        add(reaction(7, 5000, "👍")),
        add(reaction(7, 5000, "👍")),  # duplicate
        add(reaction(8, 5000, "👍🏾")),  # skin tone counts as 👍
        add(reaction(9, 5000, "👎")),
        add(reaction(1, 5000, "👍")),  # the bot itself
        add(reaction(10, 5000, "👍", bot=True)),  # another bot
        add(reaction(7, 9999, "👍")),  # not a genre message
        add(reaction(7, 5000, "⭐")),
        add(reaction(7, 5000, "⭐")),
    ]
    # Handlers race like discord.py's tasks do.
    await asyncio.gather(*events)
    assert await tally(sessions, ref.id) == {"up": 2, "down": 1, "score": 1, "favorites": 1}
    await asyncio.gather(
        add(reaction(9, 5000, "👍")),  # switch: 👎 → 👍
        remove(reaction(9, 5000, "👎", add=False)),  # the stale 👎 removal keeps the 👍
        remove(reaction(8, 5000, "👍🏾", add=False)),  # each skin tone is its own reaction
        remove(reaction(7, 5000, "⭐", add=False)),
    )
    assert await tally(sessions, ref.id) == {"up": 2, "down": 0, "score": 2, "favorites": 0}


def test_error_messages_for_users() -> None:
    from model.worker.errors import WorkerBusyError

    busy = WorkerBusyError(12.0)
    wrapped = app_commands.CommandInvokeError(MagicMock(), busy)
    assert user_message(wrapped) == str(busy)
    assert user_message(app_commands.CommandOnCooldown(MagicMock(), 9.6)) == (
        "Slow down a little: try again in 10 s."
    )
    assert "Manage Server" in (user_message(NotAdminError()) or "")
    forbidden = discord.Forbidden(MagicMock(status=403, reason="x"), {"message": "no", "code": 1})
    assert "missing a permission" in (user_message(forbidden) or "")
    assert user_message(app_commands.CommandInvokeError(MagicMock(), KeyError("x"))) is None


def test_require_admin_checks_the_real_permissions() -> None:
    interaction = MagicMock(spec=discord.Interaction)
    interaction.permissions = discord.Permissions(send_messages=True)
    with pytest.raises(NotAdminError):
        require_admin(interaction)
    interaction.permissions = discord.Permissions(manage_guild=True)
    assert require_admin(interaction)
    interaction.permissions = discord.Permissions(administrator=True)
    assert require_admin(interaction)


async def test_unposted_genres_are_released(sessions: Any, tmp_path: Path) -> None:
    from bot.store.generations import issued_names

    gen = ScriptedGenerator()
    gen.enqueue(["first light dub", "second sight polka"])
    bot = FakeBot(tmp_path, sessions, gen)
    cog = GenerationCog(bot)  # type: ignore[arg-type]
    interaction = fake_interaction()
    sent = interaction.followup.send.side_effect

    async def fail_second(content: str = "", **kwargs: Any) -> Any:
        if "second" in content:
            raise discord.HTTPException(MagicMock(status=500, reason="boom"), "boom")
        return await sent(content, **kwargs)

    interaction.followup.send = AsyncMock(side_effect=fail_second)
    with pytest.raises(discord.HTTPException):
        await cog.new(interaction, count=2, like=None, weirdness=3)
    assert await issued_names(sessions, GUILD) == {"first light dub"}
    gen.enqueue(["second sight polka"])
    again = await bot.service.deliver(GenreRequest(1, guild_id=GUILD, user_id=1))
    assert again.genres == ["second sight polka"]
