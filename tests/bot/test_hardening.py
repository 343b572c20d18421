"""Issue 13: real genres from the fingerprint, escaped user text, Discord's limits, `/genre
stats` without internals, nothing heavy on the event loop, bounded per-guild caches."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import discord
import pytest

from bot import text
from bot.cogs import leaderboard
from bot.cogs.generation import GenerationCog
from bot.cogs.leaderboard import LeaderboardCog, generator_state
from bot.errors import MicrogenreError
from bot.issued import ISSUED_IDLE_S
from bot.service import GenreRequest, GenreService
from bot.store.generations import reserve_generations
from bot.store.votes import add_favorite
from model.artifacts import default_adapter, load_fingerprint
from tests.bot.fakes import ScriptedGenerator
from tests.bot.test_cogs import CHANNEL, GUILD, FakeBot, fake_interaction

NO_MENTIONS = discord.AllowedMentions.none().to_dict()


def sent_text(interaction: Any) -> tuple[str, dict[str, Any]]:
    call = interaction.response.send_message.await_args
    return call.args[0], call.kwargs


def shipped_generator() -> ScriptedGenerator:
    gen = ScriptedGenerator()
    gen.fingerprint = load_fingerprint(default_adapter())
    return gen


async def test_check_knows_real_genres_from_the_shipped_fingerprint(
    sessions: Any, tmp_path: Path
) -> None:
    bot = FakeBot(tmp_path, sessions, shipped_generator())
    cog = LeaderboardCog(bot)  # type: ignore[arg-type]
    interaction = fake_interaction()
    await cog.check(interaction, name="Shoegaze")
    content, _ = sent_text(interaction)
    assert "**Shoegaze** is a real genre" in content
    unknown = fake_interaction()
    await cog.check(unknown, name="glass harp dub")
    assert "not a genre I know" in sent_text(unknown)[0]


async def test_map_without_positions_says_how_to_get_them(sessions: Any, tmp_path: Path) -> None:
    bot = FakeBot(tmp_path, sessions, ScriptedGenerator())
    cog = LeaderboardCog(bot)  # type: ignore[arg-type]
    interaction = fake_interaction()
    with pytest.raises(MicrogenreError, match="microgenre scrape --source everynoise"):
        await cog.map(interaction)
    interaction.followup.send.assert_not_awaited()


async def test_map_indexes_and_places_off_the_event_loop(
    sessions: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.store.genres import import_records
    from scraping.records import GenreRecord

    await import_records(
        sessions, [GenreRecord.create("polka", "everynoise", extra={"x": 1, "y": 2})]
    )
    threads: list[threading.Thread] = []
    real_place_all, real_index = leaderboard.place_all, leaderboard.WordIndex

    def place_all(*args: Any) -> Any:
        threads.append(threading.current_thread())
        return real_place_all(*args)

    def word_index(*args: Any) -> Any:
        threads.append(threading.current_thread())
        return real_index(*args)

    monkeypatch.setattr(leaderboard, "place_all", place_all)
    monkeypatch.setattr(leaderboard, "WordIndex", word_index)
    monkeypatch.setattr(leaderboard, "render_png", lambda *a: b"png")
    cog = LeaderboardCog(FakeBot(tmp_path, sessions, ScriptedGenerator()))  # type: ignore[arg-type]
    await cog.map(fake_interaction())
    assert len(threads) == 2 and threading.current_thread() not in threads


def test_map_has_a_per_guild_cooldown() -> None:
    cog = LeaderboardCog(MagicMock())
    command = next(c for c in cog.commands_ if c.name == "map")
    assert command.checks, "no cooldown check"


async def test_check_escapes_a_masked_link(sessions: Any, tmp_path: Path) -> None:
    cog = LeaderboardCog(FakeBot(tmp_path, sessions, ScriptedGenerator()))  # type: ignore[arg-type]
    interaction = fake_interaction()
    await cog.check(interaction, name="[free nitro](https://evil.example/x)")
    content, kwargs = sent_text(interaction)
    assert "\\[free nitro\\]" in content
    assert kwargs["allowed_mentions"].to_dict() == NO_MENTIONS


async def test_generated_names_are_escaped_and_mention_nobody(
    sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["*star* polka @everyone"])
    bot = FakeBot(tmp_path, sessions, gen)
    cog = GenerationCog(bot)  # type: ignore[arg-type]
    interaction = fake_interaction()
    await cog.new(interaction, count=1, like=None, weirdness=3)
    await cog.pacer.close()
    call = interaction.followup.send.await_args
    assert call.args[0] == "🎵 **\\*star\\* polka @everyone**"
    assert call.kwargs["allowed_mentions"].to_dict() == NO_MENTIONS


async def test_favorites_escape_names_and_fit_the_embed(sessions: Any, tmp_path: Path) -> None:
    names = [f"{i} [x](https://evil.example/{i}) " + "very long genre " * 10 for i in range(20)]
    reserved = await reserve_generations(
        sessions,
        [n[:200] for n in names],
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=7,
        model_name="m",
        model_version_id=None,
        options={},
    )
    for i, r in enumerate(reserved):
        assert r.generation_id is not None
        from bot.store.generations import attach_message

        await attach_message(
            sessions, r.generation_id, message_id=10**17 + i, channel_id=10**17 + 5
        )
        await add_favorite(sessions, r.generation_id, 7)
    cog = LeaderboardCog(FakeBot(tmp_path, sessions, ScriptedGenerator()))  # type: ignore[arg-type]
    interaction = fake_interaction()
    who = MagicMock(spec=discord.User, id=7, display_name="**boss** " + "x" * 300)
    await cog.favorites(interaction, user=who)
    embed = interaction.response.send_message.await_args.kwargs["embed"]
    assert len(embed.title) <= text.EMBED_TITLE and "\\*\\*boss\\*\\*" in embed.title
    assert len(embed.description) <= text.EMBED_DESCRIPTION and len(embed) <= text.EMBED_TOTAL
    assert "[x](https://evil" not in embed.description


def unhealthy_generator(error: str) -> ScriptedGenerator:
    gen = ScriptedGenerator()
    gen.health = lambda: {  # type: ignore[method-assign]
        "state": "restarting",
        "restarts": 3,
        "last_error": error,
    }
    return gen


async def test_stats_shows_a_generic_state_and_logs_the_error_once(
    sessions: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    error = "worker died: POST http://10.1.2.3:8001/v1/x failed at /srv/microgenre/secret.py " * 60
    cog = LeaderboardCog(FakeBot(tmp_path, sessions, unhealthy_generator(error)))  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        interaction = fake_interaction()
        await cog.stats(interaction)
        embed = interaction.followup.send.await_args.kwargs["embed"]
        fields = {f.name: f.value for f in embed.fields}
        assert "restarting after a crash" in fields["Generator"]
        assert "10.1.2.3" not in str(embed.to_dict()) and "/srv" not in str(embed.to_dict())
        assert all(len(f.value) <= text.FIELD_VALUE for f in embed.fields)
    logged = [r for r in caplog.records if "10.1.2.3" in r.getMessage()]
    assert len(logged) == 1


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ({"state": "ready", "restarts": 0}, "ready"),
        ({"state": "restarting", "restarts": 2}, "restarting after a crash"),
        ({"state": "failed"}, "down"),
        ({"state": "closed"}, "down"),
        ({"state": "starting"}, "starting"),
        ({"alive": True, "transport": "http"}, "ready"),
        ({"alive": False, "transport": "http"}, "down"),
    ],
)
def test_generator_state_is_short_and_generic(health: dict[str, Any], expected: str) -> None:
    assert generator_state(health, since_s=None).startswith(expected)


def test_generator_state_says_since_when() -> None:
    state = generator_state({"state": "restarting"}, since_s=125)
    assert state == "restarting after a crash 2 min ago"


async def test_retrain_status_fits_a_message(sessions: Any, tmp_path: Path) -> None:
    from bot.cogs.admin import AdminCog
    from bot.store import runs as runs_store

    for guild in (GUILD, None):  # whichever scope the status reads
        run = await runs_store.create_run(
            sessions, requested_by=1, guild_id=guild, channel_id=CHANNEL, options={}
        )
        assert run is not None
        await runs_store.update_run(sessions, run.id, status="failed", error="boom " * 1000)
    bot = FakeBot(tmp_path, sessions, ScriptedGenerator())
    retrainer = MagicMock(running=False, progress=None)
    retrainer.progress_of.return_value = None  # no run in progress, in any scope
    bot.retrainer = retrainer  # type: ignore[attr-defined]
    cog = AdminCog(bot)  # type: ignore[arg-type]
    interaction = fake_interaction()
    # The bot's owner sees a failed run's whole reason: clipped to fit.
    owner = dataclasses.replace(bot.config.bot, owner_ids=(interaction.user.id,))
    bot.config = dataclasses.replace(bot.config, bot=owner)
    await cog.status.callback(cog, interaction)  # type: ignore[arg-type, call-arg]
    content, _ = sent_text(interaction)
    assert len(content) <= text.MESSAGE and content.endswith("…")


# ---------------------------------------------------------------- bounded per-guild caches


async def test_issued_cache_is_bounded_and_reloads_from_the_store(
    sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    service = GenreService(gen, sessions, max_cached_guilds=2)
    gen.enqueue(["alpha dub"])
    first = await service.deliver(GenreRequest(1, guild_id=1, user_id=1))
    await reserve_generations(
        sessions,
        first.genres,
        guild_id=1,
        channel_id=1,
        user_id=1,
        model_name="m",
        model_version_id=None,
        options={},
    )
    for guild in (2, 3, 4):
        gen.enqueue([f"genre of {guild}"])
        await service.deliver(GenreRequest(1, guild_id=guild, user_id=1))
    assert service.cached_guilds <= 2
    # Guild 1 was evicted; its issued names come back from the store.
    gen.enqueue(["alpha dub", "beta dub"])
    again = await service.deliver(GenreRequest(1, guild_id=1, user_id=1))
    assert again.genres == ["beta dub"]
    assert "alpha dub" in gen.calls[-1]["exclude"]


async def test_a_guild_with_a_request_in_flight_is_never_evicted(
    sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    service = GenreService(gen, sessions, max_cached_guilds=1)
    gate = gen.gate = asyncio.Event()
    gen.enqueue(["other dub", "slow dub"])
    # Know when the slow request reaches the generator (a fixed 50 ms sleep was too short on a
    # loaded CI): with no queue positions it then waits on ``gate`` in the same step.
    entered = asyncio.Event()
    generate = gen.generate

    async def generate_and_tell(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        return await generate(*args, **kwargs)

    gen.generate = generate_and_tell
    slow = asyncio.create_task(service.deliver(GenreRequest(1, guild_id=1, user_id=1)))
    await asyncio.wait_for(entered.wait(), timeout=10)
    gen.generate = generate
    gen.gate = None  # the slow request keeps waiting on ``gate``
    await service.deliver(GenreRequest(1, guild_id=2, user_id=1))
    gate.set()
    assert (await slow).genres == ["slow dub"]
    # Guild 1 kept its live set while its request ran: it holds what it delivered.
    gen.enqueue(["slow dub", "late dub"])
    third = await service.deliver(GenreRequest(1, guild_id=1, user_id=2))
    assert third.genres == ["late dub"]


async def test_resolved_models_are_bounded_by_size_and_age(
    sessions: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = GenreService(ScriptedGenerator(), sessions, max_cached_guilds=3, model_cache_s=30.0)
    for guild in range(10):
        await service.model_for(guild)
    assert len(service._models) <= 3
    # Entries past their cache time are dropped, not just ignored.
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 31.0)
    await service.model_for(99)
    assert list(service._models) == [99]


async def test_issued_names_of_idle_guilds_expire(
    sessions: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = ScriptedGenerator()
    service = GenreService(gen, sessions, max_cached_guilds=100)
    for guild in (1, 2, 3):
        gen.enqueue([f"genre of {guild}"])
        await service.deliver(GenreRequest(1, guild_id=guild, user_id=1))
    assert service.cached_guilds == 3
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + ISSUED_IDLE_S + 1)
    gen.enqueue(["genre of four"])
    await service.deliver(GenreRequest(1, guild_id=4, user_id=1))
    assert service.cached_guilds == 1
