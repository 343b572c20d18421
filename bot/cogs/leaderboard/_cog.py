"""The browsing cog (see the package docstring)."""

from __future__ import annotations

import asyncio
import io
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.common import EMBED_COLOUR, defer_public, guild_id_of, subcommand
from bot.cogs.leaderboard._map import WordIndex, place_all, render_png
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
from bot.text import jump_url, mention

if TYPE_CHECKING:
    from bot.app import MicrogenreBot

Period = Literal["day", "week", "month", "all"]
PERIOD_TITLES = {"day": "today", "week": "this week", "month": "this month", "all": "of all time"}


def ranked_line(position: int, row: Ranked, guild_id: int) -> str:
    """One leaderboard line.

    >>> from datetime import datetime
    >>> r = Ranked(1, "glitch polka", 5, 7, 9, datetime(2026, 1, 1), 3, 1, 2)
    >>> ranked_line(1, r, 4)
    '**1.** [glitch polka](https://discord.com/channels/4/7/9) · **+2** (3👍 1👎 2⭐) · by <@5>'
    """
    url = jump_url(guild_id, row.channel_id, row.message_id)
    name = f"[{row.name}]({url})" if url else row.name
    score = f"+{row.score}" if row.score > 0 else str(row.score)
    return (
        f"**{position}.** {name} · **{score}** "
        f"({row.upvotes}👍 {row.downvotes}👎 {row.favorites}⭐) · by {mention(row.user_id)}"
    )


class LeaderboardCog(commands.Cog):
    def __init__(self, bot: MicrogenreBot) -> None:
        self.bot = bot
        self._index: WordIndex | None = None
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

    async def cog_unload(self) -> None:
        for command in self.commands_:
            self.bot.genre_group.remove_command(command.name)

    @app_commands.describe(period="Which genres to rank, by when they were invented")
    async def top(self, interaction: discord.Interaction[Any], period: Period = "week") -> None:
        """This server's best-rated invented genres"""
        guild_id = guild_id_of(interaction)
        rows = await top_generations(self.bot.sessions, guild_id, period=period, limit=10)
        embed = discord.Embed(
            title=f"🏆 Top micro-genres {PERIOD_TITLES[period]}", colour=EMBED_COLOUR
        )
        if rows:
            embed.description = "\n".join(
                ranked_line(i, row, guild_id) for i, row in enumerate(rows, 1)
            )
        else:
            embed.description = "No genres yet for this period: try `/genre new`."
        await interaction.response.send_message(embed=embed)

    @app_commands.describe(user="Whose favorites (default: yours)")
    async def favorites(
        self, interaction: discord.Interaction[Any], user: discord.User | None = None
    ) -> None:
        """Genres someone starred with ⭐"""
        guild_id = guild_id_of(interaction)
        target = user or interaction.user
        rows = await user_favorites(self.bot.sessions, guild_id, target.id, limit=20)
        embed = discord.Embed(title=f"⭐ Favorites of {target.display_name}", colour=EMBED_COLOUR)
        embed.description = (
            "\n".join(ranked_line(i, row, guild_id) for i, row in enumerate(rows, 1))
            if rows
            else "No favorites yet: react with ⭐ to a genre to keep it."
        )
        await interaction.response.send_message(embed=embed, ephemeral=user is None)

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
        active = everywhere.get("active_model")
        if active:
            metrics = active.get("metrics") or {}
            numbers = ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in sorted(metrics.items())
                if isinstance(v, int | float)
            )
            embed.add_field(
                name="Model",
                value=f"{active['name']}" + (f" ({numbers})" if numbers else ""),
                inline=False,
            )
        else:
            embed.add_field(name="Model", value="shipped default adapter", inline=False)
        state = health.get("state", "unknown")
        embed.add_field(
            name="Generator",
            value=(
                f"{state} · queue {self.bot.service.queue_length} · "
                f"restarts {health.get('restarts', 0)}"
                + (f" · last error: {health['last_error']}" if health.get("last_error") else "")
            ),
            inline=False,
        )
        await interaction.followup.send(embed=embed)

    @app_commands.describe(name="A genre name to look up")
    async def check(
        self, interaction: discord.Interaction[Any], name: app_commands.Range[str, 1, 200]
    ) -> None:
        """Is it a real genre, or was it invented here?"""
        guild_id = guild_id_of(interaction)
        found = await lookup_genre(self.bot.sessions, name, guild_id)
        if found.origin is None:
            text = f"🤷 **{name}** is not a genre I know, and nobody invented it here yet."
        elif found.origin == "training":
            sources = ", ".join(found.sources) or "my training data"
            text = f"📚 **{found.display_name}** is a real genre (listed by {sources})."
        elif found.generation_id is not None:
            url = jump_url(guild_id, found.channel_id, found.message_id)
            when = found.created_at.strftime("%Y-%m-%d") if found.created_at else "?"
            score = f"+{found.score}" if found.score > 0 else str(found.score)
            text = (
                f"✨ **{found.display_name}** was invented here for {mention(found.user_id)} "
                f"on {when}: score **{score}** ({found.upvotes}👍 {found.downvotes}👎 "
                f"{found.favorites}⭐)" + (f" · {url}" if url else "")
            )
        else:
            text = (
                f"✨ **{found.display_name}** is an invented genre, but not from this server"
                f" (issued in {found.elsewhere} other server(s))."
            )
        await interaction.response.send_message(
            text, allowed_mentions=discord.AllowedMentions.none()
        )

    async def map(self, interaction: discord.Interaction[Any]) -> None:
        """A map of this server's invented genres among real ones"""
        guild_id = guild_id_of(interaction)
        await defer_public(interaction)
        if self._index is None:
            self._index = WordIndex(await map_positions(self.bot.sessions))
        names = await guild_genre_names(self.bot.sessions, guild_id, limit=200)
        placed, unplaced = place_all(self._index, names)
        guild_name = interaction.guild.name if interaction.guild else "this server"
        png = await asyncio.to_thread(
            render_png, self._index, placed, f"Micro-genres invented in {guild_name}"
        )
        note = (
            f"🗺️ {len(placed)} invented genres placed next to the real genres that share their "
            "words (positions from the Every Noise at Once map)."
        )
        if unplaced:
            note += f" {len(unplaced)} share no word with a mapped genre and are left out."
        if not self._index.positions:
            note += " No real genre positions are in the store yet (`microgenre scrape`)."
        await interaction.followup.send(
            note, file=discord.File(io.BytesIO(png), filename="genre-map.png")
        )
