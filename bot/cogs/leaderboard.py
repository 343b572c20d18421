"""Browsing: `/genre top`, `/genre favorites`, `/genre stats`, `/genre check`, `/genre map`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs._leaderboard_map import WordIndex, place_all, render_png
from bot.cogs.common import EMBED_COLOUR, defer_public, guild_id_of, subcommand
from bot.cogs.daily import schedule_text
from bot.errors import MicrogenreError
from bot.store.daily import get_schedule
from bot.store.generations import lookup_genre
from bot.store.leaderboard import (
    Ranked,
    guild_counts,
    guild_genre_names,
    map_positions,
    top_generations,
    user_favorites,
)
from bot.store.stats import store_stats
from bot.text import (
    EMBED_DESCRIPTION,
    MESSAGE,
    clip,
    clip_lines,
    defang_links,
    escape,
    fit_embed,
    jump_url,
    mention,
)

if TYPE_CHECKING:
    from bot.app import MicrogenreBot

log = logging.getLogger(__name__)

Period = Literal["day", "week", "month", "all"]
PERIOD_TITLES = {"day": "today", "week": "this week", "month": "this month", "all": "of all time"}
# `/genre top kind:` (bot/lineage.py KINDS), and how the title names them.
Kind = Literal["new", "like", "variation", "weirder", "blend", "daily"]
KIND_TITLES = {
    "new": "plain new micro-genres",
    "like": "micro-genres asked for 'like' something",
    "variation": "variations",
    "weirder": "weirder takes",
    "blend": "blends",
    "daily": "genres of the day",
}
# `/genre map` renders a picture: at most once per this many seconds in a server.
MAP_COOLDOWN_S = 30.0
NO_MENTIONS = discord.AllowedMentions.none()


class NoMapPositionsError(MicrogenreError):
    def __init__(self) -> None:
        super().__init__(
            "I have no map positions of real genres yet: a server manager can add them with "
            "`microgenre scrape --source everynoise`."
        )


def ago(seconds: float) -> str:
    """
    >>> ago(5), ago(125), ago(7300)
    ('5 s ago', '2 min ago', '2 h ago')
    """
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    return f"{seconds // 3600:.0f} h ago"


def generator_state(health: Mapping[str, Any], *, since_s: float | None) -> str:
    """A short, generic state of the generator for everyone to see (never its errors).

    ``since_s``: seconds since the state was first seen (None: unknown).

    >>> generator_state({"state": "restarting"}, since_s=125)
    'restarting after a crash 2 min ago'
    >>> generator_state({"alive": False, "transport": "http"}, since_s=None)
    'down (the generator server does not answer)'
    """
    state = health.get("state")
    if state is None and "alive" in health:  # the remote client
        state = "ready" if health["alive"] else "unreachable"
    when = f" {ago(since_s)}" if since_s is not None else ""
    texts = {
        "ready": "ready",
        "starting": "starting up",
        "restarting": f"restarting after a crash{when}",
        "failed": f"down: the model cannot be loaded, retrying{when.replace(' ago', '')}",
        "unreachable": "down (the generator server does not answer)",
        "stopped": "down",
        "closed": "down",
    }
    return texts.get(str(state), "unknown")


class GeneratorWatch:
    """When the generator's state last changed, and its errors logged once each."""

    def __init__(self) -> None:
        self._state: tuple[Any, Any] | None = None
        self._since = 0.0
        self._logged: str | None = None

    def observe(self, health: Mapping[str, Any]) -> float | None:
        """Seconds since this state was first seen (None the first time)."""
        error = health.get("last_error")
        if error and error != self._logged:
            self._logged = str(error)
            log.warning("the generator reports (state %s): %s", health.get("state"), error)
        now = time.monotonic()
        state = (health.get("state"), health.get("restarts"))
        if state != self._state:
            first = self._state is None
            self._state, self._since = state, now
            return None if first else 0.0
        return now - self._since


def ranked_line(position: int, row: Ranked, guild_id: int) -> str:
    """One leaderboard line.

    >>> from datetime import datetime
    >>> r = Ranked(1, "glitch polka", 5, 7, 9, datetime(2026, 1, 1), 3, 1, 2)
    >>> ranked_line(1, r, 4)
    '**1.** [glitch polka](https://discord.com/channels/4/7/9) · **+2** (3👍 1👎 2⭐) · by <@5>'
    """
    url = jump_url(guild_id, row.channel_id, row.message_id)
    name = f"[{escape(row.name)}]({url})" if url else escape(row.name)
    score = f"+{row.score}" if row.score > 0 else str(row.score)
    return (
        f"**{position}.** {name} · **{score}** "
        f"({row.upvotes}👍 {row.downvotes}👎 {row.favorites}⭐) · by {mention(row.user_id)}"
    )


