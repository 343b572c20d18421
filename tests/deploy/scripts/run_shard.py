"""Run `microgenre bot` (the real CLI entry point) against a fake Discord, generating remotely.

Usage: python tests/deploy/scripts/run_shard.py API_BASE GATEWAY_URL
The config comes from the environment (DISCORD_TOKEN, MICROGENRE_*): the shards to hold, the
PostgreSQL URL, the `microgenre serve` URLs. The generator is the production PipelineGenerator
over the configured remote client; only the moderation classifier's warm-up is skipped.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))


def main() -> int:
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    import bot.service
    from bot.cli import entry

    Route.BASE = sys.argv[1]
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sys.argv[2])

    async def create_generator(config, *, known=(), pipeline_options=None):
        from model.filters import Moderator
        from model.worker import make_client

        client = make_client(config)
        await client.start()
        return bot.service.PipelineGenerator(
            client, known=known, moderator=Moderator(), pipeline_options=pipeline_options
        )

    bot.service.create_generator = create_generator
    return entry(["-v", "bot"])


if __name__ == "__main__":
    sys.exit(main())
