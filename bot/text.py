"""Plain-text formatting shared by the cogs and the retraining messages (no discord import)."""

from __future__ import annotations


def jump_url(guild_id: int, channel_id: int | None, message_id: int | None) -> str | None:
    """A link to a message, or None when the message is unknown.

    >>> jump_url(1, 2, 3), jump_url(1, None, 3)
    ('https://discord.com/channels/1/2/3', None)
    """
    if channel_id is None or message_id is None:
        return None
    return f"https://discord.com/channels/{guild_id}/{channel_id}/{message_id}"


def mention(user_id: int | None) -> str:
    """
    >>> mention(42), mention(None)
    ('<@42>', 'someone')
    """
    return f"<@{user_id}>" if user_id else "someone"


def progress_bar(fraction: float, width: int = 20) -> str:
    """A text progress bar.

    >>> progress_bar(0.5, 10)
    '█████░░░░░ 50%'
    """
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled) + f" {fraction * 100:.0f}%"


def format_duration(seconds: float | None) -> str:
    """Seconds as a short human duration.

    >>> format_duration(75), format_duration(3725), format_duration(None)
    ('1m 15s', '1h 2m', '?')
    """
    if seconds is None or seconds < 0:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"
