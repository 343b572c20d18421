"""Migrations run up, down and up again on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.errors import SchemaOutOfDateError
from bot.store import schema
from bot.store.engine import create_engine
from bot.store.models import Base

EXPECTED_TABLES = {t.name for t in Base.metadata.sorted_tables}


def _postgres_server_url() -> str | None:
    return os.environ.get("MICROGENRE_TEST_POSTGRES_URL")


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards.

    Skips where no server is configured, except in CI (MICROGENRE_REQUIRE_POSTGRES=1), where a
    missing or unreachable server is a failure.
    """
    server = _postgres_server_url()
    required = os.environ.get("MICROGENRE_REQUIRE_POSTGRES") == "1"
    if not server:
        if required:
            pytest.fail("MICROGENRE_REQUIRE_POSTGRES=1 but MICROGENRE_TEST_POSTGRES_URL is unset")
        pytest.skip("no PostgreSQL server (set MICROGENRE_TEST_POSTGRES_URL)")
    import asyncpg

    url = make_url(server)
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"mg_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        if required:
            pytest.fail(f"PostgreSQL required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def _schema(connection: Connection) -> dict[str, object]:
    insp = inspect(connection)
    tables = set(insp.get_table_names()) - {"alembic_version"}
    return {
        "tables": tables,
        "genres_unique": {tuple(u["column_names"]) for u in insp.get_unique_constraints("genres")}
        if "genres" in tables
        else set(),
        "votes_unique": {tuple(u["column_names"]) for u in insp.get_unique_constraints("votes")}
        if "votes" in tables
        else set(),
        "generations_columns": {c["name"] for c in insp.get_columns("generations")}
        if "generations" in tables
        else set(),
        "daily_posts_unique": {
            tuple(u["column_names"]) for u in insp.get_unique_constraints("daily_posts")
        }
        if "daily_posts" in tables
        else set(),
    }


async def _inspect(engine: AsyncEngine) -> dict[str, object]:
    async with engine.connect() as conn:
        return await conn.run_sync(_schema)


async def _round_trip(url: str) -> None:
    engine = create_engine(url)
    try:
        with pytest.raises(SchemaOutOfDateError, match="microgenre db upgrade"):
            await schema.ensure_schema_current(engine)

        await asyncio.to_thread(schema.upgrade, url, "head")
        shape = await _inspect(engine)
        assert shape["tables"] == EXPECTED_TABLES
        assert ("name",) in shape["genres_unique"]  # type: ignore[operator]
        assert ("generation_id", "user_id") in shape["votes_unique"]  # type: ignore[operator]
        assert {"guild_id", "message_id", "user_id"} <= shape["generations_columns"]  # type: ignore[operator]
        # One genre of the day per server and day: the database's rule.
        assert ("guild_id", "day") in shape["daily_posts_unique"]  # type: ignore[operator]
        lineage = {"lineage_kind", "lineage_parent_id", "lineage_text"}
        assert lineage <= shape["generations_columns"]  # type: ignore[operator]
        await schema.ensure_schema_current(engine)
        assert await schema.current_revision(engine) == schema.head_revision()

        await asyncio.to_thread(schema.downgrade, url, "base")
        assert (await _inspect(engine))["tables"] == set()
        assert await schema.current_revision(engine) is None

        await asyncio.to_thread(schema.upgrade, url, "head")
        assert (await _inspect(engine))["tables"] == EXPECTED_TABLES
        await schema.ensure_schema_current(engine)
    finally:
        await engine.dispose()


async def test_sqlite_upgrade_downgrade_upgrade(sqlite_url: str) -> None:
    await _round_trip(sqlite_url)


@pytest.mark.postgres
async def test_postgres_upgrade_downgrade_upgrade(postgres_url: str) -> None:
    await _round_trip(postgres_url)


async def test_every_migration_steps_down_and_up_one_at_a_time(sqlite_url: str) -> None:
    from alembic.script import ScriptDirectory

    revisions = list(
        ScriptDirectory.from_config(schema.alembic_config(sqlite_url)).walk_revisions()
    )
    await asyncio.to_thread(schema.upgrade, sqlite_url, "head")
    for _ in revisions:
        await asyncio.to_thread(schema.downgrade, sqlite_url, "-1")
    engine = create_engine(sqlite_url)
    try:
        assert (await _inspect(engine))["tables"] == set()
    finally:
        await engine.dispose()
    for _ in revisions:
        await asyncio.to_thread(schema.upgrade, sqlite_url, "+1")
    engine = create_engine(sqlite_url)
    try:
        await schema.ensure_schema_current(engine)
    finally:
        await engine.dispose()
    assert declared_expression_indexes() <= await index_names(sqlite_url)


async def test_sqlite_runs_in_wal_mode_with_busy_timeout(sqlite_url: str) -> None:
    from sqlalchemy import text

    engine = create_engine(sqlite_url, busy_timeout_ms=1234)
    try:
        async with engine.connect() as conn:
            assert (await conn.scalar(text("PRAGMA journal_mode"))) == "wal"
            assert (await conn.scalar(text("PRAGMA busy_timeout"))) == 1234
            assert (await conn.scalar(text("PRAGMA foreign_keys"))) == 1
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("postgres_url"))


