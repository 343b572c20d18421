"""SQLite under write contention: a write waits its turn rather than failing.

SQLite has one writer at a time, and its busy handler is not a fair queue: under load (the
100-click benchmark beside a training run) a waiting write can lose the lock again and again,
and with a 5 s busy timeout 10 of 100 clicks failed with "database is locked". A write now
waits up to ``BUSY_TIMEOUT_MS``."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import text

from bot.store.engine import BUSY_TIMEOUT_MS, create_engine


async def test_a_write_outwaits_another_connection_holding_the_lock_for_8_s(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    with sqlite3.connect(path) as setup:  # as the store is: WAL mode
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (x INTEGER)")
    holding, done = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t VALUES (1)")
        holding.set()
        time.sleep(8.0)
        other.execute("COMMIT")
        other.close()
        done.set()

    thread = threading.Thread(target=hold_the_write_lock)
    thread.start()
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        assert await asyncio.to_thread(holding.wait, 10)
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (2)"))
        assert done.is_set()  # it waited for the other's commit
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT x FROM t ORDER BY x"))).all()
        assert [r[0] for r in rows] == [1, 2]
    finally:
        thread.join()
        await engine.dispose()
    assert BUSY_TIMEOUT_MS >= 8000
