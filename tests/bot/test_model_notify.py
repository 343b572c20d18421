"""Other bot processes hear of a new model at once on PostgreSQL (LISTEN/NOTIFY); on SQLite the
model cache's time limit stays the fallback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.service import GenreService
from bot.store import versions as versions_store
from tests.bot.fakes import ScriptedGenerator
from tests.bot.test_migrations import postgres_url  # noqa: F401 (fixture)

pytestmark = [pytest.mark.timeout(60), pytest.mark.postgres]


@pytest.fixture
async def two_processes(postgres_url: str) -> AsyncIterator[tuple[Any, Any]]:  # noqa: F811
    from bot.store import schema
    from bot.store.engine import create_engine, create_sessionmaker

    await asyncio.to_thread(schema.upgrade, postgres_url, "head")
    engines = [create_engine(postgres_url) for _ in range(2)]
    try:
        yield tuple(create_sessionmaker(e) for e in engines)  # type: ignore[misc]
    finally:
        for engine in engines:
            await engine.dispose()


async def test_an_activation_reaches_the_other_process_at_once(
    two_processes: tuple[Any, Any],
) -> None:
    here_sessions, there_sessions = two_processes
    # An hour of caching: only the notification can make "there" see the change in time.
    here = GenreService(ScriptedGenerator(), here_sessions, model_cache_s=3600.0)
    there = GenreService(ScriptedGenerator(), there_sessions, model_cache_s=3600.0)
    await here.start()
    await there.start()
    try:
        assert await there.model_for(7) is None
        await versions_store.add_version(
            here_sessions,
            name="guild-7-run-0001",
            path="/a/run-0001",
            base_model="m",
            metrics={},
            activate=True,
            guild_id=7,
        )
        await here.announce_model_change(7)
        for _ in range(100):
            version = await there.model_for(7)
            if version is not None:
                break
            await asyncio.sleep(0.05)
        assert version is not None and version.name == "guild-7-run-0001"
    finally:
        await here.close()
        await there.close()
