"""`/retrain start|status|cancel|rollback`: a server's admins retrain that server's model.

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
from bot.store import versions as versions_store
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
    if progress.phase == "queued":
        where = f", position {progress.position} in line" if progress.position else ""
        return f"⏳ Retraining run #{progress.run_id} — queued{where}"
    lines = [f"🏋️ Retraining run #{progress.run_id} — {progress.phase}"]
    detail = [f"`{progress_bar(progress.fraction)}`"]
    if progress.total_steps:
        detail.append(f"step {progress.step}/{progress.total_steps}")
    if progress.loss is not None:
        detail.append(f"loss {progress.loss:.3f}")
    if progress.phase == "training" and progress.eta_s is not None:
        detail.append(f"ETA {format_duration(progress.eta_s)}")
    lines.append(" · ".join(detail))
    if progress.phase == "training" and progress.voted_genres:
        lines.append(f"Learning from this server's votes on {progress.voted_genres} genres.")
    return clip("\n".join(lines), MESSAGE)


# What a channel is told of a failed run: its reason may hold log lines, paths and URLs, which
# go to the log and to the bot owner's `/retrain status` instead.
FAILED_PUBLICLY = "The run failed. The bot's owner can see why with `/retrain status`."


def public_reason(status: str, reason: str | None) -> str | None:
    """The reason of a run as the channel sees it.

    >>> public_reason("failed", "training failed: /srv/x.py line 3"), public_reason("rejected", "r")
    ("The run failed. The bot's owner can see why with `/retrain status`.", 'r')
    """
    return FAILED_PUBLICLY if status == "failed" else reason


def outcome_embed(outcome: RunOutcome) -> discord.Embed:
    icon = STATUS_ICONS.get(outcome.status, "")
    if outcome.status == "failed":
        log.warning("retraining run %s failed: %s", outcome.run_id, outcome.reason)
    embed = discord.Embed(
        title=f"{icon} Retraining run #{outcome.run_id}: {outcome.status}",
        description=public_reason(outcome.status, outcome.reason) or None,
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

    def __init__(
        self,
        bot: MicrogenreBot,
        message: discord.Message | None,
        channel_id: int | None,
        *,
        message_id: int | None = None,
    ):
        self.bot = bot
        self.message = message
        self.channel_id = channel_id
        self.message_id = message.id if message is not None else message_id

    async def edit(self, text: str) -> None:
        text = clip(text, MESSAGE)
        if self.message is not None:
            with contextlib.suppress(discord.HTTPException):
                await self.message.edit(content=text)
                return
        if self.channel_id is None or self.message_id is None:
            return
        channel = self.bot.get_partial_messageable(self.channel_id)
        with contextlib.suppress(discord.HTTPException):
            await channel.get_partial_message(self.message_id).edit(content=text)

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
class AdminCog(
    commands.GroupCog, group_name="retrain", group_description="Retrain this server's model"
):
    """Every subcommand acts on the current server only; a server's admin never sees another
    server's runs. The deployment's owners may cancel any run (``guild_id`` option)."""

    def __init__(self, bot: MicrogenreBot) -> None:
        self.bot = bot
        super().__init__()

    async def cog_load(self) -> None:
        if self.bot.retrainer is not None:
            self.bot.retrainer.notifier = self._notifier

    def _notifier(self, run: runs_store.RunInfo) -> tuple[Any, Any]:
        """Callbacks for a run queued by another process or before a restart."""
        message = ProgressMessage(self.bot, None, run.channel_id, message_id=run.message_id)

        async def on_progress(progress: Progress) -> None:
            await message.edit(progress_text(progress))

        return on_progress, message.finish

    def _manager(self) -> Any:
        if self.bot.retrainer is None:
            raise RetrainUnavailableError("Retraining is not enabled on this bot.")
        return self.bot.retrainer

    async def _is_owner(self, user: discord.abc.User) -> bool:
        """The application's owner (or team) or a user of ``[bot] owner_ids``."""
        if user.id in self.bot.config.bot.owner_ids:
            return True
        try:
            return bool(await self.bot.is_owner(user))
        except discord.HTTPException:
            return False

    @app_commands.command(name="start")
    @app_commands.check(require_admin)
    async def start(self, interaction: discord.Interaction[Any]) -> None:
        """Teach this server's model from the genres its members voted on"""
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
        await runs_store.update_run(self.bot.sessions, progress.run_id, message_id=message.id)
        await interaction.edit_original_response(content=progress_text(progress))

    @app_commands.command(name="status")
    @app_commands.check(require_admin)
    async def status(self, interaction: discord.Interaction[Any]) -> None:
        """How this server's retraining run is going, and which model it uses"""
        manager = self._manager()
        guild_id = interaction.guild_id
        model = await model_line(self.bot.sessions, guild_id)
        progress = manager.progress_of(guild_id)
        if progress is not None:
            text = progress_text(progress)
        else:
            owner = await self._is_owner(interaction.user)
            text = await run_text(self.bot.sessions, guild_id, details=owner)
        await interaction.response.send_message(clip(f"{text}\n{model}", MESSAGE), ephemeral=True)

    @app_commands.command(name="cancel")
    @app_commands.describe(guild_id="Owners only: the server whose run to cancel")
    async def cancel(
        self, interaction: discord.Interaction[Any], guild_id: str | None = None
    ) -> None:
        """Stop this server's queued or running retraining run (its model keeps serving)"""
        manager = self._manager()
        owner = await self._is_owner(interaction.user)
        if guild_id is not None and not owner:
            raise NotOwnerError()
        if not owner:
            require_admin(interaction)
        target = interaction.guild_id if guild_id is None else _snowflake(guild_id)
        try:
            progress = await manager.cancel(target, f"cancelled by {interaction.user}")
        except NoRunError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        await interaction.response.send_message(
            f"⏹️ Cancelling retraining run #{progress.run_id}.", ephemeral=True
        )

    @app_commands.command(name="rollback")
    @app_commands.check(require_admin)
    async def rollback(self, interaction: discord.Interaction[Any]) -> None:
        """Return this server to its previous model, or to the default one"""
        manager = self._manager()
        guild_id = interaction.guild_id
        if await runs_store.active_run(self.bot.sessions, guild_id) is not None:
            raise RetrainUnavailableError(
                "This server has a retraining run queued or in progress: cancel it first."
            )
        version = await versions_store.rollback(self.bot.sessions, guild_id)
        await manager.service.announce_model_change(guild_id)
        name = f"**{version.name}**" if version is not None else "the default model"
        await interaction.response.send_message(f"↩️ This server now uses {name}.", ephemeral=True)