async def test_the_upgrade_to_one_open_run_per_server_keeps_one_of_each(any_url: str) -> None:
    """Runs a race queued before the index: the running one (else the oldest) stays open."""
    from sqlalchemy import text

    await asyncio.to_thread(schema.upgrade, any_url, "0002")
    engine = create_engine(any_url)
    try:
        async with engine.begin() as conn:
            for guild, status in (
                (1, "pending"),
                (1, "running"),
                (1, "pending"),
                (2, "pending"),
                (2, "pending"),
                (None, "pending"),
                (None, "pending"),
                (3, "failed"),
                (3, "pending"),
            ):
                await conn.execute(
                    text(
                        "INSERT INTO training_runs (status, guild_id, progress, step, "
                        "total_steps, options, result, created_at) VALUES "
                        "(:s, :g, 0, 0, 0, '{}', '{}', CURRENT_TIMESTAMP)"
                    ),
                    {"s": status, "g": guild},
                )
        await asyncio.to_thread(schema.upgrade, any_url, "head")
        async with engine.connect() as conn:
            rows = (
                await conn.execute(text("SELECT id, status FROM training_runs ORDER BY id"))
            ).all()
    finally:
        await engine.dispose()
    assert [status for _, status in rows] == [
        "cancelled",
        "running",
        "cancelled",
        "pending",
        "cancelled",
        "pending",
        "cancelled",
        "failed",
        "pending",
    ]


# ------------------------------------------------------------------ round trips with data

# What must survive a round trip, per table: the ids, the foreign keys and the guild ids.
SNAPSHOT = {
    "genres": "id, name, origin",
    "genre_sources": "id, genre_id, source",
    "model_versions": "id, name, active",
    "generations": "id, genre_id, guild_id, message_id, model_version_id",
    "votes": "id, generation_id, user_id, value",
    "favorites": "id, generation_id, user_id",
    "training_runs": "id, guild_id, status, model_version_id",
}
# ... and from revision 0002 on.
SNAPSHOT_0002 = {
    **SNAPSHOT,
    "model_versions": "id, name, active, guild_id, previous_id",
    "retrain_leases": "id, holder, run_id",
}
# The genre of the day's tables (revision 0005): a downgrade below it drops them.
SNAPSHOT_DAILY = {
    "daily_schedules": "id, guild_id, channel_id, hour, problem",
    "daily_posts": "id, guild_id, day, message_id, generation_id",
}


