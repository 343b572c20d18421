"""What a click on "More like this" or "Weirder" does (the buttons: ``_genre_buttons.py``).

A click is an interaction like a slash command: it is acknowledged at once (a deferred update,
so the genre message stays as it is), then checked, then waits its turn in the fair queue
(``bot/queue.py``) with the user's cooldown and caps, and is refused privately, with the
estimated wait, where `/genre new` would be. The variations are conditioned on the source
genre (``like:`` its name), come from the server's own model, and are posted as replies to its
message, each with its own 👍 👎 ⭐ and buttons:

* **More like this**: up to :data:`VARIATIONS` genres at the source's weirdness. The first is
  posted as soon as it is made; the others are then asked for through the queue again, so in a
  burst they wait behind the first variations of everyone who clicked meanwhile, and every
  clicker sees a reply early. That follow-up waits its turn and is never refused for the wait
  (measured: docs/benchmarks.md, "Button clicks").
* **Weirder**: one genre :data:`WEIRDER_STEP` weirdness levels up (at most 5).

A click never throws at the user: a genre the store no longer has, a button of another
server's genre or of another message, a message older than ``[bot] buttons_days`` (archived),
a deleted message, a channel the bot may not reply in all get a short private answer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.cogs._genre_buttons import WEIRDER
from bot.cogs._genre_posting import NO_MENTIONS, GenrePoster, NothingGeneratedError
from bot.cogs.common import guild_id_of
from bot.errors import MicrogenreError
from bot.lineage import VARIATION, Lineage
from bot.lineage import WEIRDER as WEIRDER_KIND
from bot.service import GenreRequest, weirdness_level
from bot.store.generations import GenerationSource, generation_source
from bot.store.models import utcnow

if TYPE_CHECKING:
    from bot.app import MicrogenreBot

log = logging.getLogger(__name__)

VARIATIONS = 3
WEIRDER_STEP = 2
# The weirdness of a source that recorded none (genres from before weirdness was stored).
DEFAULT_SOURCE_WEIRDNESS = 2
# Users whose cooldown is remembered at most (expired ones are dropped first).
MAX_COOLDOWN_USERS = 10_000


class ClickRefusedError(MicrogenreError):
    """A click that cannot be served; the message says why."""


@dataclass(frozen=True)
class ClickPlan:
    """What a click asks for: how many genres, at which weirdness, with which lineage.

    >>> source = GenerationSource(7, 1, 2, 3, "bubblegrunge", 4, utcnow())
    >>> ClickPlan.of("weirder", source)  # doctest: +NORMALIZE_WHITESPACE
    ClickPlan(count=1, weirdness=5,
              lineage=Lineage(kind='weirder', parent_id=7, text='bubblegrunge'))
    >>> ClickPlan.of("more", source).count, ClickPlan.of("more", source).weirdness
    (3, 4)
    """

    count: int
    weirdness: int
    lineage: Lineage

    @classmethod
    def of(cls, action: str, source: GenerationSource) -> ClickPlan:
        weirdness = weirdness_level(source.weirdness or DEFAULT_SOURCE_WEIRDNESS)
        if action == WEIRDER:
            return cls(
                1,
                weirdness_level(weirdness + WEIRDER_STEP),
                Lineage(WEIRDER_KIND, source.id, source.name),
            )
        return cls(VARIATIONS, weirdness, Lineage(VARIATION, source.id, source.name))


class UserCooldown:
    """One click per user per ``seconds`` (``[bot] cooldown_s``), with a bounded memory."""

    def __init__(self, seconds: float, max_users: int = MAX_COOLDOWN_USERS) -> None:
        self.seconds = seconds
        self.max_users = max_users
        self._ready_at: dict[int, float] = {}

    def hit(self, user_id: int) -> None:
        """Count a click; raises ``CommandOnCooldown`` while the user must wait."""
        if self.seconds <= 0:
            return
        now = time.monotonic()
        ready_at = self._ready_at.get(user_id, 0.0)
        if ready_at > now:
            raise app_commands.CommandOnCooldown(
                app_commands.Cooldown(1, self.seconds), ready_at - now
            )
        if len(self._ready_at) >= self.max_users:
            self._ready_at = {u: t for u, t in self._ready_at.items() if t > now}
            while len(self._ready_at) >= self.max_users:  # all still waiting: oldest go
                del self._ready_at[next(iter(self._ready_at))]
        self._ready_at[user_id] = now + self.seconds


class ClickHandler:
    """See the module docstring."""

    def __init__(self, bot: MicrogenreBot, poster: GenrePoster) -> None:
        self.bot = bot
        self.poster = poster
        self.cooldown = UserCooldown(bot.config.bot.cooldown_s)

    async def handle(
        self, interaction: discord.Interaction[Any], action: str, generation_id: int
    ) -> None:
        """Serve one click; every error becomes a private answer (bugs are logged)."""
        from bot.app import send_error, user_message

        try:
            # A deferred update: acknowledged within Discord's 3 s, the message unchanged.
            await interaction.response.defer()
            with self.bot.track_work():
                await self._serve(interaction, action, generation_id)
        except Exception as error:
            message = user_message(error)
            if message is None:
                log.exception(
                    "unexpected error in a %r click on generation %s (guild %s, user %s)",
                    action,
                    generation_id,
                    interaction.guild_id,
                    interaction.user.id,
                )
                message = "Sorry, something went wrong on my side. It has been logged."
            await send_error(interaction, message)

    async def _serve(
        self, interaction: discord.Interaction[Any], action: str, generation_id: int
    ) -> None:
        guild_id = guild_id_of(interaction)
        source = await self._source(interaction, guild_id, generation_id)
        permissions = interaction.app_permissions
        if not (permissions.send_messages and permissions.read_message_history):
            raise ClickRefusedError(
                "I cannot reply to genres in this channel: I need the Send Messages and Read "
                "Message History permissions here."
            )
        self.cooldown.hit(interaction.user.id)
        plan = ClickPlan.of(action, source)
        request = GenreRequest(
            plan.count,
            guild_id=guild_id,
            user_id=interaction.user.id,
            channel_id=source.channel_id,
            like=source.name,
            weirdness=plan.weirdness,
            lineage=plan.lineage,
        )
        # The first variation first: the rest waits its turn in the queue behind the first
        # variations of everyone who clicked meanwhile (see the module docstring).
        first = await self.bot.service.deliver(replace(request, count=min(1, plan.count)))
        if not first.reserved:
            raise NothingGeneratedError()
        await self._reply(interaction, source, first.reserved)
        rest = plan.count - len(first.reserved)
        if rest > 0:
            more = await self.bot.service.deliver(replace(request, count=rest), follow_up=True)
            if more.reserved:
                await self._reply(interaction, source, more.reserved)

    async def _source(
        self, interaction: discord.Interaction[Any], guild_id: int, generation_id: int
    ) -> GenerationSource:
        """The clicked genre, or a readable refusal."""
        source = await generation_source(self.bot.sessions, generation_id)
        if source is None:
            raise ClickRefusedError("I no longer know this genre, so I cannot vary it.")
        if source.guild_id != guild_id:
            raise ClickRefusedError("This button belongs to a genre of another server.")
        message = interaction.message
        if message is None or source.message_id != message.id:
            raise ClickRefusedError("This button does not belong to this genre's message.")
        days = self.bot.config.bot.buttons_days
        created = source.created_at
        if created.tzinfo is None:  # SQLite keeps no time zone: stored as UTC
            created = created.replace(tzinfo=UTC)
        if utcnow() - created > timedelta(days=days):
            raise ClickRefusedError(
                f"This genre is archived: its buttons work for {days} days. Ask for "
                f"`/genre new like:{source.name}` instead."
            )
        return source

    async def _reply(
        self, interaction: discord.Interaction[Any], source: GenerationSource, issued: list[Any]
    ) -> None:
        assert source.channel_id is not None and source.message_id is not None
        channel_id = source.channel_id
        channel = self.bot.get_partial_messageable(channel_id, guild_id=source.guild_id)
        reference = discord.MessageReference(
            message_id=source.message_id, channel_id=source.channel_id, guild_id=source.guild_id
        )

        async def send(text: str, view: discord.ui.View) -> discord.Message:
            async with self.poster.messages.turn(channel_id):
                return await channel.send(
                    text,
                    view=view,
                    reference=reference,
                    mention_author=False,
                    allowed_mentions=NO_MENTIONS,
                )

        try:
            await self.poster.post(
                issued,
                guild_id=source.guild_id,
                channel_id=source.channel_id,
                send=send,
                can_react=interaction.app_permissions.add_reactions,
            )
        except discord.HTTPException as exc:
            if exc.status == 400 and exc.code == 50035 and "message_reference" in str(exc):
                raise ClickRefusedError(
                    "The genre's message was deleted, so there is nothing to reply to."
                ) from None
            raise
