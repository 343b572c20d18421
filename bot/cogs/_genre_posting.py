"""Posting genre messages: one message per genre, with its buttons, recorded in the store, its
vote reactions queued; genres whose message never went out are released.

`/genre new` and `/genre blend` post follow-ups of their interaction; a button click posts
replies to the genre's message (``bot/cogs/_genre_clicks.py``). Both go through
:class:`GenrePoster`, which owns the one :class:`~bot.pacing.ReactionPacer` of the process, so
every vote reaction shares the per-channel pace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.cogs._genre_buttons import genre_view
from bot.cogs.common import REACTIONS
from bot.errors import MicrogenreError
from bot.pacing import GlobalPace, MessagePacer, OnForbidden, ReactionJob, ReactionPacer
from bot.store.generations import Reserved, attach_message
from bot.text import MESSAGE, clip, escape

if TYPE_CHECKING:
    from bot.app import MicrogenreBot

# Genre names are model text and headers repeat user text: shown literally, pinging nobody.
NO_MENTIONS = discord.AllowedMentions.none()
# Sends one genre message (its text and buttons) and returns it.
Send = Callable[[str, discord.ui.View], Awaitable[Any]]


class NothingGeneratedError(MicrogenreError):
    def __init__(self) -> None:
        super().__init__(
            "I could not come up with a genre this server has not seen yet; try again, "
            "perhaps with more weirdness or another 'like'."
        )


def genre_text(name: str) -> str:
    """The text of a genre message.

    >>> genre_text("dub *polka*")
    '🎵 **dub \\\\*polka\\\\***'
    """
    return clip(f"🎵 **{escape(name)}**", MESSAGE)


class GenrePoster:
    """See the module docstring."""

    def __init__(self, bot: MicrogenreBot) -> None:
        self.bot = bot
        # Vote reactions and replies share one global pace (Discord's 50 requests/s counts
        # both), leaving room for the bot's other calls.
        pace = GlobalPace(40.0)
        self.pacer = ReactionPacer(self._add_reaction, global_pace=pace)
        # Turns for messages sent into a channel (replies), within its 5 per 5 s.
        self.messages = MessagePacer(global_pace=pace)

    async def post(
        self,
        issued: list[Reserved],
        *,
        guild_id: int | None,
        channel_id: int | None,
        send: Send,
        can_react: bool,
        on_forbidden: OnForbidden | None = None,
    ) -> list[Any]:
        """Send one message per genre (in order) through ``send``; returns the messages.

        Each message's id is recorded before the next is sent (reactions that arrive earlier
        wait for it: ``bot/posting.py``); whatever was not posted when an error stops it is
        released, and the error propagates.
        """
        unposted = list(issued)
        messages = []
        try:
            for r in issued:
                assert r.generation_id is not None
                with self.bot.posts_in_flight.posting(channel_id):
                    message = await send(genre_text(r.name), genre_view(r.generation_id))
                    await attach_message(
                        self.bot.sessions,
                        r.generation_id,
                        message_id=message.id,
                        channel_id=channel_id,
                    )
                unposted.remove(r)
                messages.append(message)
                self.bot.service.metrics.genres_delivered.inc()
                if can_react:
                    self.pacer.submit(
                        ReactionJob(message.channel.id, message.id, REACTIONS, on_forbidden)
                    )
        finally:
            # Genres whose message never went out may be issued again later.
            await self.bot.service.release(guild_id, unposted)
        return messages

    async def _add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        """One vote reaction (called by the pacer, which handles its errors)."""
        partial = self.bot.get_partial_messageable(channel_id).get_partial_message(message_id)
        await partial.add_reaction(emoji)

    async def close(self) -> None:
        await self.pacer.close()
