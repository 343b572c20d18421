"""Fixtures of the bot tests: the fake Discord server, and a store on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.store.engine import SessionMaker
from tests.bot.test_migrations import postgres_url  # noqa: F401 (fixture)
from tests.fake_discord import FakeDiscord


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A test using it runs on SQLite and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def both_stores(store_url: str) -> AsyncIterator[SessionMaker]:
    """A migrated store at ``store_url`` (each test runs once per database)."""
    from bot.store import schema
    from bot.store.engine import create_engine, create_sessionmaker

    await asyncio.to_thread(schema.upgrade, store_url, "head")
    engine = create_engine(store_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def fake_discord(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    """A fake Discord on 127.0.0.1 that discord.py is pointed at for this test."""
    fake = FakeDiscord()
    await fake.start()
    fake.patch(monkeypatch)
    try:
        yield fake
    finally:
        await fake.stop()
