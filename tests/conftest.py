"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import early_soak
from tests.isolation import private_variable

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's config.toml or MICROGENRE_* variables."""
    for name in list(os.environ):
        if private_variable(name):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    early_soak.soak_last(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the soak run now if its test is selected: it goes on beside the other tests."""
    if not session.config.option.collectonly and any(map(early_soak.is_soak, session.items)):
        early_soak.RUN.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    early_soak.RUN.stop()


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
