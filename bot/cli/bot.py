"""`microgenre bot`: run the Discord bot until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging

import click

from bot.cli import main
from bot.cli.common import state


@main.command(name="bot")
@click.option(
    "--force-sync",
    is_flag=True,
    help="Sync slash commands even when they did not change since the last sync.",
)
@click.pass_context
def bot_command(ctx: click.Context, force_sync: bool) -> None:
    """Run the Discord bot (token from DISCORD_TOKEN or [discord] token).

    Slash commands sync to [discord] dev_guild_id (instantly) or globally, only when they
    changed. SIGTERM or SIGINT finish in-flight work, stop the worker and exit 0.
    """
    from bot.app import MissingTokenError, run_bot

    config = state(ctx).config
    # A long-running service logs its life cycle (connected, synced, stopping) by default.
    app_logger = logging.getLogger("bot")
    if app_logger.getEffectiveLevel() > logging.INFO:
        app_logger.setLevel(logging.INFO)
    if not config.discord.token:
        raise MissingTokenError()
    if force_sync:
        # Forget the stored hash so that the next start-up syncs.
        from bot.app import SYNC_STATE_FILE

        (config.data_dir / SYNC_STATE_FILE).unlink(missing_ok=True)
    code = asyncio.run(run_bot(config))
    ctx.exit(code)
