"""The async engine and session factory, created once per process and injected; the
database's clock as SQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Interval, event, func, literal
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

from bot.config import DatabaseConfig
from bot.errors import StoreError

SessionMaker = async_sessionmaker[AsyncSession]


# How long a SQLite write waits for the lock (see DatabaseConfig.sqlite_busy_timeout_ms).
BUSY_TIMEOUT_MS = DatabaseConfig.sqlite_busy_timeout_ms


def create_engine(
    url: str, *, echo: bool = False, busy_timeout_ms: int = BUSY_TIMEOUT_MS
) -> AsyncEngine:
    """Create the async engine for ``url`` (``sqlite+aiosqlite`` or ``postgresql+asyncpg``).

    SQLite gets WAL mode, a busy timeout and enforced foreign keys on every connection; the
    folder of a SQLite file is created.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with a long text
        raise StoreError(f"invalid database URL: {exc}") from None
    kwargs: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_async_engine(url, **kwargs)
    except Exception as exc:  # e.g. a driver that is not installed
        raise StoreError(f"cannot use database URL {parsed.render_as_string()}: {exc}") from None

    if parsed.get_backend_name() == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine


def create_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def db_time(session: AsyncSession, offset_s: float = 0.0) -> ColumnElement[datetime]:
    """The database's clock, plus ``offset_s`` seconds, as SQL: lease and claim times never
    come from this host's clock, which may be minutes off another host's.

    SQLite writes it in the format SQLAlchemy stores its datetimes in (so that comparisons
    with stored values hold), PostgreSQL uses ``clock_timestamp()``.
    """
    if session.get_bind().dialect.name == "sqlite":
        return func.strftime(
            "%Y-%m-%d %H:%M:%f000", "now", f"{offset_s:+.3f} seconds", type_=DateTime()
        )
    clock = func.clock_timestamp(type_=DateTime(timezone=True))
    return clock + literal(timedelta(seconds=offset_s), Interval()) if offset_s else clock
