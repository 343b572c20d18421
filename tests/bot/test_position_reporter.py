"""The queue-position edits of `/genre new` (bot/cogs/generation.py: PositionReporter)."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.cogs.generation import PositionReporter


class Interaction:
    def __init__(self) -> None:
        self.edits: list[str] = []

    async def edit_original_response(self, *, content: str) -> Any:
        self.edits.append(content)


async def test_positions_are_shown() -> None:
    interaction = Interaction()
    reporter = PositionReporter(interaction, interval_s=0.0)  # type: ignore[arg-type]
    reporter(3)
    await reporter.close()
    assert interaction.edits == ["⏳ Waiting for the generator: you are number 3 in line."]


async def test_no_edit_starts_while_the_bot_shuts_down() -> None:
    """A shutdown fails the requests still in line, which moves everyone's position; edits
    started then ran after discord.py had closed its HTTP session, and each one logged a
    'Task exception was never retrieved: Session is closed' traceback (seen in the soak)."""
    interaction = Interaction()
    reporter = PositionReporter(interaction, 0.0, closing=lambda: True)  # type: ignore[arg-type]
    reporter(3)
    reporter(0)
    assert reporter.task is None
    await asyncio.sleep(0)
    assert interaction.edits == []
