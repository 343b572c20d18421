"""`/genre daily set|off`: a genre posted every day at a server's chosen UTC hour.

The cog owns the :class:`~bot.daily.DailyScheduler`: started at the first ``on_ready`` (when the
bot knows its servers, so a post missed while it was down comes at once), stopped when the cog
unloads, which ``Bot.close`` does. Both subcommands need Manage Server, checked explicitly:
Discord applies ``default_permissions`` to top-level commands only, and `/genre` is for
everyone. :func:`schedule_text` is the schedule as `/genre stats` and the answers show it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.common import guild_id_of, require_admin, subcommand
from bot.daily import DailyScheduler, channel_problem, first_post
from bot.store import daily as daily_store
from bot.text import MESSAGE, clip, jump_url

if TYPE_CHECKING:
    from bot.app import MicrogenreBot


def schedule_text(schedule: daily_store.Schedule) -> str:
    """The schedule in a few lines: where and when, the last post, the last problem.

    >>> from datetime import UTC, date, datetime
    >>> s = daily_store.Schedule(1, 2, 9, None, datetime(2027, 3, 1, tzinfo=UTC),
    ...     problem="I lack Send Messages in <#2>.", retry_at=datetime(2027, 3, 2, 10, tzinfo=UTC),
    ...     last_day=date(2027, 3, 1), last_channel_id=2, last_message_id=3)
    >>> print(schedule_text(s))
    📅 Every day at 09:00 UTC in <#2>; last posted 2027-03-01 (https://discord.com/channels/1/2/3).
    ⚠️ Last problem: I lack Send Messages in <#2>. Next try 2027-03-02 10:00 UTC.
    """
    text = f"📅 Every day at {schedule.hour:02d}:00 UTC in <#{schedule.channel_id}>"
    if schedule.last_day is not None:
        url = jump_url(schedule.guild_id, schedule.last_channel_id, schedule.last_message_id)
        text += f"; last posted {schedule.last_day:%Y-%m-%d}" + (f" ({url})" if url else "")
    text += "."
    if schedule.problem:
        text += f"\n⚠️ Last problem: {schedule.problem}"
        if schedule.retry_at is not None:
            text += f" Next try {schedule.retry_at:%Y-%m-%d %H:%M} UTC."
    return text


class DailyCog(commands.Cog):
    def __init__(self, bot: MicrogenreBot) -> None:
        self.bot = bot
        self.scheduler = DailyScheduler(bot)
        self.group = app_commands.Group(
            name="daily", description="A new genre posted every day at a set hour"
        )
        self.group.add_command(subcommand(self.set_schedule, name="set"))
        self.group.add_command(subcommand(self.off, name="off"))

    async def cog_load(self) -> None:
        self.bot.genre_group.add_command(self.group)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        self.scheduler.start()

    async def cog_unload(self) -> None:
        self.bot.genre_group.remove_command(self.group.name)
        await self.scheduler.close()

    @app_commands.describe(
        channel="The channel to post in", hour="The hour to post at, in UTC (0-23)"
    )
    @app_commands.check(require_admin)
    async def set_schedule(
        self,
        interaction: discord.Interaction[Any],
        channel: discord.TextChannel,
        hour: app_commands.Range[int, 0, 23],
    ) -> None:
        """Post a new genre in a channel every day at an hour (UTC); Manage Server only"""
        guild_id = guild_id_of(interaction)
        now = self.scheduler.now()
        problem = channel_problem(interaction.guild, channel.id)
        schedule = await daily_store.set_schedule(
            self.bot.sessions,
            guild_id,
            channel_id=channel.id,
            hour=hour,
            set_by=interaction.user.id,
            now=now,
            problem=problem,
        )
        first = first_post(hour, now)
        when = "today" if first.date() == now.date() else "tomorrow"
        text = f"{schedule_text(schedule)}\nThe first one comes {when} at {hour:02d}:00 UTC."
        if problem is not None:
            text = (
                f"{schedule_text(schedule)}\n"
                f"Fix that before {hour:02d}:00 UTC, or nothing is posted."
            )
        await interaction.response.send_message(clip(text, MESSAGE), ephemeral=True)

    @app_commands.check(require_admin)
    async def off(self, interaction: discord.Interaction[Any]) -> None:
        """Stop the genre of the day in this server; Manage Server only"""
        removed = await daily_store.remove_schedule(self.bot.sessions, guild_id_of(interaction))
        text = (
            "⏹️ No more genre of the day in this server."
            if removed
            else "This server has no genre of the day: `/genre daily set` starts one."
        )
        await interaction.response.send_message(text, ephemeral=True)


async def setup(bot: MicrogenreBot) -> None:
    await bot.add_cog(DailyCog(bot))
