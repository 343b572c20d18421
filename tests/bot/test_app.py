"""Start-up options: dev-guild sync, sync only on change, sharding, the command payload."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bot.app import MicrogenreBot, ShardedMicrogenreBot
from bot.config import DiscordConfig
from tests.bot.fakes import ScriptedGenerator, make_config, running_bot
from tests.fake_discord import FakeDiscord


async def test_dev_guild_sync_and_guild_scoped_commands(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    config = dataclasses.replace(
        config, discord=DiscordConfig(token="t", dev_guild_id=fake_discord.guild_id)
    )
    gen = ScriptedGenerator()
    gen.enqueue(["lichen step"])
    async with running_bot(config, sessions, gen) as running:
        assert isinstance(running.bot, MicrogenreBot)
        assert running.bot.sync_result == f"synced 2 commands (guild:{fake_discord.guild_id})"
        puts = fake_discord.calls_matching("PUT", "/commands")
        assert [c.path for c in puts] == [
            f"/applications/{fake_discord.application_id}/guilds/{fake_discord.guild_id}/commands"
        ]
        names = {c["name"] for c in fake_discord.commands[f"guild:{fake_discord.guild_id}"]}
        assert names == {"genre", "retrain"}
        # Interactions of guild commands carry data.guild_id; the tree must still find them.
        inter = await fake_discord.invoke(fake_discord.member("ann"), "genre", "new", {})
        await fake_discord.wait_for(lambda: fake_discord.followups(inter))
    # A command change (here: forcing) syncs again; an unchanged start does not.
    async with running_bot(config, sessions, ScriptedGenerator()) as running:
        assert running.bot.sync_result == f"unchanged (guild:{fake_discord.guild_id})"
        assert await running.bot.sync_commands(force=True) == (
            f"synced 2 commands (guild:{fake_discord.guild_id})"
        )
    assert len(fake_discord.calls_matching("PUT", "/commands")) == 2


async def test_auto_sharded_bot_when_shards_are_configured(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    config = dataclasses.replace(config, discord=DiscordConfig(token="t", shard_count=1))
    gen = ScriptedGenerator()
    gen.enqueue(["sharded dub"])
    async with running_bot(config, sessions, gen) as running:
        assert isinstance(running.bot, ShardedMicrogenreBot)
        assert running.bot.shard_count == 1
        inter = await fake_discord.invoke(fake_discord.member("ann"), "genre", "new", {})
        await fake_discord.wait_for(lambda: fake_discord.followups(inter))
    assert fake_discord.identify_count == 1


async def test_command_payload_describes_every_option(sessions: Any, tmp_path: Path) -> None:
    from bot.app import COG_MODULES, make_bot
    from bot.service import GenreService

    bot = make_bot(make_config(tmp_path), sessions, GenreService(ScriptedGenerator(), sessions))
    for module in COG_MODULES:
        await bot.load_extension(module)
    bot.tree.add_command(bot.genre_group)
    payload = {c["name"]: c for c in bot.command_payload(None)}
    genre = {o["name"]: o for o in payload["genre"]["options"]}
    assert set(genre) == {"new", "blend", "top", "favorites", "stats", "check", "map", "daily"}
    daily = {o["name"]: o for o in genre["daily"]["options"]}
    assert set(daily) == {"set", "off"}
    channel, hour = daily["set"]["options"]
    assert (channel["name"], channel["type"], channel["channel_types"]) == (
        "channel",
        7,
        [0, 5],
    )  # text, announcement
    assert (hour["name"], hour["min_value"], hour["max_value"]) == ("hour", 0, 23)
    count = next(o for o in genre["new"]["options"] if o["name"] == "count")
    assert (count["min_value"], count["max_value"]) == (1, 5)
    periods = next(o for o in genre["top"]["options"] if o["name"] == "period")
    assert [c["value"] for c in periods["choices"]] == ["day", "week", "month", "all"]
    kinds = next(o for o in genre["top"]["options"] if o["name"] == "kind")
    assert [c["value"] for c in kinds["choices"]] == [
        "new",
        "like",
        "variation",
        "weirder",
        "blend",
        "daily",
    ]
    assert kinds["required"] is False
    parents = {o["name"]: o for o in genre["blend"]["options"]}
    assert parents["a"]["required"] and parents["b"]["required"]
    assert parents["a"]["max_length"] == 100
    assert payload["genre"]["contexts"] is None and payload["genre"]["dm_permission"] is False
    assert payload["retrain"]["default_member_permissions"] == 32  # Manage Server
    for command in payload.values():
        for option in command.get("options", []):
            assert option["description"]
    await bot.close()


async def test_refused_token_is_a_readable_error(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    import pytest

    from bot.app import DiscordConnectionError, make_bot, serve_bot
    from bot.service import GenreService

    fake_discord.reject_token = True
    service = GenreService(ScriptedGenerator(), sessions)
    bot = make_bot(make_config(tmp_path), sessions, service)
    with pytest.raises(DiscordConnectionError, match="refused the bot token"):
        await serve_bot(bot, "wrong", install_signals=False)
