"""Issue 13 through the real discord.py client against the fake Discord: a fresh bot knows real
genres, `/genre map` explains what it lacks and has a cooldown, echoed text is escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from model.artifacts import default_adapter, load_fingerprint
from tests.bot.fakes import ScriptedGenerator, make_config, running_bot
from tests.bot.test_integration import ephemeral_texts
from tests.fake_discord import FakeDiscord

pytestmark = pytest.mark.timeout(60)


async def answer(fake: FakeDiscord, user: Any, sub: str, options: dict[str, Any]) -> Any:
    interaction = await fake.invoke(user, "genre", sub, options)

    def done() -> Any:
        original = fake.original(interaction)
        if (
            original
            and (original["content"] or original["embeds"])
            and not original.get("_deferred")
        ):
            return original
        return ephemeral_texts(fake, interaction) or None

    await fake.wait_for(done)
    return interaction, done()


async def test_a_fresh_bot_knows_shoegaze_and_escapes_names(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    # `microgenre db upgrade`, no scrape: the store knows no real genre.
    gen = ScriptedGenerator()
    gen.fingerprint = load_fingerprint(default_adapter())
    async with running_bot(make_config(tmp_path), sessions, gen):
        ann = fake_discord.member("ann")
        _, real = await answer(fake_discord, ann, "check", {"name": "Shoegaze"})
        assert "**Shoegaze** is a real genre" in real["content"]
        masked = "[free nitro](https://evil.example/x)"
        inter, reply = await answer(fake_discord, ann, "check", {"name": masked})
        assert "\\[free nitro\\]" in reply["content"] and masked not in reply["content"]
        [callback] = fake_discord.calls_matching("POST", f"/interactions/{inter.id}/")
        assert callback.json["data"]["allowed_mentions"] == {"parse": []}


async def test_check_answers_privately_and_defangs_links(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    """A name is user text: the answer is ephemeral, with no clickable link, invite or preview."""
    gen = ScriptedGenerator()
    gen.fingerprint = load_fingerprint(default_adapter())
    async with running_bot(make_config(tmp_path), sessions, gen):
        ann = fake_discord.member("ann")
        name = "join https://evil.example/x or discord.gg/abc123"
        inter, reply = await answer(fake_discord, ann, "check", {"name": name})
        [callback] = fake_discord.calls_matching("POST", f"/interactions/{inter.id}/")
        flags = callback.json["data"].get("flags", 0)
        assert flags & 64, "not ephemeral"  # EPHEMERAL
        assert flags & 4, "link previews not suppressed"  # SUPPRESS_EMBEDS
        content = reply["content"]
        assert "https://" not in content and "discord.gg/" not in content
        assert "evil" in content and "abc123" in content  # still readable


async def test_map_without_positions_and_its_cooldown(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    async with running_bot(make_config(tmp_path), sessions, ScriptedGenerator()):
        ann, ben = fake_discord.member("ann"), fake_discord.member("ben")
        _, texts = await answer(fake_discord, ann, "map", {})
        assert any("microgenre scrape --source everynoise" in t for t in texts)
        # Another member of the same server, right after: the per-server cooldown answers.
        inter, _ = await answer(fake_discord, ben, "map", {})
        original = fake_discord.original(inter)
        assert original is not None and original["_ephemeral"]
        assert "try again in" in original["content"]


async def test_the_started_bot_is_out_of_the_collectors_sight(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    import gc

    # Full collections over everything loaded at start stalled the loop 0.1-0.5 s.
    async with running_bot(make_config(tmp_path), sessions, ScriptedGenerator()):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
