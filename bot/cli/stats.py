"""`microgenre stats [--json]`."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from bot.cli import main
from bot.cli.common import echo_json, open_store, state
from bot.store.stats import store_stats


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Show counts from the store: genres, votes, favorites, the active model."""
    data = asyncio.run(_collect(ctx))
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if isinstance(value, dict):
            value = value.get("name", value)
        click.echo(f"{key.replace('_', ' ')}: {value if value is not None else '-'}")


async def _collect(ctx: click.Context) -> dict[str, Any]:
    async with open_store(state(ctx).config) as sessions:
        return await store_stats(sessions)