class NotOwnerError(MicrogenreError):
    def __init__(self) -> None:
        super().__init__("Only the bot's owner can act on another server's run.")


def _snowflake(text: str) -> int:
    """A Discord id typed as text.

    >>> _snowflake(" 123 ")
    123
    """
    value = text.strip()
    if not value.isdigit():
        raise RetrainUnavailableError(f"{text!r} is not a server id.")
    return int(value)


async def model_line(sessions: Any, guild_id: int | None) -> str:
    """Which model a server uses, e.g. ``Model: **guild-1-run-0002** (this server's own)``."""
    version = await versions_store.serving_version(sessions, guild_id)
    if version is None:
        return "Model: the shipped default."
    own = "this server's own" if version.guild_id is not None else "the deployment's default"
    return f"Model: **{version.name}** ({own})."


async def run_text(sessions: Any, guild_id: int | None, *, details: bool = False) -> str:
    """This server's queued, running (in another process) or last run; a failed run's reason
    only with ``details`` (the bot's owner)."""
    run = await runs_store.active_run(sessions, guild_id)
    if run is not None and run.status == "pending":
        position = await runs_store.queue_position(sessions, run.id)
        return progress_text(Progress(run.id, phase="queued", position=position))
    if run is not None:
        return f"🏋️ Retraining run #{run.id} — {run.phase} (step {run.step}/{run.total_steps})"
    run = await runs_store.latest_run(sessions, guild_id)
    if run is None:
        return "No retraining has run in this server yet."
    when = run.finished_at or run.created_at
    text = (
        f"{STATUS_ICONS.get(run.status, '')} Last run #{run.id}: **{run.status}** "
        f"({when:%Y-%m-%d %H:%M} UTC)"
    )
    reason = run.error or run.result.get("reason")
    if not details:
        reason = public_reason(run.status, reason)
    return f"{text}\n{reason}" if reason else text


async def setup(bot: MicrogenreBot) -> None:
    await bot.add_cog(AdminCog(bot))
