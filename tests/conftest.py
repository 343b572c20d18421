"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's config.toml or MICROGENRE_* variables."""
    for name in list(os.environ):
        if (
            name.startswith("MICROGENRE_")
            and not name.startswith("MICROGENRE_TEST_")
            and name != "MICROGENRE_REQUIRE_POSTGRES"
        ) or name == "DISCORD_TOKEN":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def shared_data() -> Path:
    """The real data in ../shared/data; the test is skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
async def sessions(sqlite_url: str) -> AsyncIterator[object]:
    """A migrated SQLite store in tmp_path, as an async_sessionmaker."""
    import asyncio

    from bot.store import schema
    from bot.store.engine import create_engine, create_sessionmaker

    await asyncio.to_thread(schema.upgrade, sqlite_url, "head")
    engine = create_engine(sqlite_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()
