"""The buttons under every genre message: "More like this" and "Weirder".

Each is a :class:`discord.ui.DynamicItem` whose ``custom_id`` carries the generation id
(``mg:more:<id>``, ``mg:weirder:<id>``): discord.py matches a click's ``custom_id`` against the
registered templates (``bot.add_dynamic_items``, done by the generation cog), so the buttons
work in any process, after a restart and on every shard, with nothing kept in memory per
message. A click is handed to the generation cog's click handler (``bot/cogs/_genre_clicks.py``).

>>> [item.custom_id for item in genre_view(42).children]
['mg:more:42', 'mg:weirder:42']
>>> MoreLikeThisButton.__discord_ui_compiled_template__.fullmatch("mg:more:42") is not None
True
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

log = logging.getLogger(__name__)

MORE = "more"
WEIRDER = "weirder"
# A generation id: a positive integer that fits in a 64-bit column.
_ID = r"(?P<id>[1-9][0-9]{0,17})"


async def _dispatch(interaction: discord.Interaction[Any], action: str, generation_id: int) -> None:
    client: Any = interaction.client
    cog: Any = client.get_cog("GenerationCog")
    if cog is None:  # the cog is being reloaded: say so rather than let the click time out
        await interaction.response.send_message(
            "⚠️ Genres are not available right now; try again in a moment.", ephemeral=True
        )
        return
    await cog.clicks.handle(interaction, action, generation_id)


class MoreLikeThisButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"mg:{MORE}:{_ID}"
):
    """Up to three variations of the genre, posted as replies to its message."""

    def __init__(self, generation_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="More like this",
                emoji="🔁",
                style=discord.ButtonStyle.secondary,
                custom_id=f"mg:{MORE}:{generation_id}",
            )
        )
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: Any, match: re.Match[str], /
    ) -> MoreLikeThisButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _dispatch(interaction, MORE, self.generation_id)


class WeirderButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"mg:{WEIRDER}:{_ID}"
):
    """One variation of the genre, two weirdness levels up (at most 5)."""

    def __init__(self, generation_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Weirder",
                emoji="🌀",
                style=discord.ButtonStyle.secondary,
                custom_id=f"mg:{WEIRDER}:{generation_id}",
            )
        )
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: Any, match: re.Match[str], /
    ) -> WeirderButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _dispatch(interaction, WEIRDER, self.generation_id)


BUTTONS = (MoreLikeThisButton, WeirderButton)


def genre_view(generation_id: int) -> discord.ui.View:
    """The buttons of one genre message. Only dynamic items: sending it stores nothing in the
    client's view store, so posting thousands of genres keeps no memory."""
    view = discord.ui.View(timeout=None)
    view.add_item(MoreLikeThisButton(generation_id))
    view.add_item(WeirderButton(generation_id))
    return view
