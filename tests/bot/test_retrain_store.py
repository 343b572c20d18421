"""The store is the arbiter of the retraining rules, on SQLite and on PostgreSQL: one open run
per server, activation only by the live holder of a run nobody cancelled, leases on the
database's clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.store import runs as runs_store
from bot.store.engine import SessionMaker
from bot.store.models import TrainingRun
from bot.store.runs import RetrainRefusedError
from tests.bot.test_migrations import postgres_url  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(60)

A, B = 111, 222


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def sessions(store_url: str) -> AsyncIterator[SessionMaker]:
    from bot.store import schema
    from bot.store.engine import create_engine, create_sessionmaker

    await asyncio.to_thread(schema.upgrade, store_url, "head")
    engine = create_engine(store_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


async def enqueue(sessions: SessionMaker, guild_id: int | None, **kw: Any) -> runs_store.RunInfo:
    return await runs_store.enqueue_run(
        sessions, requested_by=1, guild_id=guild_id, channel_id=1, options={}, **kw
    )


async def open_runs(sessions: SessionMaker, guild_id: int | None) -> int:
    scope = TrainingRun.guild_id.is_(None) if guild_id is None else TrainingRun.guild_id == guild_id
    async with sessions.begin() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(TrainingRun)
            .where(scope, TrainingRun.status.in_(("pending", "running")))
        )
    return int(count or 0)


# ------------------------------------------------------------------ one open run per server


@pytest.mark.parametrize("guild", [A, None])
async def test_five_concurrent_starts_queue_exactly_one_run(
    sessions: SessionMaker, guild: int | None
) -> None:
    results = await asyncio.gather(
        *(enqueue(sessions, guild) for _ in range(5)), return_exceptions=True
    )
    queued = [r for r in results if isinstance(r, runs_store.RunInfo)]
    refused = [r for r in results if isinstance(r, RetrainRefusedError)]
    assert len(queued) == 1, results
    assert len(refused) == 4, results
    assert all("already queued" in str(r) and f"#{queued[0].id}" in str(r) for r in refused)
    assert await open_runs(sessions, guild) == 1
    # Another server still queues its own run.
    await enqueue(sessions, B)
    assert await open_runs(sessions, B) == 1


async def test_the_database_refuses_a_second_open_run_of_a_server(
    sessions: SessionMaker,
) -> None:
    from sqlalchemy.exc import IntegrityError

    async with sessions.begin() as session:
        session.add(TrainingRun(guild_id=A, status="running"))
    with pytest.raises(IntegrityError):
        async with sessions.begin() as session:
            session.add(TrainingRun(guild_id=A, status="pending"))
    # Finished runs do not count.
    async with sessions.begin() as session:
        session.add(TrainingRun(guild_id=A, status="failed"))
        session.add(TrainingRun(guild_id=A, status="succeeded"))


async def test_a_refused_start_leaves_nothing_behind(sessions: SessionMaker) -> None:
    with pytest.raises(RetrainRefusedError, match="retraining needs 3"):
        await enqueue(sessions, A, min_votes=3)
    assert await open_runs(sessions, A) == 0
    async with sessions.begin() as session:
        assert await session.scalar(select(func.count()).select_from(TrainingRun)) == 0
