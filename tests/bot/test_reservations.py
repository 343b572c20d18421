"""`reserve_generations` is one transaction: all of a request's genres are reserved, or none.

SQLite's savepoints commit when the outermost one is released outside a transaction, so a
reservation built from savepoints left half a request behind when something failed part-way;
those genres could never be issued in that server again.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from bot.store import schema
from bot.store.engine import SessionMaker, create_engine, create_sessionmaker
from bot.store.generations import Reserved, reserve_generations
from bot.store.models import Generation
from tests.bot.test_migrations import postgres_url  # noqa: F401 (fixture)

NAMES = ["velvet dub", "moss waltz", "glass polka", "tin shoegaze", "fog cumbia"]


async def reserve(sessions: SessionMaker, names: list[str], guild: int = 1) -> list[Reserved]:
    return await reserve_generations(
        sessions,
        names,
        guild_id=guild,
        channel_id=2,
        user_id=3,
        model_name="m",
        model_version_id=None,
        options={"count": len(names)},
    )


async def reserved_rows(sessions: SessionMaker) -> int:
    async with sessions.begin() as session:
        return int(await session.scalar(select(func.count()).select_from(Generation)) or 0)


def on_generation_insert(sessions: SessionMaker, hook: Callable[[int], None]) -> None:
    """Call ``hook(n)`` before the n-th INSERT into generations (1-based) reaches the driver."""
    engine = sessions.kw["bind"]
    seen = [0]

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO GENERATIONS"):
            seen[0] += 1
            hook(seen[0])

    event.listen(engine.sync_engine, "before_cursor_execute", before)


@contextlib.asynccontextmanager
async def migrated(url: str) -> AsyncIterator[SessionMaker]:
    await asyncio.to_thread(schema.upgrade, url, "head")
    engine = create_engine(url, busy_timeout_ms=300)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SessionMaker]:
    async with migrated(f"sqlite+aiosqlite:///{tmp_path / 'reserve.db'}") as sessions:
        yield sessions


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[SessionMaker]:  # noqa: F811 (fixture)
    async with migrated(postgres_url) as sessions:
        yield sessions


class InjectedError(RuntimeError):
    pass


async def test_an_error_part_way_reserves_nothing(store: SessionMaker) -> None:
    await check_an_error_part_way_reserves_nothing(store)


@pytest.mark.postgres
async def test_an_error_part_way_reserves_nothing_on_postgres(pg_store: SessionMaker) -> None:
    await check_an_error_part_way_reserves_nothing(pg_store)


async def check_an_error_part_way_reserves_nothing(store: SessionMaker) -> None:
    def fail_third(n: int) -> None:
        if n == 3:
            raise InjectedError("the store went away")

    on_generation_insert(store, fail_third)
    with pytest.raises(InjectedError):
        await reserve(store, NAMES)
    assert await reserved_rows(store) == 0
    # All five can still be issued in that server.
    again = await reserve(store, NAMES)
    assert [r.reason for r in again] == [None] * 5
    assert await reserved_rows(store) == 5


async def test_a_writer_cannot_get_in_between_and_leave_half_a_request(tmp_path: Path) -> None:
    """Another process tries to take SQLite's write lock while a count:5 request is reserving.

    Part-way through, another connection asks for the write lock (and keeps it when it gets
    it). A reservation in one transaction already holds the lock, so the other writer is
    refused and all five genres are reserved; with savepoints committing early the other
    writer got in and the request failed with two genres reserved for good.
    """
    path = tmp_path / "locked.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(schema.upgrade, url, "head")
    engine = create_engine(url, busy_timeout_ms=300)
    sessions = create_sessionmaker(engine)
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    got_lock: list[bool] = []

    def grab_lock(n: int) -> None:
        if n == 3:
            try:
                other.execute("BEGIN IMMEDIATE")
                got_lock.append(True)
            except sqlite3.OperationalError:  # "database is locked"
                got_lock.append(False)

    on_generation_insert(sessions, grab_lock)
    try:
        try:
            reserved = await reserve(sessions, NAMES)
        except Exception:
            reserved = []
        finally:
            if other.in_transaction:
                other.execute("ROLLBACK")
        assert got_lock == [False]
        assert [r.reason for r in reserved] == [None] * 5
        assert await reserved_rows(sessions) == 5
    finally:
        other.close()
        await engine.dispose()


async def test_duplicates_within_and_across_requests_are_refused(store: SessionMaker) -> None:
    await check_duplicates_are_refused(store)


@pytest.mark.postgres
async def test_duplicates_are_refused_on_postgres(pg_store: SessionMaker) -> None:
    await check_duplicates_are_refused(pg_store)


async def check_duplicates_are_refused(store: SessionMaker) -> None:
    first = await reserve(store, ["velvet dub", "Velvet  Dub", "moss waltz"])
    assert [r.reason for r in first] == [None, "issued", None]
    racing = await asyncio.gather(*(reserve(store, ["glass polka"], guild=7) for _ in range(4)))
    assert sorted(r[0].reason or "ok" for r in racing) == ["issued", "issued", "issued", "ok"]
    assert [r.reason for r in await reserve(store, ["moss waltz"], guild=8)] == [None]
    assert await reserved_rows(store) == 4


@contextlib.asynccontextmanager
async def advisory_lock_held(sessions: SessionMaker, *keys: int) -> AsyncIterator[None]:
    """Another connection holds the session-level advisory lock ``keys`` meanwhile."""
    from sqlalchemy import text

    engine = sessions.kw["bind"]
    args = ", ".join(f":k{i}" for i in range(len(keys)))
    params = {f"k{i}": key for i, key in enumerate(keys)}
    async with engine.connect() as conn:
        await conn.execute(text(f"SELECT pg_advisory_lock({args})"), params)
        try:
            yield
        finally:
            await conn.execute(text(f"SELECT pg_advisory_unlock({args})"), params)


@pytest.mark.postgres
@pytest.mark.parametrize("guild", [1, 1039473418735685712])
async def test_reservations_lock_in_their_own_namespace(pg_store: SessionMaker, guild: int) -> None:
    """Another user of the database that locks the bare number of a guild id (the one-number
    key space everybody shares) does not hold up that guild's reservations."""
    async with advisory_lock_held(pg_store, guild):
        done = await asyncio.wait_for(reserve(pg_store, ["lonely polka"], guild=guild), 5)
    assert done[0].generation_id is not None


@pytest.mark.postgres
async def test_one_guilds_reservations_still_take_turns(pg_store: SessionMaker) -> None:
    from bot.store.generations import ADVISORY_NAMESPACE, guild_lock_key

    guild = 1039473418735685712
    async with advisory_lock_held(pg_store, ADVISORY_NAMESPACE, guild_lock_key(guild)):
        waiting = asyncio.ensure_future(reserve(pg_store, ["patient polka"], guild=guild))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        # Another guild is not held up.
        await asyncio.wait_for(reserve(pg_store, ["other polka"], guild=guild + 1), 5)
    assert (await asyncio.wait_for(waiting, 5))[0].generation_id is not None


def test_guild_lock_keys_fit_int4_and_never_change() -> None:
    from bot.store.generations import guild_lock_key

    for guild in (0, 1, 2**31, 2**63 - 1, 1039473418735685712):
        assert -(2**31) <= guild_lock_key(guild) < 2**31
    assert guild_lock_key(1039473418735685712) == guild_lock_key(1039473418735685712)
