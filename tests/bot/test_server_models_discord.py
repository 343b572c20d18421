"""Per-server models as servers see them: `/genre check` names the model that invented a
genre, and through the real discord.py client one server's admin can neither see nor cancel
another server's retraining run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from bot.cogs.leaderboard import LeaderboardCog
from bot.store.generations import attach_message, reserve_generations
from tests.bot.fakes import ScriptedGenerator, make_config, running_bot
from tests.bot.test_cogs import CHANNEL, GUILD, FakeBot, fake_interaction
from tests.bot.test_integration import ephemeral_texts
from tests.fake_discord import FakeDiscord
from tests.fake_discord.server import MANAGE_GUILD, MEMBER_PERMISSIONS

pytestmark = pytest.mark.timeout(60)

SCRIPTS = Path(__file__).parent / "scripts"
GUILD_A = 1000  # the fake Discord's first guild


async def test_check_names_the_model_that_invented_the_genre(sessions: Any, tmp_path: Path) -> None:
    for i, (name, model) in enumerate(
        (("velvet dub", "guild-1000-run-0003"), ("moss waltz", None))
    ):
        [reserved] = await reserve_generations(
            sessions,
            [name],
            guild_id=GUILD,
            channel_id=CHANNEL,
            user_id=7,
            model_name=model,
            model_version_id=None,
            options={},
        )
        assert reserved.generation_id is not None
        await attach_message(sessions, reserved.generation_id, message_id=i + 1, channel_id=CHANNEL)
    cog = LeaderboardCog(FakeBot(tmp_path, sessions, ScriptedGenerator()))  # type: ignore[arg-type]
    own = fake_interaction()
    await cog.check(own, name="Velvet Dub")
    text = own.response.send_message.await_args.args[0]
    assert "was invented here" in text and "model `guild-1000-run-0003`" in text
    # A generation from before models were recorded says nothing about its model.
    unknown = fake_interaction()
    await cog.check(unknown, name="moss waltz")
    assert "model" not in unknown.response.send_message.await_args.args[0]


async def test_another_servers_admin_neither_sees_nor_cancels_a_run(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    guild_b, channel_b = 5 << 22, 6 << 22
    fake_discord.add_guild(guild_b, channel_b)
    config = make_config(tmp_path)
    slow_train = [sys.executable, str(SCRIPTS / "fake_train.py"), "ok", "2.0"]
    evaluate = [sys.executable, str(SCRIPTS / "fake_eval.py"), "0.9", "0.7"]
    admin = MEMBER_PERMISSIONS | MANAGE_GUILD
    options = {"train_command": slow_train, "eval_command": evaluate, "poll_s": 0.1}
    async with running_bot(
        config, sessions, ScriptedGenerator(), retrainer_options=options
    ) as running:
        manager = running.retrainer
        alice, bob = fake_discord.member("alice"), fake_discord.member("bob")

        async def ask(user: Any, sub: str, guild: int | None = None, **options: Any) -> str:
            inter = await fake_discord.invoke(
                user, "retrain", sub, options, permissions=admin, guild_id=guild
            )
            await fake_discord.wait_for(lambda: ephemeral_texts(fake_discord, inter))
            return "\n".join(ephemeral_texts(fake_discord, inter))

        start = await fake_discord.invoke(alice, "retrain", "start", permissions=admin)
        run = await fake_discord.wait_for(lambda: manager.progress_of(GUILD_A))
        await fake_discord.wait_for(
            lambda: f"#{run.run_id}" in (fake_discord.original(start) or {}).get("content", "")
        )
        # B's admin: no run in B, nothing of A's run shown, and a cancel in B stops nothing.
        status_b = await ask(bob, "status", guild_b)
        assert f"#{run.run_id}" not in status_b
        assert "No retraining has run in this server yet" in status_b
        cancel_b = await ask(bob, "cancel", guild_b)
        assert "This server has no retraining run" in cancel_b
        naming_a = await ask(bob, "cancel", guild_b, guild_id=str(GUILD_A))
        assert "Only the bot's owner" in naming_a
        assert manager.progress_of(GUILD_A) is not None
        # A's own admin sees it and can cancel it.
        assert f"#{run.run_id}" in await ask(alice, "status")
        assert f"#{run.run_id}" in await ask(alice, "cancel")
        outcome = await manager.wait()
        assert outcome is not None and outcome.status == "cancelled"
