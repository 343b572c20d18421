"""bot/text.py: clipping to Discord's limits and escaping user text."""

from __future__ import annotations

import discord
import pytest

from bot import text
from bot.text import clip, escape, fit_embed


@pytest.mark.parametrize(("raw", "limit"), [("x" * 5000, 1024), ("abc", 2), ("é" * 300, 256)])
def test_clip_respects_the_limit_and_marks_the_cut(raw: str, limit: int) -> None:
    clipped = clip(raw, limit)
    assert len(clipped) <= limit
    assert clipped.endswith("…")
    assert raw.startswith(clipped[:-1])


def test_clip_keeps_short_text() -> None:
    assert clip("glitch polka", 256) == "glitch polka"


@pytest.mark.parametrize(
    "raw",
    [
        "[free nitro](https://evil.example/x)",
        "a] [b](https://evil.example/y)",
        "**bold** _it_ ~~s~~ `code` ||spoiler||",
    ],
)
def test_escape_defuses_links_and_formatting(raw: str) -> None:
    escaped = escape(raw)
    # No unescaped markdown character is left.
    for i, ch in enumerate(escaped):
        if ch in "[]*_~`|>":
            assert i > 0 and escaped[i - 1] == "\\", (escaped, i)
    assert escaped.replace("\\", "") == raw


def test_escape_defuses_quotes_and_headings() -> None:
    assert escape("> quote").startswith("\\>")
    assert escape("# big").startswith("\\#")


def test_fit_embed_applies_every_limit() -> None:
    embed = discord.Embed(title="t" * 300, description="d" * 5000)
    for i in range(30):
        embed.add_field(name=f"n{i}" * 200, value="v" * 2000)
    embed.set_footer(text="f" * 3000)
    fitted = fit_embed(embed)
    assert len(fitted.title or "") <= text.EMBED_TITLE
    assert len(fitted.description or "") <= text.EMBED_DESCRIPTION
    assert len(fitted.fields) <= text.EMBED_FIELDS
    assert all(len(f.name or "") <= text.FIELD_NAME for f in fitted.fields)
    assert all(len(f.value or "") <= text.FIELD_VALUE for f in fitted.fields)
    assert len(fitted.footer.text or "") <= text.FOOTER
    assert len(fitted) <= text.EMBED_TOTAL


def test_fit_embed_leaves_a_small_embed_alone() -> None:
    embed = discord.Embed(title="stats", description="all good")
    embed.add_field(name="a", value="b")
    assert fit_embed(embed).to_dict() == discord.Embed.from_dict(embed.to_dict()).to_dict()