async def fill_every_table(url: str, *, per_server: bool) -> None:
    """Rows in every table at head; model versions of servers only with ``per_server``."""
    from datetime import date

    from bot.store.engine import create_sessionmaker
    from bot.store.models import (
        DailyPost,
        DailySchedule,
        Favorite,
        Generation,
        Genre,
        GenreSource,
        ModelVersion,
        RetrainLease,
        TrainingRun,
        Vote,
    )

    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine).begin() as s:
            genres = [
                Genre(name=f"g{i}", display_name=f"G{i}", origin=o)
                for i, o in enumerate(("training", "generated", "generated"))
            ]
            s.add_all(genres)
            await s.flush()
            s.add(GenreSource(genre_id=genres[0].id, source="everynoise", source_name="G0"))
            default = ModelVersion(name="default", path="/d", base_model="b", active=True)
            s.add(default)
            await s.flush()
            own = default
            if per_server:
                own = ModelVersion(
                    name="a-1",
                    path="/a1",
                    base_model="b",
                    active=True,
                    guild_id=111,
                    previous_id=None,
                )
                s.add(own)
                await s.flush()
                s.add(
                    ModelVersion(
                        name="a-0", path="/a0", base_model="b", guild_id=111, previous_id=own.id
                    )
                )
            gens = [
                Generation(
                    genre_id=genres[1].id,
                    guild_id=111,
                    message_id=1,
                    model_version_id=own.id,
                    lineage_kind="blend",
                    lineage_text="dub | polka",
                ),
                Generation(
                    genre_id=genres[2].id, guild_id=222, message_id=2, model_version_id=default.id
                ),
                Generation(genre_id=genres[2].id, guild_id=None, model_version_id=None),
            ]
            s.add_all(gens)
            await s.flush()
            gens[1].lineage_kind, gens[1].lineage_parent_id = "variation", gens[0].id
            gens[1].lineage_text = "g1"
            s.add_all(
                [
                    Vote(generation_id=gens[0].id, user_id=7, value=1),
                    Vote(generation_id=gens[1].id, user_id=7, value=-1),
                    Favorite(generation_id=gens[0].id, user_id=7),
                    TrainingRun(guild_id=111, status="succeeded", model_version_id=own.id),
                    TrainingRun(guild_id=222, status="pending"),
                ]
            )
            await s.flush()
            lease = await s.get(RetrainLease, 1)
            assert lease is not None
            lease.holder, lease.run_id = "someone", None
            s.add_all(
                [
                    DailySchedule(guild_id=111, channel_id=5, hour=9, problem="channel gone"),
                    DailySchedule(guild_id=222, channel_id=6, hour=23),
                    DailyPost(
                        guild_id=111,
                        day=date(2027, 3, 1),
                        claimed_by="p",
                        message_id=1,
                        generation_id=gens[0].id,
                    ),
                    DailyPost(guild_id=222, day=date(2027, 3, 1), claimed_by="p"),
                ]
            )
    finally:
        await engine.dispose()


async def snapshot(url: str, tables: dict[str, str]) -> dict[str, list[tuple[object, ...]]]:
    from sqlalchemy import text

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return {
                table: [
                    tuple(row)
                    for row in await conn.execute(text(f"SELECT {cols} FROM {table} ORDER BY id"))
                ]
                for table, cols in tables.items()
            }
    finally:
        await engine.dispose()


async def index_names(url: str) -> set[str]:
    from sqlalchemy import text

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            else:
                sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            return {str(name) for name in (await conn.scalars(text(sql))).all()}
    finally:
        await engine.dispose()


def declared_expression_indexes() -> set[str]:
    from bot.store.models import expression_indexes

    return {str(i.name) for t in Base.metadata.sorted_tables for i in expression_indexes(t.name)}


@pytest.mark.parametrize(
    ("target", "per_server"),
    [("-1", True), ("0002", True), ("0001", False)],
)
async def test_a_round_trip_with_data_in_every_table_loses_nothing(
    any_url: str, target: str, per_server: bool
) -> None:
    """head → rows in every table → down to ``target`` → head: the same rows, foreign keys
    and guild ids (with SQLite's foreign keys on, rebuilding model_versions used to set
    generations.model_version_id and training_runs.model_version_id to NULL)."""
    await asyncio.to_thread(schema.upgrade, any_url, "head")
    await fill_every_table(any_url, per_server=per_server)
    tables = SNAPSHOT if target == "0001" else SNAPSHOT_0002
    before = await snapshot(any_url, tables)
    assert all(before.values())
    assert all((await snapshot(any_url, SNAPSHOT_DAILY)).values())
    await asyncio.to_thread(schema.downgrade, any_url, target)
    await asyncio.to_thread(schema.upgrade, any_url, "head")
    assert await snapshot(any_url, tables) == before
    assert declared_expression_indexes() <= await index_names(any_url)
    # Every target is below 0005: the schedules and past daily posts went with the tables.
    assert not any((await snapshot(any_url, SNAPSHOT_DAILY)).values())


