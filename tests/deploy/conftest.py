"""Fixtures of the deployment tests: the fake Discord, and a blank PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.bot.test_migrations import postgres_url  # noqa: F401 (fixture)
from tests.fake_discord import FakeDiscord


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
