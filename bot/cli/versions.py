"""`microgenre model list|activate|rollback`: which model each server uses.

A server uses its own active version, else the deployment's default (the version activated
with ``--default``), else the shipped adapter. Bad names or server ids print one line and exit
with status 2.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bot.cli.common import echo_json, open_store, state, store_configured
from bot.store import versions as versions_store
from bot.store.notify import announce
from bot.store.versions import VersionError, VersionInfo
from model.protocol import AdapterRef

if TYPE_CHECKING:
    from bot.config import Config


def _guild(value: str | None) -> int | None:
    """A server id given on the command line.

    >>> _guild("123"), _guild(None)
    (123, None)
    """
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or int(text) == 0:
        raise VersionError(f"{value!r} is not a server id (a Discord id is a positive number)")
    return int(text)


def _row(v: VersionInfo) -> str:
    scope = "default" if v.guild_id is None else f"guild {v.guild_id}"
    mark = "*" if v.active else " "
    return f"{mark} {v.name:<28} {scope:<26} {v.created_at:%Y-%m-%d %H:%M}  {v.path}"


@click.group()
def model() -> None:
    """Per-server models: list versions, activate one, roll a server back."""


@model.command("list")
@click.option("--guild", "guild", default=None, help="Only this server's versions.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def list_command(ctx: click.Context, guild: str | None, as_json: bool) -> None:
    """List model versions (* = active for its server, or the default)."""
    guild_id = _guild(guild)

    async def collect() -> list[VersionInfo]:
        async with open_store(state(ctx).config) as sessions:
            return await versions_store.list_versions(
                sessions, guild_id=guild_id, every=guild is None
            )

    rows = asyncio.run(collect())
    if as_json:
        echo_json([dataclasses.asdict(v) for v in rows])
        return
    if not rows:
        click.echo("No model versions yet: every server uses the shipped adapter.")
    for v in rows:
        click.echo(_row(v))


@model.command("activate")
@click.argument("name")
@click.option("--guild", "guild", default=None, help="The server the version belongs to.")
@click.option("--default", "as_default", is_flag=True, help="A deployment default version.")
@click.pass_context
def activate_command(ctx: click.Context, name: str, guild: str | None, as_default: bool) -> None:
    """Make version NAME active for its server (--guild ID) or as the default (--default).

    Running bots pick the change up at once on PostgreSQL, within half a minute on SQLite; the
    default also becomes the worker's start adapter at the next start.
    """
    if (guild is None) == (not as_default):
        raise VersionError("give exactly one of --guild ID or --default")
    guild_id = _guild(guild)

    async def run() -> VersionInfo:
        async with open_store(state(ctx).config) as sessions:
            version = await versions_store.activate(sessions, name, guild_id)
            await announce(sessions, guild_id)  # running bots on PostgreSQL switch at once
            return version

    v = asyncio.run(run())
    click.echo(f"{v.scope()} now uses {v.name} ({v.path})")


@model.command("rollback")
@click.option("--guild", "guild", required=True, help="The server to roll back.")
@click.pass_context
def rollback_command(ctx: click.Context, guild: str) -> None:
    """Return a server to its previous model, or to the default."""
    guild_id = _guild(guild)

    async def run() -> VersionInfo | None:
        async with open_store(state(ctx).config) as sessions:
            version = await versions_store.rollback(sessions, guild_id)
            await announce(sessions, guild_id)
            return version

    v = asyncio.run(run())
    click.echo(f"server {guild_id} now uses {v.name if v is not None else 'the default model'}")


@model.command("prune")
@click.option(
    "--keep",
    type=click.IntRange(0),
    default=None,
    help="Earlier versions kept per server besides the active one (default: [bot] "
    "keep_previous_versions).",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.pass_context
def prune_command(ctx: click.Context, keep: int | None, dry_run: bool) -> None:
    """Delete the folders of old, rejected and failed server runs (see docs/operations.md)."""
    from bot.retrain.retention import prune

    config = state(ctx).config
    keep_previous = config.bot.keep_previous_versions if keep is None else keep

    async def run() -> list[Path]:
        async with open_store(config) as sessions:
            return await prune(
                sessions, config.data_dir, keep_previous=keep_previous, dry_run=dry_run
            )

    folders = asyncio.run(run())
    verb = "would delete" if dry_run else "deleted"
    for folder in folders:
        click.echo(f"{verb} {folder}")
    click.echo(f"{verb} {len(folders)} folder(s); kept the active and {keep_previous} earlier.")


async def guild_adapters(config: Config) -> list[AdapterRef]:
    """Every server's own active model, as the adapters a server process registers at start
    (each is then served under its name). Without a store: none."""
    if not store_configured(config):
        return []
    async with open_store(config) as sessions:
        models = await versions_store.guild_models(sessions)
    return [AdapterRef(v.name, v.path) for v in models.values()]


async def default_model_config(config: Config) -> tuple[Config, VersionInfo | None]:
    """``config`` with ``[model] adapter`` set to the database's default version, if one is
    active (the worker then starts on it), and that version. Without a store: unchanged."""
    if not store_configured(config):
        return config, None
    async with open_store(config) as sessions:
        default = await versions_store.active_version(sessions, None)
    if default is None:
        return config, None
    model_cfg = dataclasses.replace(config.model, adapter=default.path)
    return dataclasses.replace(config, model=model_cfg), default
