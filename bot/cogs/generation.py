"""`/genre new` and `/genre blend`: generate genres, one message each, recorded in the store;
and the "More like this" / "Weirder" buttons under every genre message.

Posting is :class:`~bot.cogs._genre_posting.GenrePoster`: each message carries its buttons
(``_genre_buttons.py``, registered here as dynamic items, so they work after a restart and on
every shard), and its vote reactions (👍 👎 ⭐) are added after it is posted, from the paced
per-channel queue of :mod:`bot.pacing`, so a burst stays within Discord's rate limits; the
command does not wait for them, and a reaction that fails never fails the command. A click is
served by :class:`~bot.cogs._genre_clicks.ClickHandler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs._genre_buttons import BUTTONS
from bot.cogs._genre_clicks import ClickHandler
from bot.cogs._genre_posting import NO_MENTIONS, GenrePoster, NothingGeneratedError
from bot.cogs.common import REACTIONS, bot_of, defer_public, guild_id_of, subcommand
from bot.errors import InputError
from bot.lineage import BLEND, Lineage
from bot.pacing import ReactionPacer
from bot.service import GenreRequest
from bot.store.generations import Reserved
from bot.text import escape, mention
from model.textformat import BLEND_SEPARATOR, blend_like
from scraping.normalize import clean_name, genre_key

if TYPE_CHECKING:
    from bot.app import MicrogenreBot

log = logging.getLogger(__name__)

# Queue-position edits of the placeholder message, at most this often (seconds).
POSITION_EDIT_INTERVAL_S = 1.5
# The weirdness of `/genre new` when none is given: the band that re-invents real genres most
# often short of the tamest (docs/benchmarks.md, quality experiments: level 2 about 2.0x a raw
# Markov chain, level 3 1.4x), so a default genre sounds real but not bland.
DEFAULT_WEIRDNESS = 2


def clean_like(text: str | None, max_chars: int, what: str = "'like'") -> str | None:
    """Validate the ``like`` option: trimmed, lower-cased, printable, not too long.

    >>> clean_like("  Dream   Pop ", 60)
    'dream pop'
    >>> clean_like("", 60) is None
    True
    """
    if text is None:
        return None
    cleaned = clean_name(text)
    if not cleaned:
        return None
    if len(cleaned) > max_chars:
        raise InputError(f"{what} is too long: at most {max_chars} characters, please.")
    if any(not ch.isprintable() for ch in cleaned) or any(ch in cleaned for ch in "`*_~|<>@#"):
        raise InputError(f"{what} may only contain words, spaces and simple punctuation.")
    return cleaned


def blend_condition(a: str, b: str, max_chars: int) -> str:
    """The ``like:`` condition of `/genre blend` (``a | b``), or an InputError saying what is
    wrong with the two parents.

    >>> blend_condition(" Dream Pop", "FINNISH polka", 48)
    'dream pop | finnish polka'
    >>> blend_condition("dub", "Dub ", 48)
    Traceback (most recent call last):
    bot.errors.InputError: Pick two different genres to blend.
    """
    parents = []
    for name, text in (("a", a), ("b", b)):
        if BLEND_SEPARATOR.strip() in text:
            raise InputError(f"'{name}' may not contain '|': give one genre in each option.")
        cleaned = clean_like(text, max_chars, what=f"'{name}'")
        if cleaned is None:
            raise InputError(f"'{name}' is blank: give two genres to blend.")
        parents.append(cleaned)
    if genre_key(parents[0]) == genre_key(parents[1]):
        raise InputError("Pick two different genres to blend.")
    try:
        return blend_like(parents[0], parents[1])
    except ValueError as exc:
        raise InputError(str(exc)) from None


def user_cooldown(interaction: discord.Interaction[Any]) -> app_commands.Cooldown | None:
    """Per-user cooldown of `/genre new`, from ``[bot] cooldown_s`` (0: none)."""
    seconds = bot_of(interaction).config.bot.cooldown_s
    return app_commands.Cooldown(1, seconds) if seconds > 0 else None


class PositionReporter:
    """Edits the placeholder with the caller's place in line, throttled, never blocking."""

    def __init__(
        self,
        interaction: discord.Interaction[Any],
        interval_s: float,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        self.interaction = interaction
        self.interval_s = interval_s
        self.closing = closing
        self.last_position: int | None = None
        self.last_edit = 0.0
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    def __call__(self, position: int) -> None:
        if self.closed or position == self.last_position:
            return
        # A shutdown fails the requests in line, which moves everyone's place; an edit started
        # then would run after discord.py has closed its HTTP session.
        if self.closing():
            return
        now = time.monotonic()
        # Always show "generating now" (0); other changes at most every interval.
        if position != 0 and now - self.last_edit < self.interval_s:
            return
        if self.task is not None and not self.task.done():
            return
        self.last_position = position
        self.last_edit = now
        self.task = asyncio.get_running_loop().create_task(self._edit(position))

    async def _edit(self, position: int) -> None:
        text = (
            "🎛️ Generating now…"
            if position <= 0
            else f"⏳ Waiting for the generator: you are number {position} in line."
        )
        with contextlib.suppress(discord.HTTPException):
            await self.interaction.edit_original_response(content=text)

    async def close(self) -> None:
        self.closed = True
        if self.task is not None and not self.task.done():
            with contextlib.suppress(asyncio.CancelledError, discord.HTTPException):
                await self.task


class MissingReactionsNote:
    """Tells the caller once, privately, that the bot may not add the vote reactions here."""

    TEXT = (
        "I cannot add reactions in this channel; vote by reacting with "
        f"{' '.join(REACTIONS)} yourselves, or ask a server manager to give me the "
        "Add Reactions permission."
    )

    def __init__(self, interaction: discord.Interaction[Any]) -> None:
        self.interaction = interaction
        self.sent = False

    async def send(self) -> None:
        if self.sent:
            return
        self.sent = True
        try:
            await self.interaction.followup.send(self.TEXT, ephemeral=True)
        except discord.HTTPException as e:
            log.warning("could not send the missing-reactions note: %s", e)


class GenerationCog(commands.Cog):
    def __init__(self, bot: MicrogenreBot) -> None:
        self.bot = bot
        self.commands_ = [subcommand(self.new, name="new"), subcommand(self.blend, name="blend")]
        self.poster = GenrePoster(bot)
        self.clicks = ClickHandler(bot, self.poster)

    @property
    def pacer(self) -> ReactionPacer:
        return self.poster.pacer

    async def cog_load(self) -> None:
        for command in self.commands_:
            self.bot.genre_group.add_command(command)
        # Any button under any genre message, whichever process posted it and when.
        if hasattr(self.bot, "add_dynamic_items"):
            self.bot.add_dynamic_items(*BUTTONS)

    async def cog_unload(self) -> None:
        for command in self.commands_:
            self.bot.genre_group.remove_command(command.name)
        if hasattr(self.bot, "remove_dynamic_items"):
            self.bot.remove_dynamic_items(*BUTTONS)
        await self.poster.close()

    @app_commands.describe(
        count="How many genres (1-5)",
        like="Something the genres should resemble, e.g. 'shoegaze' or 'finnish folk'",
        weirdness="1 = tame … 5 = wild",
    )
    @app_commands.checks.dynamic_cooldown(user_cooldown)
    async def new(
        self,
        interaction: discord.Interaction[Any],
        count: app_commands.Range[int, 1, 5] = 1,
        like: app_commands.Range[str, 1, 100] | None = None,
        weirdness: app_commands.Range[int, 1, 5] = DEFAULT_WEIRDNESS,
    ) -> None:
        """Invent brand-new musical micro-genres"""
        # Answer Discord first: the 3-second deadline must never depend on the generator.
        await defer_public(interaction)
        guild_id = guild_id_of(interaction)
        config = self.bot.config.bot
        cleaned_like = clean_like(like, config.max_like_chars)
        # The service's fair queue makes the caller wait its turn (or refuses a too-long wait).
        with self.bot.track_work():
            await self._generate_and_post(interaction, guild_id, count, cleaned_like, weirdness)

    @app_commands.describe(
        a="A genre, real or invented, e.g. 'shoegaze'",
        b="Another genre, e.g. 'finnish polka'",
        count="How many genres (1-5)",
    )
    @app_commands.checks.dynamic_cooldown(user_cooldown)
    async def blend(
        self,
        interaction: discord.Interaction[Any],
        a: app_commands.Range[str, 1, 100],
        b: app_commands.Range[str, 1, 100],
        count: app_commands.Range[int, 1, 5] = 1,
    ) -> None:
        """Invent genres that descend from two genres at once"""
        await defer_public(interaction)
        guild_id = guild_id_of(interaction)
        like = blend_condition(a, b, self.bot.config.bot.max_like_chars)
        with self.bot.track_work():
            await self._generate_and_post(
                interaction, guild_id, count, like, DEFAULT_WEIRDNESS, Lineage(BLEND, text=like)
            )

    async def _generate_and_post(
        self,
        interaction: discord.Interaction[Any],
        guild_id: int,
        count: int,
        cleaned_like: str | None,
        weirdness: int,
        lineage: Lineage | None = None,
    ) -> None:
        request = GenreRequest(
            count,
            guild_id=guild_id,
            user_id=interaction.user.id,
            channel_id=interaction.channel_id,
            like=cleaned_like,
            weirdness=weirdness,
            lineage=lineage,
        )
        reporter = PositionReporter(
            interaction, POSITION_EDIT_INTERVAL_S, closing=lambda: self.bot.closing
        )
        try:
            delivery = await self.bot.service.deliver(request, on_position=reporter)
        finally:
            await reporter.close()
        if not delivery.reserved:
            raise NothingGeneratedError()
        await self._post(interaction, request, delivery.reserved)

    async def _post(
        self, interaction: discord.Interaction[Any], request: GenreRequest, issued: list[Reserved]
    ) -> None:
        """One message per genre, its reactions queued; unposted genres are released."""
        # Known from the interaction: no reaction requests that are bound to fail.
        can_react = interaction.app_permissions.add_reactions
        note = MissingReactionsNote(interaction)

        async def send(text: str, view: discord.ui.View) -> Any:
            return await interaction.followup.send(
                text, view=view, wait=True, allowed_mentions=NO_MENTIONS
            )

        try:
            await interaction.edit_original_response(
                content=self._header(interaction, issued, request), allowed_mentions=NO_MENTIONS
            )
        except BaseException:
            await self.bot.service.release(request.guild_id, issued)
            raise
        await self.poster.post(
            issued,
            guild_id=request.guild_id,
            channel_id=interaction.channel_id,
            send=send,
            can_react=can_react,
            on_forbidden=note.send,
        )
        if not can_react:
            await note.send()

    @staticmethod
    def _header(
        interaction: discord.Interaction[Any], issued: list[Any], request: GenreRequest
    ) -> str:
        n = len(issued)
        what = "a new micro-genre" if n == 1 else f"{n} new micro-genres"
        extras = []
        if request.lineage is not None and request.lineage.kind == BLEND:
            extras.append(str(request.lineage.describe(escape)))
        elif request.like:
            extras.append(f"like *{escape(request.like)}*")
        extras.append(f"weirdness {request.weirdness}")
        return (
            f"🎶 {what} for {mention(interaction.user.id)} ({', '.join(extras)}). "
            "Vote with 👍 / 👎, ⭐ to keep one."
        )


async def setup(bot: MicrogenreBot) -> None:
    await bot.add_cog(GenerationCog(bot))