class LeaderboardCog(commands.Cog):
    def __init__(self, bot: MicrogenreBot) -> None:
        self.bot = bot
        self._index: WordIndex | None = None
        self._watch = GeneratorWatch()
        self.commands_ = [
            subcommand(self.top, name="top"),
            subcommand(self.favorites, name="favorites"),
            subcommand(self.stats, name="stats"),
            subcommand(self.check, name="check"),
            subcommand(self.map, name="map"),
        ]

    async def cog_load(self) -> None:
        for command in self.commands_:
            self.bot.genre_group.add_command(command)
        # Reading ~6,000 positions decodes their JSON on the event loop (~0.15 s): once, at
        # start, before anyone waits, rather than in the first `/genre map` of a busy moment.
        with contextlib.suppress(NoMapPositionsError):
            await self._word_index()

    async def cog_unload(self) -> None:
        for command in self.commands_:
            self.bot.genre_group.remove_command(command.name)

    @app_commands.describe(
        period="Which genres to rank, by when they were invented",
        kind="Only genres asked for this way (new, like, variation, weirder, blend, daily)",
    )
    async def top(
        self,
        interaction: discord.Interaction[Any],
        period: Period = "week",
        kind: Kind | None = None,
    ) -> None:
        """This server's best-rated invented genres"""
        guild_id = guild_id_of(interaction)
        rows = await top_generations(
            self.bot.sessions, guild_id, period=period, limit=10, kind=kind
        )
        what = f"Top {KIND_TITLES[kind]}" if kind else "Top micro-genres"
        embed = discord.Embed(title=f"🏆 {what} {PERIOD_TITLES[period]}", colour=EMBED_COLOUR)
        if rows:
            embed.description = clip_lines(
                [ranked_line(i, row, guild_id) for i, row in enumerate(rows, 1)],
                EMBED_DESCRIPTION,
            )
        else:
            embed.description = "No genres yet for this period: try `/genre new`."
        await interaction.response.send_message(
            embed=fit_embed(embed), allowed_mentions=NO_MENTIONS
        )

    @app_commands.describe(user="Whose favorites (default: yours)")
    async def favorites(
        self, interaction: discord.Interaction[Any], user: discord.User | None = None
    ) -> None:
        """Genres someone starred with ⭐"""
        guild_id = guild_id_of(interaction)
        target = user or interaction.user
        rows = await user_favorites(self.bot.sessions, guild_id, target.id, limit=20)
        embed = discord.Embed(
            title=f"⭐ Favorites of {escape(target.display_name)}", colour=EMBED_COLOUR
        )
        embed.description = (
            clip_lines(
                [ranked_line(i, row, guild_id) for i, row in enumerate(rows, 1)],
                EMBED_DESCRIPTION,
            )
            if rows
            else "No favorites yet: react with ⭐ to a genre to keep it."
        )
        await interaction.response.send_message(
            embed=fit_embed(embed), ephemeral=user is None, allowed_mentions=NO_MENTIONS
        )

    async def stats(self, interaction: discord.Interaction[Any]) -> None:
        """Counts, the active model and the generator's health"""
        guild_id = guild_id_of(interaction)
        await defer_public(interaction)
        here = await guild_counts(self.bot.sessions, guild_id)
        everywhere = await store_stats(self.bot.sessions)
        health = self.bot.service.health()
        embed = discord.Embed(title="📊 Micro-genre stats", colour=EMBED_COLOUR)
        embed.add_field(
            name="This server",
            value=f"{here['genres']} genres · {here['votes']} votes · {here['favorites']} ⭐",
            inline=False,
        )
        embed.add_field(
            name="Everywhere",
            value=(
                f"{everywhere['generated_genres']} invented · "
                f"{everywhere['training_genres']} real genres known · "
                f"{everywhere['votes']} votes · {everywhere['favorites']} ⭐"
            ),
            inline=False,
        )
        # This server's own model, else the deployment's default.
        own = everywhere.get("guild_models", {}).get(str(guild_id))
        active = own or everywhere.get("active_model")
        if active:
            metrics = active.get("metrics") or {}
            numbers = ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in sorted(metrics.items())
                if isinstance(v, int | float)
            )
            embed.add_field(
                name="Model (this server's own)" if own else "Model",
                value=escape(str(active["name"])) + (f" ({numbers})" if numbers else ""),
                inline=False,
            )
        else:
            embed.add_field(name="Model", value="shipped default adapter", inline=False)
        # The details (errors can hold internal URLs and paths) go to the log only.
        state = generator_state(health, since_s=self._watch.observe(health))
        embed.add_field(
            name="Generator",
            value=(
                f"{state} · queue {self.bot.service.queue_length} · "
                f"restarts {health.get('restarts', 0)}"
            ),
            inline=False,
        )
        schedule = await get_schedule(self.bot.sessions, guild_id)
        embed.add_field(
            name="Genre of the day",
            value=schedule_text(schedule)
            if schedule is not None
            else "off (a server manager can start it with `/genre daily set`)",
            inline=False,
        )
        await interaction.followup.send(embed=fit_embed(embed), allowed_mentions=NO_MENTIONS)

    @app_commands.describe(name="A genre name to look up")
    async def check(
        self, interaction: discord.Interaction[Any], name: app_commands.Range[str, 1, 200]
    ) -> None:
        """Is it a real genre, or was it invented here?"""
        guild_id = guild_id_of(interaction)
        found = await lookup_genre(self.bot.sessions, name, guild_id)
        shown = escape(found.display_name or name)
        # The adapter's fingerprint knows the real genres even before any scrape.
        fingerprint = getattr(self.bot.service.generator, "fingerprint", None)
        verdict = fingerprint.match(name) if fingerprint is not None else None
        if found.origin is None and verdict == "known":
            text = f"📚 **{escape(name)}** is a real genre (the model was trained on it)."
        elif found.origin is None and verdict == "near_known":
            text = f"📚 **{escape(name)}** is all but the name of a real genre."
        elif found.origin is None:
            text = f"🤷 **{escape(name)}** is not a genre I know, and nobody invented it here yet."
        elif found.origin == "training":
            sources = ", ".join(found.sources) or "my training data"
            text = f"📚 **{shown}** is a real genre (listed by {sources})."
        elif found.generation_id is not None:
            url = jump_url(guild_id, found.channel_id, found.message_id)
            when = found.created_at.strftime("%Y-%m-%d") if found.created_at else "?"
            score = f"+{found.score}" if found.score > 0 else str(found.score)
            model = found.model_name.replace("`", "'") if found.model_name else None
            lineage = found.lineage.describe(escape) if found.lineage else None
            text = (
                f"✨ **{shown}** was invented here for {mention(found.user_id)} "
                f"on {when}"
                + (f", {lineage}" if lineage else "")
                + (f" by model `{model}`" if model else "")
                + ": "
                f"score **{score}** ({found.upvotes}👍 {found.downvotes}👎 "
                f"{found.favorites}⭐)" + (f" · {url}" if url else "")
            )
        else:
            text = (
                f"✨ **{shown}** is an invented genre, but not from this server"
                f" (issued in {found.elsewhere} other server(s))."
            )
        # The name is user text: only the asker sees the answer, with no live link or preview.
        await interaction.response.send_message(
            clip(defang_links(text), MESSAGE),
            allowed_mentions=NO_MENTIONS,
            ephemeral=True,
            suppress_embeds=True,
        )

    async def _word_index(self) -> WordIndex:
        """The real genres' positions, indexed in a thread; kept once there are any."""
        if self._index is not None:
            return self._index
        positions = await map_positions(self.bot.sessions)
        if not positions:
            raise NoMapPositionsError()
        index = await asyncio.to_thread(WordIndex, positions)
        self._index = index
        return index

    @app_commands.checks.cooldown(1, MAP_COOLDOWN_S, key=lambda i: i.guild_id)
    async def map(self, interaction: discord.Interaction[Any]) -> None:
        """A map of this server's invented genres among real ones"""
        guild_id = guild_id_of(interaction)
        await defer_public(interaction)
        index = await self._word_index()
        names = await guild_genre_names(self.bot.sessions, guild_id, limit=200)
        placed, unplaced = await asyncio.to_thread(place_all, index, names)
        guild_name = interaction.guild.name if interaction.guild else "this server"
        png = await asyncio.to_thread(
            render_png, index, placed, f"Micro-genres invented in {guild_name}"
        )
        note = (
            f"🗺️ {len(placed)} invented genres placed next to the real genres that share their "
            "words (positions from the Every Noise at Once map)."
        )
        if unplaced:
            note += f" {len(unplaced)} share no word with a mapped genre and are left out."
        await interaction.followup.send(
            note,
            file=discord.File(io.BytesIO(png), filename="genre-map.png"),
            allowed_mentions=NO_MENTIONS,
        )


async def setup(bot: MicrogenreBot) -> None:
    await bot.add_cog(LeaderboardCog(bot))
