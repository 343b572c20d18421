"""`microgenre invite` against the fake Discord, and the start-up lines a first run needs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import discord
import pytest

from bot.app import DiscordConnectionError, make_bot, serve_bot
from bot.config import DiscordConfig
from bot.service import GenreService
from tests.bot.fakes import ScriptedGenerator, make_config, running_bot
from tests.fake_discord import FakeDiscord


async def run_invite(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, **env: str
) -> tuple[int, str, str]:
    from bot.cli import entry

    for key in ("DISCORD_TOKEN", "MICROGENRE_DISCORD_TOKEN", "MICROGENRE_DISCORD_APPLICATION_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # In a thread: the fake Discord answers on this test's event loop.
    code = await asyncio.to_thread(entry, ["invite"])
    out, err = capsys.readouterr()
    return code, out, err


def query(url: str) -> dict[str, list[str]]:
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "discord.com", "/oauth2/authorize")
    return parse_qs(parts.query)


def needed() -> discord.Permissions:
    """What the cogs use: post (follow-ups, retraining results), embeds, the map and loss PNGs,
    vote reactions, and reading a message's reactions back."""
    return discord.Permissions(
        view_channel=True,
        send_messages=True,
        embed_links=True,
        attach_files=True,
        add_reactions=True,
        read_message_history=True,
    )


async def test_invite_fetches_the_application_id_with_the_token(
    fake_discord: FakeDiscord,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = await run_invite(capsys, monkeypatch, DISCORD_TOKEN="fake-token")
    assert code == 0, err
    url = out.strip()
    assert len(out.strip().splitlines()) == 1
    q = query(url)
    assert q["client_id"] == [str(fake_discord.application_id)]
    assert q["scope"] == ["bot applications.commands"]
    assert "scope=bot+applications.commands&" in url
    assert discord.Permissions(int(q["permissions"][0])) == needed()
    (call,) = fake_discord.calls_matching("GET", "/oauth2/applications/@me")
    assert call.status == 200
    assert "fake-token" not in out + err


async def test_invite_uses_the_configured_application_id_without_calling_discord(
    fake_discord: FakeDiscord,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = await run_invite(capsys, monkeypatch, MICROGENRE_DISCORD_APPLICATION_ID="4242")
    assert code == 0, err
    q = query(out.strip())
    assert q["client_id"] == ["4242"]
    assert int(q["permissions"][0]) == needed().value
    assert fake_discord.calls == []


@pytest.mark.parametrize(
    ("env", "reject", "message"),
    [
        ({"DISCORD_TOKEN": "wrong"}, True, "Error: Discord refused the bot token"),
        ({}, False, "Error: no application id"),
    ],
)
async def test_invite_errors_are_one_line_and_exit_2(
    fake_discord: FakeDiscord,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
    reject: bool,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    fake_discord.reject_token = reject
    code, out, err = await run_invite(capsys, monkeypatch, **env)
    assert code == 2
    assert out == ""
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "wrong" not in err


async def test_bot_in_no_server_logs_its_invite_url(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_discord.guilds.clear()
    caplog.set_level(logging.INFO, logger="bot")
    async with running_bot(make_config(tmp_path), sessions, ScriptedGenerator()) as running:
        assert list(running.bot.guilds) == []
    lines = [r.getMessage() for r in caplog.records if "invite" in r.getMessage()]
    assert len(lines) == 1, lines
    url = lines[0].split()[-1]
    assert query(url)["client_id"] == [str(fake_discord.application_id)]
    assert int(query(url)["permissions"][0]) == needed().value


async def test_bot_in_a_server_logs_no_invite_url(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    async with running_bot(make_config(tmp_path), sessions, ScriptedGenerator()) as running:
        assert len(running.bot.guilds) == 1
    assert not [r for r in caplog.records if "oauth2/authorize" in r.getMessage()]


async def test_global_sync_says_how_long_commands_take_to_show(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    async with running_bot(make_config(tmp_path), sessions, ScriptedGenerator()):
        pass
    hints = [r.getMessage() for r in caplog.records if "dev_guild_id" in r.getMessage()]
    assert hints == [
        "slash commands are global: Discord can take up to an hour to show them in a "
        "server; set [discord] dev_guild_id to a server id to see them there at once"
    ]
    config = make_config(tmp_path)
    config = dataclasses.replace(
        config, discord=DiscordConfig(token="t", dev_guild_id=fake_discord.guild_id)
    )
    caplog.clear()
    async with running_bot(config, sessions, ScriptedGenerator()):
        pass
    assert not [r for r in caplog.records if "dev_guild_id" in r.getMessage()]


async def test_refused_intent_is_a_readable_error(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    fake_discord.refuse_intents = True
    bot = make_bot(make_config(tmp_path), sessions, GenreService(ScriptedGenerator(), sessions))
    with pytest.raises(DiscordConnectionError) as raised:
        await serve_bot(bot, "fake-token", install_signals=False)
    assert str(raised.value) == (
        "Discord refused an intent the bot asked for; enable it in the developer portal"
    )
