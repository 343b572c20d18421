"""Helpers shared by the cogs: the `/genre` group, admin check, replies, errors users can read."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.errors import MicrogenreError

if TYPE_CHECKING:
    from bot.app import MicrogenreBot

UPVOTE = "👍"
DOWNVOTE = "👎"
FAVORITE = "⭐"
REACTIONS = (UPVOTE, DOWNVOTE, FAVORITE)
EMBED_COLOUR = discord.Colour.from_rgb(122, 92, 255)


class NotAdminError(app_commands.CheckFailure):
    """Raised by :func:`require_admin`; its message is shown to the user."""

    def __init__(self) -> None:
        super().__init__("Only server managers (the Manage Server permission) can do that.")


class GuildOnlyError(MicrogenreError):
    def __init__(self) -> None:
        super().__init__("This command only works inside a server.")


def is_server_admin(interaction: discord.Interaction[Any]) -> bool:
    """Whether the caller may manage the guild: Manage Server or Administrator.

    Checked explicitly on every admin command because guild admins can override the
    ``default_permissions`` of a command for anyone.
    """
    perms = interaction.permissions
    return bool(perms.manage_guild or perms.administrator)


def require_admin(interaction: discord.Interaction[Any]) -> bool:
    if not is_server_admin(interaction):
        raise NotAdminError()
    return True


def subcommand(
    callback: Callable[..., Any], *, name: str, description: str | None = None
) -> app_commands.Command[Any, ..., Any]:
    """An app command for a bound cog method (its docstring's first line describes it)."""
    doc = description or (inspect.getdoc(callback) or name).splitlines()[0]
    return app_commands.Command(name=name, description=doc[:100], callback=callback)


def bot_of(interaction: discord.Interaction[Any]) -> MicrogenreBot:
    from bot.app import MicrogenreBotMixin

    client = interaction.client
    assert isinstance(client, MicrogenreBotMixin)
    return client  # type: ignore[return-value]


def guild_id_of(interaction: discord.Interaction[Any]) -> int:
    if interaction.guild_id is None:
        raise GuildOnlyError()
    return interaction.guild_id


async def defer_public(interaction: discord.Interaction[Any]) -> None:
    """Defer with a public "thinking…" placeholder; an error later replaces it privately."""
    await interaction.response.defer(thinking=True)
    interaction.extras["public_defer"] = True


async def reply(
    interaction: discord.Interaction[Any],
    content: str | None = None,
    *,
    ephemeral: bool = False,
    **kwargs: Any,
) -> None:
    """Respond, or follow up when the interaction was already answered or deferred."""
    if interaction.response.is_done():
        await interaction.followup.send(content or "", ephemeral=ephemeral, **kwargs)
    else:
        await interaction.response.send_message(content, ephemeral=ephemeral, **kwargs)
