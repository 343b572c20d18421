"""`microgenre db upgrade|downgrade|current`."""

from __future__ import annotations

import asyncio

import click
from alembic.util import CommandError

from bot.cli.common import open_store, state
from bot.errors import MicrogenreError
from bot.store import schema


@click.group()
def db() -> None:
    """Manage the database schema (Alembic migrations)."""


@db.command()
@click.argument("revision", default="head")
@click.pass_context
def upgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    url = state(ctx).config.database_url
    asyncio.run(_migrate(schema.upgrade, url, revision))
    click.echo(f"database at {asyncio.run(_current(ctx))}")


@db.command()
@click.argument("revision", default="-1")
@click.pass_context
def downgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database down to REVISION (default: one step; 'base' removes everything)."""
    url = state(ctx).config.database_url
    asyncio.run(_migrate(schema.downgrade, url, revision))
    click.echo(f"database at {asyncio.run(_current(ctx)) or 'base (empty)'}")


@db.command()
@click.pass_context
def current(ctx: click.Context) -> None:
    """Show the database's revision and the newest one the code knows."""
    rev = asyncio.run(_current(ctx))
    head = schema.head_revision()
    status = "up to date" if rev == head else "out of date: run `microgenre db upgrade`"
    click.echo(f"current: {rev or 'none'}  head: {head}  ({status})")


class MigrationError(MicrogenreError):
    """Alembic refused a migration (a migration's own refusal, an unknown revision...)."""


async def _migrate(fn: object, url: str, revision: str) -> None:
    # Alembic's env.py runs its own event loop, so it goes to a thread.
    try:
        await asyncio.to_thread(fn, url, revision)  # type: ignore[arg-type]
    except CommandError as exc:
        raise MigrationError(" ".join(str(exc).split())) from None


async def _current(ctx: click.Context) -> str | None:
    async with open_store(state(ctx).config, check_schema=False) as sessions:
        engine = sessions.kw["bind"]
        return await schema.current_revision(engine)