async def test_a_downgrade_refuses_while_servers_have_their_own_models(any_url: str) -> None:
    """Revision 0001 has no guild_id on model_versions: every server's model would become
    everybody's default (or, with two servers, the upgrade back would fail). Nothing changes."""
    from alembic.util import CommandError

    await asyncio.to_thread(schema.upgrade, any_url, "head")
    await fill_every_table(any_url, per_server=True)
    everything = {**SNAPSHOT_0002, **SNAPSHOT_DAILY}
    before = await snapshot(any_url, everything)
    indexes = await index_names(any_url)
    for target in ("0001", "base"):
        with pytest.raises(CommandError, match="1 server has models of its own"):
            await asyncio.to_thread(schema.downgrade, any_url, target)
        engine = create_engine(any_url)
        try:
            assert await schema.current_revision(engine) == schema.head_revision()
        finally:
            await engine.dispose()
        assert await snapshot(any_url, everything) == before
        assert await index_names(any_url) == indexes


async def test_db_downgrade_prints_the_refusal_as_one_line(
    any_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import entry

    await asyncio.to_thread(schema.upgrade, any_url, "head")
    await fill_every_table(any_url, per_server=True)
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{any_url}"\n')
    capsys.readouterr()
    code = await asyncio.to_thread(entry, ["--config", str(config), "db", "downgrade", "0001"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("Error: "), err
    assert "models of its own" in err[0] and "microgenre model list" in err[0]


def test_a_table_rebuild_keeps_the_expression_indexes_it_is_given(tmp_path: Path) -> None:
    """SQLite cannot reflect an expression index, so a batch migration that rebuilds the table
    drops it silently, unless it passes ``expression_indexes(table)`` as ``reflect_args``."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine as create_sync_engine
    from sqlalchemy import text

    from bot.store.models import expression_indexes

    url = f"sqlite:///{tmp_path / 'rebuild.db'}"
    schema.upgrade(f"sqlite+aiosqlite:///{tmp_path / 'rebuild.db'}", "head")
    engine = create_sync_engine(url)
    tables = {"model_versions", "training_runs"}
    assert {t for t in tables if expression_indexes(t)} == tables

    def names(conn: Connection) -> set[str]:
        return set(conn.scalars(text("SELECT name FROM sqlite_master WHERE type = 'index'")))

    try:
        with engine.begin() as conn:
            op = Operations(MigrationContext.configure(conn))
            for table in sorted(tables):
                wanted = {str(i.name) for i in expression_indexes(table)}
                kept = op.batch_alter_table(
                    table, recreate="always", reflect_args=expression_indexes(table)
                )
                with pytest.warns(match="expression-based index"), kept:
                    pass
                assert wanted <= names(conn)
                # Without them, the rebuild loses them: why the migrations must pass them.
                lost = op.batch_alter_table(table, recreate="always")
                with pytest.warns(match="expression-based index"), lost:
                    pass
                assert not wanted & names(conn)
    finally:
        engine.dispose()


SNAPSHOT_0004 = {
    **SNAPSHOT_0002,
    "generations": (
        "id, genre_id, guild_id, message_id, model_version_id, "
        "lineage_kind, lineage_parent_id, lineage_text"
    ),
}


async def test_lineage_columns_come_and_go_with_revision_0004(any_url: str) -> None:
    """Rows of every table at head keep their lineage; down to 0003 and back up, every other
    column is kept and the lineage reads as none (old rows count as "new")."""
    await asyncio.to_thread(schema.upgrade, any_url, "head")
    await fill_every_table(any_url, per_server=True)
    at_head = await snapshot(any_url, SNAPSHOT_0004)
    lineages = [row[5:] for row in at_head["generations"]]
    assert lineages == [("blend", None, "dub | polka"), ("variation", 1, "g1"), (None, None, None)]
    await asyncio.to_thread(schema.downgrade, any_url, "0003")
    engine = create_engine(any_url)
    try:
        assert "lineage_kind" not in (await _inspect(engine))["generations_columns"]  # type: ignore[operator]
    finally:
        await engine.dispose()
    await asyncio.to_thread(schema.upgrade, any_url, "head")
    after = await snapshot(any_url, SNAPSHOT_0004)
    assert [row[:5] for row in after["generations"]] == [row[:5] for row in at_head["generations"]]
    assert {row[5:] for row in after["generations"]} == {(None, None, None)}
    assert {k: v for k, v in after.items() if k != "generations"} == {
        k: v for k, v in at_head.items() if k != "generations"
    }
