"""A deployment larger than one process, on this machine: real PostgreSQL, one real
`microgenre serve`, two real `microgenre bot` processes holding shard 0 and shard 1 of 2.

The fake Discord routes each guild to the gateway connection of its shard, as Discord does.
Checks: each server is served by exactly one process; votes from both processes land in the
shared store; the same genre is never issued twice in a server even when two processes reserve
at once (forced: racing processes on PostgreSQL); killing one bot process loses nothing the other
needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.store import schema
from bot.store.engine import SessionMaker, create_engine, create_sessionmaker
from bot.store.models import Generation, Genre, Vote
from tests.conftest import REPO_ROOT
from tests.fake_discord import FakeDiscord
from tests.fake_discord.server import shard_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

SCRIPTS = Path(__file__).parent / "scripts"
# Two servers, one on each shard of 2 (Discord: shard = (guild_id >> 22) % shard_count).
GUILD_0, CHANNEL_0 = (10 << 22) + 17, 5000
GUILD_1, CHANNEL_1 = (11 << 22) + 17, 5001
TOKENS = {0: "shard-zero-token", 1: "shard-one-token"}


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROGENRE_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(values)
    return env


@contextmanager
def serve_process(tmp_path: Path) -> Iterator[str]:
    """`microgenre serve` over the scripted sampler; yields its URL."""
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "bot", "serve", "--port", "0"]
    command += ["--sampler-factory", "tests.bot.scripted_sampler:scripted_factory"]
    env = _env(MICROGENRE_PATHS_DATA_DIR=str(tmp_path / "serve-data"))
    with log.open("w") as out:
        proc = subprocess.Popen(command, stderr=out, stdout=out, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            text = log.read_text()
            serving = [line for line in text.splitlines() if line.startswith("Serving ")]
            if serving:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"microgenre serve did not start:\n{text}")
            time.sleep(0.1)
        yield serving[0].split(" on ", 1)[1].split()[0]
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def bot_process(
    tmp_path: Path, fake: FakeDiscord, shard: int, database_url: str, serve_url: str
) -> subprocess.Popen[Any]:
    """`microgenre bot` holding ``shard`` of 2, on the shared store and generation server."""
    env = _env(
        DISCORD_TOKEN=TOKENS[shard],
        MICROGENRE_DATABASE_URL=database_url,
        MICROGENRE_PATHS_DATA_DIR=str(tmp_path / f"bot-{shard}"),
        MICROGENRE_DISCORD_SHARD_COUNT="2",
        MICROGENRE_DISCORD_SHARD_IDS=str(shard),
        MICROGENRE_WORKER_TRANSPORT="remote",
        MICROGENRE_WORKER_URLS=serve_url,
        MICROGENRE_BOT_COOLDOWN_S="0",
    )
    out = (tmp_path / f"bot-{shard}.log").open("w")
    command = [sys.executable, str(SCRIPTS / "run_shard.py"), fake.api_base, fake.gateway_url]
    return subprocess.Popen(command, stdout=out, stderr=out, env=env, cwd=tmp_path)


@asynccontextmanager
async def store(url: str) -> AsyncIterator[SessionMaker]:
    await asyncio.to_thread(schema.upgrade, url, "head")
    engine = create_engine(url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


def genre_ids(fake: FakeDiscord, interaction: Any) -> list[int]:
    return [int(m["id"]) for m in fake.followups(interaction) if not m.get("_ephemeral")]


async def new_genres(fake: FakeDiscord, user: Any, guild: int, count: int) -> list[int]:
    interaction = await fake.invoke(user, "genre", "new", {"count": count}, guild_id=guild)
    await fake.wait_for(lambda: len(genre_ids(fake, interaction)) == count, within=30)
    return genre_ids(fake, interaction)


async def votes_in(sessions: SessionMaker, guild: int) -> int:
    async with sessions.begin() as session:
        query = (
            select(func.count())
            .select_from(Vote)
            .join(Generation, Generation.id == Vote.generation_id)
            .where(Generation.guild_id == guild)
        )
        return int(await session.scalar(query) or 0)


async def wait_until(predicate: Any, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


def logs(tmp_path: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*.log"))
    )


def reaction_tokens(fake: FakeDiscord, channel: int) -> set[str | None]:
    """The bot tokens the reactions in ``channel`` were added with (which process)."""
    return {c.auth for c in fake.calls_matching("PUT", f"/channels/{channel}/") if c.status}


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """The fake Discord with one server on each shard of 2 (the bots are other processes)."""
    assert shard_for(GUILD_0, 2) == 0 and shard_for(GUILD_1, 2) == 1
    discord = FakeDiscord(guild_id=GUILD_0, channel_id=CHANNEL_0)
    discord.add_guild(GUILD_1, CHANNEL_1)
    await discord.start()
    try:
        yield discord
    finally:
        await discord.stop()


async def test_two_bot_processes_split_the_servers_on_one_store(
    fake: FakeDiscord, postgres_url: str, tmp_path: Path
) -> None:
    async with store(postgres_url) as sessions:
        with serve_process(tmp_path) as serve_url:
            bots = {s: bot_process(tmp_path, fake, s, postgres_url, serve_url) for s in (0, 1)}
            try:
                await check_deployment(fake, sessions, bots)
            except BaseException:
                sys.stderr.write(logs(tmp_path))
                raise
            finally:
                for proc in bots.values():
                    _stop(proc)


async def check_deployment(
    fake: FakeDiscord,
    sessions: SessionMaker,
    bots: dict[int, subprocess.Popen[Any]],
) -> None:
    # Both processes connected, each with its own shard; only shard 0's process synced.
    await fake.wait_for(lambda: fake.shards_connected() == [(0, 2), (1, 2)], within=60)
    await fake.wait_for(lambda: "global" in fake.commands, within=30)
    syncs = fake.calls_matching("PUT", "/commands")
    assert {c.auth for c in syncs} == {f"Bot {TOKENS[0]}"}

    alice, bob = fake.member("alice"), fake.member("bob")
    # Both servers at once: each answered, by the process of its shard only.
    ids_0, ids_1 = await asyncio.gather(
        new_genres(fake, alice, GUILD_0, 3), new_genres(fake, bob, GUILD_1, 3)
    )
    await fake.wait_for(lambda: len(fake.reactions.get(ids_0[-1], {})) == 3, within=30)
    await fake.wait_for(lambda: len(fake.reactions.get(ids_1[-1], {})) == 3, within=30)
    assert reaction_tokens(fake, CHANNEL_0) == {f"Bot {TOKENS[0]}"}
    assert reaction_tokens(fake, CHANNEL_1) == {f"Bot {TOKENS[1]}"}

    # Votes handled by both processes land in the one store.
    for message_id in ids_0:
        await fake.react(bob, message_id, "👍")
    for message_id in ids_1:
        await fake.react(alice, message_id, "👎")

    async def both_voted() -> bool:
        return await votes_in(sessions, GUILD_0) == 3 and await votes_in(sessions, GUILD_1) == 3

    await wait_until(both_voted)

    # The buttons work in every process: each click is served by its server's shard.
    await check_buttons(fake, sessions, ids_0[0], ids_1[0])

    # The same genre is never issued twice in a server, even with two processes at once.
    await check_racing_reservations(sessions)

    # Kill shard 1's process outright: what it stored stays; shard 0 goes on serving.
    bots[1].kill()
    bots[1].wait(10)
    await fake.wait_for(lambda: fake.shards_connected() == [(0, 2)], within=30)
    more = await new_genres(fake, alice, GUILD_0, 2)
    await fake.react(bob, more[0], "👍")

    async def shard_0_still_votes() -> bool:
        return await votes_in(sessions, GUILD_0) == 4

    await wait_until(shard_0_still_votes)
    assert await votes_in(sessions, GUILD_1) == 3
    async with sessions.begin() as session:
        rows = (
            await session.execute(
                select(Generation.guild_id, Genre.name, Generation.message_id).join(
                    Genre, Genre.id == Generation.genre_id
                )
            )
        ).all()
    bot_rows = [r for r in rows if r[0] in (GUILD_0, GUILD_1)]
    assert sum(1 for r in bot_rows if r[0] == GUILD_0) == 5 + 1  # a weirder take
    assert sum(1 for r in bot_rows if r[0] == GUILD_1) == 3 + 3  # three variations
    assert all(r[2] is not None for r in bot_rows), "a genre message was never recorded"
    for guild in (GUILD_0, GUILD_1):
        names = [r[1] for r in bot_rows if r[0] == guild]
        assert len(names) == len(set(names))
    assert bots[0].poll() is None, "shard 0's process died with shard 1's"


async def check_buttons(
    fake: FakeDiscord, sessions: SessionMaker, message_0: int, message_1: int
) -> None:
    """ "More like this" on shard 1's server, "Weirder" on shard 0's: replies from each."""
    async with sessions.begin() as session:
        ids = dict(
            (
                await session.execute(
                    select(Generation.message_id, Generation.id).where(
                        Generation.message_id.in_([message_0, message_1])
                    )
                )
            ).all()
        )
    carol = fake.member("carol")
    await fake.click(carol, message_1, f"mg:more:{ids[message_1]}")
    await fake.click(carol, message_0, f"mg:weirder:{ids[message_0]}")
    await fake.wait_for(lambda: len(fake.replies_to(message_1)) == 3, within=30)
    await fake.wait_for(lambda: len(fake.replies_to(message_0)) == 1, within=30)
    for channel, shard in ((CHANNEL_0, 0), (CHANNEL_1, 1)):
        posts = fake.calls_matching("POST", f"/channels/{channel}/messages")
        assert {c.auth for c in posts if c.status == 200} == {f"Bot {TOKENS[shard]}"}


async def check_racing_reservations(sessions: SessionMaker) -> None:
    """Three processes reserve the same 40 genres in one server, in different orders, at once."""
    names = [f"race genre {i}" for i in range(40)]
    guild = 4242
    url = sessions.kw["bind"].url.render_as_string(hide_password=False)
    start_at = time.time() + 3.0  # every racer connected and waiting at the start line
    racers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPTS / "reserve_race.py"),
            *(url, str(guild), str(start_at), str(seed), *names),
            stdout=asyncio.subprocess.PIPE,
            env=_env(),
        )
        for seed in range(3)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), 60) for p in racers]
    got = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
    won = [name for names_of_one in got for name in names_of_one]
    assert sorted(won) == sorted(names), "a genre issued twice, or lost"
    assert sum(1 for g in got if g) >= 2, f"no race happened: {[len(g) for g in got]}"
    async with sessions.begin() as session:
        count = await session.scalar(
            select(func.count()).select_from(Generation).where(Generation.guild_id == guild)
        )
    assert count == len(names)
