"""The OAuth2 URL that adds the bot to a server (`microgenre invite` prints it; the bot logs it
when it is in no server yet).

The application id comes from ``[discord] application_id`` or, when that is 0, from Discord's
``GET /oauth2/applications/@me`` with the bot token (at discord.py's API base, so tests can
point it at the fake Discord).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.errors import MicrogenreError

if TYPE_CHECKING:
    import discord

    from bot.config import Config

INVITE_SCOPES = ("bot", "applications.commands")


class InviteError(MicrogenreError):
    exit_code = 2


def required_permissions() -> discord.Permissions:
    """What the cogs use: see channels, post (follow-ups, retraining results), embeds, PNG
    files (map, loss curve), the vote reactions, and read a message's reactions back.

    >>> required_permissions().value
    117824
    """
    import discord

    return discord.Permissions(
        view_channel=True,
        send_messages=True,
        embed_links=True,
        attach_files=True,
        add_reactions=True,
        read_message_history=True,
    )


def invite_url(application_id: int) -> str:
    """The invite URL with exactly the bot's scopes and permissions.

    >>> invite_url(123)
    'https://discord.com/oauth2/authorize?client_id=123&scope=bot+applications.commands&permissions=117824'
    """
    import discord

    return discord.utils.oauth_url(
        application_id, permissions=required_permissions(), scopes=INVITE_SCOPES
    )


async def fetch_application_id(token: str) -> int:
    """The id of the application that owns ``token``, asked of Discord."""
    import aiohttp
    from discord.http import Route

    url = f"{Route.BASE}/oauth2/applications/@me"
    headers = {"Authorization": f"Bot {token}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
            session.get(url, headers=headers) as response,
        ):
            if response.status == 401:
                raise InviteError("Discord refused the bot token: check DISCORD_TOKEN")
            if response.status != 200:
                raise InviteError(f"Discord answered {response.status} for the application")
            data = await response.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise InviteError(f"cannot reach Discord: {str(exc) or type(exc).__name__}") from None
    return int(data["id"])


async def application_id_of(config: Config) -> int:
    """``[discord] application_id``, else the token's application."""
    if config.discord.application_id:
        return config.discord.application_id
    if not config.discord.token:
        raise InviteError(
            "no application id: set [discord] application_id (or MICROGENRE_DISCORD_"
            "APPLICATION_ID), or the bot token in DISCORD_TOKEN to look it up"
        )
    return await fetch_application_id(config.discord.token)
