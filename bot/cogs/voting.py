"""Votes and favorites from raw reaction events (messages need not be in the cache).

Only reactions on the bot's genre messages count (looked up by message id in the store); bots,
the bot itself included, are ignored; 👍/👎 set the user's one vote (the latest wins), ⭐ marks
a favorite, removing a reaction withdraws it. The store functions are idempotent, so duplicated
or racing events never double-count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.cogs.common import DOWNVOTE, FAVORITE, UPVOTE
from bot.store.generations import generation_by_message
from bot.store.votes import add_favorite, remove_favorite, remove_vote, set_vote

if TYPE_CHECKING:
    from bot.app import MicrogenreBot

log = logging.getLogger(__name__)


def reaction_kind(emoji: discord.PartialEmoji) -> str | None:
    """``"up"``, ``"down"``, ``"favorite"`` or None (skin tones count as the base emoji).

    >>> reaction_kind(discord.PartialEmoji(name="👍🏽"))
    'up'
    >>> reaction_kind(discord.PartialEmoji(name="🎸")) is None
    True
    """
    if emoji.id is not None or not emoji.name:
        return None
    if emoji.name.startswith(UPVOTE):
        return "up"
    if emoji.name.startswith(DOWNVOTE):
        return "down"
    if emoji.name == FAVORITE:
        return "favorite"
    return None


class VotingCog(commands.Cog):
    def __init__(self, bot: MicrogenreBot) -> None:
        self.bot = bot
        # discord.py runs every event handler as its own task; one lock per (message, user),
        # taken before the first await, keeps that user's events on that message in order
        # (an add followed by a remove must not be applied the other way round).
        self._locks: dict[tuple[int, int], asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def _ordered(self, payload: discord.RawReactionActionEvent) -> AsyncIterator[None]:
        key = (payload.message_id, payload.user_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]

    def _ignored(self, payload: discord.RawReactionActionEvent) -> bool:
        if payload.guild_id is None:
            return True
        me = self.bot.user
        if me is not None and payload.user_id == me.id:
            return True
        if payload.member is not None and payload.member.bot:
            return True
        cached = self.bot.get_user(payload.user_id)
        return bool(cached is not None and cached.bot)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        kind = reaction_kind(payload.emoji)
        if kind is None or self._ignored(payload):
            return
        async with self._ordered(payload):
            await self._added(payload, kind)

    async def _added(self, payload: discord.RawReactionActionEvent, kind: str) -> None:
        ref = await generation_by_message(self.bot.sessions, payload.message_id)
        if ref is None or ref.guild_id != payload.guild_id:
            return
        if kind == "favorite":
            await add_favorite(self.bot.sessions, ref.id, payload.user_id)
        else:
            await set_vote(self.bot.sessions, ref.id, payload.user_id, 1 if kind == "up" else -1)
        log.debug("%s on %r by %s", kind, ref.genre_name, payload.user_id)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        kind = reaction_kind(payload.emoji)
        if kind is None or self._ignored(payload):
            return
        async with self._ordered(payload):
            await self._removed(payload, kind)

    async def _removed(self, payload: discord.RawReactionActionEvent, kind: str) -> None:
        ref = await generation_by_message(self.bot.sessions, payload.message_id)
        if ref is None or ref.guild_id != payload.guild_id:
            return
        if kind == "favorite":
            await remove_favorite(self.bot.sessions, ref.id, payload.user_id)
        else:
            await remove_vote(self.bot.sessions, ref.id, payload.user_id, 1 if kind == "up" else -1)


async def setup(bot: MicrogenreBot) -> None:
    await bot.add_cog(VotingCog(bot))
