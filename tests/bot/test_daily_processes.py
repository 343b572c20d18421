"""The genre of the day under two real `microgenre bot` processes on PostgreSQL, both in the
same server, with a clock the test drives (a file both read): one post per day, not two."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.store import daily as daily_store
from bot.store import schema
from bot.store.engine import create_engine, create_sessionmaker
from bot.store.models import DailyPost
from tests.fake_discord import FakeDiscord

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(150)]

LAUNCHER = Path(__file__).parent / "scripts" / "run_daily_bot.py"
# Checks of each process (every 0.2 s) that must not post again after the day's post.
SETTLE_S = 1.0


async def start(fake: FakeDiscord, url: str, tmp_path: Path, name: str, clock: Path) -> Any:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MICROGENRE_")},
        "DISCORD_TOKEN": "fake-token",
        "MICROGENRE_DATABASE_URL": url,
        "MICROGENRE_PATHS_DATA_DIR": str(tmp_path / name),
    }
    log = (tmp_path / f"{name}.log").open("wb")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(LAUNCHER),
        fake.api_base,
        fake.gateway_url,
        str(clock),
        env=env,
        stdout=log,
        stderr=log,
    )


def set_clock(clock: Path, when: str) -> None:
    """Write the time in one step (a rename): the bots read the file every 0.2 s, and a plain
    write lets them see it empty (CI once did: "Invalid isoformat string: ''")."""
    partial_file = clock.with_suffix(".tmp")
    partial_file.write_text(when, encoding="utf-8")
    partial_file.replace(clock)


async def test_two_bot_processes_post_one_genre_a_day(
    fake_discord: FakeDiscord, postgres_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(schema.upgrade, postgres_url, "head")
    engine = create_engine(postgres_url)
    sessions = create_sessionmaker(engine)
    clock = tmp_path / "clock.txt"
    set_clock(clock, "2027-03-01T08:59:00+00:00")
    channel = fake_discord.channel_id
    await daily_store.set_schedule(
        sessions,
        fake_discord.guild_id,
        channel_id=channel,
        hour=9,
        set_by=None,
        now=datetime(2027, 3, 1, tzinfo=UTC),
    )
    logs = [tmp_path / f"{name}.log" for name in ("a", "b")]
    procs = [await start(fake_discord, postgres_url, tmp_path, n, clock) for n in ("a", "b")]

    def posts() -> int:
        return len(fake_discord.calls_matching("POST", f"/channels/{channel}/messages"))

    def reached(count: int) -> bool:
        return posts() >= count

    try:
        # Both ready (both in the server, both checking every 0.2 s) before the hour comes.
        for _ in range(600):
            if all("connected as" in p.read_text(errors="replace") for p in logs):
                break
            assert all(proc.returncode is None for proc in procs), logs[0].read_text()
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the bots did not connect")
        for day, expected in (("2027-03-01", 1), ("2027-03-02", 2)):
            set_clock(clock, f"{day}T09:00:30+00:00")
            await fake_discord.wait_for(partial(reached, expected), within=60)
            await asyncio.sleep(SETTLE_S)
            assert posts() == expected
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(proc.wait(), 30) for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert codes == [0, 0], text[-3000:]
    assert "Traceback" not in text
    assert text.count("posted the genre of the day of guild") == 2
    async with sessions.begin() as session:
        rows = (await session.execute(select(DailyPost.day, DailyPost.message_id))).all()
    await engine.dispose()
    assert sorted(str(day) for day, _ in rows) == ["2027-03-01", "2027-03-02"]
    assert all(message_id is not None for _, message_id in rows)
