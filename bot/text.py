"""Text shared by the cogs and the retraining messages: formatting, Discord's limits, escaping.

Every message or embed built from data (genre names are model text, display names and options
are user text) goes through :func:`clip` or :func:`fit_embed`, so no data can push a reply past
Discord's limits, and through :func:`escape`, so nobody's text renders as markdown or as a masked
link. discord is imported only inside the functions that need it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import discord

# Discord's limits (characters), https://discord.com/developers/docs/resources/message
MESSAGE = 2000
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
FIELD_NAME = 256
FIELD_VALUE = 1024
EMBED_FIELDS = 25
FOOTER = 2048
AUTHOR = 256
EMBED_TOTAL = 6000
ELLIPSIS = "…"

_BRACKETS = re.compile(r"(?<!\\)([\[\]])")


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, with an ellipsis where it was cut.

    >>> clip("glitch polka", 20), clip("glitch polka", 8)
    ('glitch polka', 'glitch …')
    """
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(ELLIPSIS))] + ELLIPSIS[: max(0, limit)]


def escape(text: str) -> str:
    """``text`` shown literally: markdown escaped, and no ``[label](url)`` masked link.

    >>> print(escape("[free nitro](https://evil.example/x) *now*"))
    \\[free nitro\\](https://evil.example/x) \\*now\\*
    """
    from discord.utils import escape_markdown

    return _BRACKETS.sub(r"\\\1", escape_markdown(text))


_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*):/+")
_INVITE_HOSTS = re.compile(r"(?i)\b(discord(?:app)?)\.(gg|com|io|me|li)\b")


def defang_links(text: str) -> str:
    """``text`` with no link Discord would make clickable: a zero-width space breaks every
    ``scheme://`` and the invite hosts (``discord.gg/…``), and the text still reads the same.

    >>> defang_links("see https://evil.example/x or discord.gg/abc") == (
    ...     "see https:\u200b//evil.example/x or discord\u200b.gg/abc")
    True
    """
    text = _SCHEME.sub(lambda m: f"{m.group(1)}:\u200b{m.group(0)[len(m.group(1)) + 1 :]}", text)
    return _INVITE_HOSTS.sub(lambda m: f"{m.group(1)}\u200b.{m.group(2)}", text)


def clip_lines(lines: list[str], limit: int) -> str:
    """Whole lines joined by newlines, as many as fit in ``limit``, then how many were left.

    >>> clip_lines(["one", "two", "three"], 12)
    'one\\n… 2 more'
    """
    kept: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        rest = f"{ELLIPSIS} {len(lines) - i} more"
        budget = limit - len(rest) - 1 if i < len(lines) - 1 else limit
        if used + len(line) + (1 if kept else 0) > budget:
            return "\n".join([*kept, rest]) if kept else clip(line, limit)
        kept.append(line)
        used += len(line) + (1 if len(kept) > 1 else 0)
    return "\n".join(kept)


def fit_embed(embed: discord.Embed) -> discord.Embed:
    """``embed`` within every limit of Discord: each part clipped, at most 25 fields, and the
    description shortened (then fields dropped) until the whole is under 6,000 characters."""
    import discord

    data = embed.to_dict()
    if "title" in data:
        data["title"] = clip(data["title"], EMBED_TITLE)
    if "description" in data:
        data["description"] = clip(data["description"], EMBED_DESCRIPTION)
    if "footer" in data and "text" in data["footer"]:
        data["footer"]["text"] = clip(data["footer"]["text"], FOOTER)
    if "author" in data and "name" in data["author"]:
        data["author"]["name"] = clip(data["author"]["name"], AUTHOR)
    data["fields"] = [
        {**f, "name": clip(f["name"], FIELD_NAME), "value": clip(f["value"], FIELD_VALUE)}
        for f in data.get("fields", [])[:EMBED_FIELDS]
    ]
    fitted = discord.Embed.from_dict(data)
    excess = len(fitted) - EMBED_TOTAL
    if excess > 0 and fitted.description:
        fitted.description = clip(fitted.description, max(1, len(fitted.description) - excess))
    while len(fitted) > EMBED_TOTAL and fitted.fields:
        fitted.remove_field(len(fitted.fields) - 1)
    return fitted


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
