"""`microgenre bot`: run the Discord bot until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import click

from bot.cli.common import open_store, state
from bot.errors import MicrogenreError

if TYPE_CHECKING:
    from bot.config import Config

log = logging.getLogger(__name__)


class MissingTokenError(MicrogenreError):
    exit_code = 2

    def __init__(self) -> None:
        super().__init__(
            "no Discord bot token: set the DISCORD_TOKEN environment variable "
            "(or [discord] token in the config file)"
        )


@click.command(name="bot")
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
    code = asyncio.run(run_bot(config, config.discord.token))
    ctx.exit(code)


async def run_bot(config: Config, token: str) -> int:
    """Open the store, start the worker, run the bot until SIGTERM/SIGINT, clean up; 0."""
    from bot.app import make_bot, serve_bot
    from bot.cli.versions import default_model_config
    from bot.metrics import metrics_endpoint
    from bot.queue import FairQueue, QueueSettings
    from bot.retrain import RetrainManager
    from bot.service import GenreService, create_generator
    from bot.store.generations import real_genre_names

    # The worker starts on the database's default model; servers' own models load on demand.
    config, default = await default_model_config(config)
    async with open_store(config) as sessions:
        known = await real_genre_names(sessions)
        generator = await create_generator(config, known=known)
        queue = FairQueue(QueueSettings.from_config(config.bot))
        service = GenreService(
            generator, sessions, queue=queue, start_adapter=default.path if default else None
        )
        try:
            await service.start()
            retrainer = RetrainManager(config, sessions, service)
            service.metrics.watch_worker(generator.client)
            service.metrics.watch_retrainer(retrainer)
            async with metrics_endpoint(service.metrics, config.bot):
                await serve_bot(make_bot(config, sessions, service, retrainer=retrainer), token)
        finally:
            await service.close()
    log.info("stopped")
    return 0
