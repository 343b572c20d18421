"""Alembic environment: async engine, batch mode (for SQLite ALTERs), the models' metadata."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from alembic.util import CommandError
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store.engine import create_engine
from bot.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        # All the steps of one command in one transaction, on SQLite too (see _sqlite_setup):
        # a step that fails or refuses leaves the database as it was.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            _check_foreign_keys(connection)


def _sqlite_setup(engine: AsyncEngine) -> None:
    """SQLite: migrations in a real transaction, with foreign keys off.

    The driver would commit each DDL statement as it goes, so SQLAlchemy begins the transaction
    itself (``BEGIN IMMEDIATE``: no other writer between a step's checks and its changes).
    Foreign keys are off because a batch step rebuilds a table by dropping it, and dropping
    ``model_versions`` with them on would set every ``model_version_id`` pointing to it to
    NULL. The pragma only works outside a transaction, hence on connecting; it is back on
    before the connection is let go (:func:`_pragma`), and :func:`_check_foreign_keys` checks
    the result before the commit.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        tables = sorted({str(row[0]) for row in broken})
        raise CommandError(
            f"the migration would leave {len(broken)} rows whose foreign keys point nowhere "
            f"(in {', '.join(tables)}); nothing was changed"
        )


def _pragma(connection: Connection, pragma: str) -> None:
    """Run a pragma on the driver's connection, outside SQLAlchemy's transactions."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


async def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        _sqlite_setup(engine)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
            if sqlite:
                await connection.run_sync(_pragma, "foreign_keys=ON")
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
