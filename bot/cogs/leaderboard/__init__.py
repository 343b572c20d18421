"""Browsing: `/genre top`, `/genre favorites`, `/genre stats`, `/genre check`, `/genre map`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import MicrogenreBot


async def setup(bot: MicrogenreBot) -> None:
    from bot.cogs.leaderboard._cog import LeaderboardCog

    await bot.add_cog(LeaderboardCog(bot))
