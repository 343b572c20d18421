"""`/retrain start|status|cancel`: admin-only retraining with a live progress message.

Discord applies ``default_permissions`` to top-level commands only, so retraining is its own
command group (``/retrain``) hidden from members without Manage Server; every subcommand also
checks the permission explicitly, because a guild admin can override the defaults for anyone.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.common import EMBED_COLOUR, defer_public, require_admin
from bot.errors import MicrogenreError
from bot.retrain import NoRunError, Progress, RunOutcome
from bot.store import runs as runs_store
from bot.text import MESSAGE, clip, fit_embed, format_duration, progress_bar

if TYPE_CHECKING:
    from bot.app import MicrogenreBot

log = logging.getLogger(__name__)

STATUS_ICONS = {
    "succeeded": "✅",
    "rejected": "🛑",
    "failed": "❌",
    "cancelled": "⏹️",
    "running": "🏋️",
    "pending": "⏳",
}


class RetrainUnavailableError(MicrogenreError):
    pass


def progress_text(progress: Progress) -> str:
    """The body of the progress message.

    >>> p = Progress(3, phase="training", step=5, total_steps=10, loss=1.5, eta_s=30)
    >>> print(progress_text(p))
    🏋️ Retraining run #3 — training
    `██████████░░░░░░░░░░ 50%` · step 5/10 · loss 1.500 · ETA 30s
    """
    lines = [f"🏋️ Retraining run #{progress.run_id} — {progress.phase}"]
    detail = [f"`{progress_bar(progress.fraction)}`"]
    if progress.total_steps:
        detail.append(f"step {progress.step}/{progress.total_steps}")
    if progress.loss is not None:
        detail.append(f"loss {progress.loss:.3f}")
    if progress.phase == "training" and progress.eta_s is not None:
        detail.append(f"ETA {format_duration(progress.eta_s)}")
    lines.append(" · ".join(detail))
    if progress.phase == "starting" and progress.community_genres:
        lines.append(f"Adding {progress.community_genres} community-approved genres.")
    return clip("\n".join(lines), MESSAGE)


def outcome_embed(outcome: RunOutcome) -> discord.Embed:
    icon = STATUS_ICONS.get(outcome.status, "")
    embed = discord.Embed(
        title=f"{icon} Retraining run #{outcome.run_id}: {outcome.status}",
        description=outcome.reason or None,
        colour=EMBED_COLOUR,
    )
    for name, label in (("well_formed", "Well-formed"), ("novel", "Novel")):
        new = outcome.metrics.get(name)
        old = outcome.baseline.get(name)
        if new is None and old is None:
            continue
        value = f"{new:.2f}" if new is not None else "?"
        if old is not None:
            value += f" (active: {old:.2f})"
        embed.add_field(name=label, value=value)
    if outcome.progress is not None and outcome.progress.loss is not None:
        embed.add_field(name="Final loss", value=f"{outcome.progress.loss:.3f}")
    if outcome.status != "succeeded":
        embed.set_footer(text="The active model keeps serving.")
    if outcome.loss_curve is not None:
        embed.set_image(url=f"attachment://{outcome.loss_curve.name}")
    return fit_embed(embed)


class ProgressMessage:
    """The message edited with the run's progress; falls back to the channel when the
    interaction token (15 minutes) has expired."""

    def __init__(self, bot: MicrogenreBot, message: discord.Message | None, channel_id: int | None):
        self.bot = bot
        self.message = message
        self.channel_id = channel_id

    async def edit(self, text: str) -> None:
        if self.message is None:
            return
        text = clip(text, MESSAGE)
        try:
            await self.message.edit(content=text)
        except discord.HTTPException:
            if self.channel_id is None:
                return
            channel = self.bot.get_partial_messageable(self.channel_id)
            with contextlib.suppress(discord.HTTPException):
                await channel.get_partial_message(self.message.id).edit(content=text)

    async def finish(self, outcome: RunOutcome) -> None:
        await self.edit(
            f"{STATUS_ICONS.get(outcome.status, '')} Retraining run #{outcome.run_id} "
            f"{outcome.status}."
        )
        if self.channel_id is None:
            return
        channel = self.bot.get_partial_messageable(self.channel_id)
        files = []
        if outcome.loss_curve is not None and outcome.loss_curve.is_file():
            data = outcome.loss_curve.read_bytes()
            files.append(discord.File(io.BytesIO(data), filename=outcome.loss_curve.name))
        try:
            await channel.send(embed=outcome_embed(outcome), files=files)
        except discord.HTTPException:
            log.warning("could not post the result of run %s", outcome.run_id, exc_info=True)


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class AdminCog(commands.GroupCog, group_name="retrain", group_description="Retrain the model"):
    def __init__(self, bot: MicrogenreBot) -> None:
        self.bot = bot
        super().__init__()

    def _manager(self) -> Any:
        if self.bot.retrainer is None:
            raise RetrainUnavailableError("Retraining is not enabled on this bot.")
        return self.bot.retrainer

    @app_commands.command(name="start")
    @app_commands.check(require_admin)
    async def start(self, interaction: discord.Interaction[Any]) -> None:
        """Retrain the model on the genres this community liked"""
        manager = self._manager()
        await defer_public(interaction)
        message = await interaction.original_response()
        progress_message = ProgressMessage(self.bot, message, interaction.channel_id)

        async def on_progress(progress: Progress) -> None:
            await progress_message.edit(progress_text(progress))

        progress = await manager.start(
            requested_by=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            on_progress=on_progress,
            on_finish=progress_message.finish,
        )
        await interaction.edit_original_response(content=progress_text(progress))

    @app_commands.command(name="status")
    @app_commands.check(require_admin)
    async def status(self, interaction: discord.Interaction[Any]) -> None:
        """How the current or last retraining run is going"""
        manager = self._manager()
        if manager.running and manager.progress is not None:
            await interaction.response.send_message(progress_text(manager.progress), ephemeral=True)
            return
        run = await runs_store.latest_run(self.bot.sessions)
        if run is None:
            await interaction.response.send_message("No retraining has run yet.", ephemeral=True)
            return
        when = run.finished_at or run.created_at
        text = (
            f"{STATUS_ICONS.get(run.status, '')} Last run #{run.id}: **{run.status}** "
            f"({when:%Y-%m-%d %H:%M} UTC)"
        )
        reason = run.error or run.result.get("reason")
        if reason:
            text += f"\n{reason}"
        await interaction.response.send_message(clip(text, MESSAGE), ephemeral=True)

    @app_commands.command(name="cancel")
    @app_commands.check(require_admin)
    async def cancel(self, interaction: discord.Interaction[Any]) -> None:
        """Stop the current retraining run (the active model keeps serving)"""
        manager = self._manager()
        try:
            progress = await manager.cancel(f"cancelled by {interaction.user}")
        except NoRunError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        await interaction.response.send_message(
            f"⏹️ Cancelling retraining run #{progress.run_id}.", ephemeral=True
        )


async def setup(bot: MicrogenreBot) -> None:
    await bot.add_cog(AdminCog(bot))
