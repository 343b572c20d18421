"""`microgenre stats [--json]`."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from bot.cli.common import echo_json, open_store, state
from bot.store.stats import store_stats


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Show counts from the store: genres, votes, favorites, the default model and the
    servers with a model of their own."""
    data = asyncio.run(_collect(ctx))
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if key == "guild_models":
            value = len(value)
        elif isinstance(value, dict):
            value = value.get("name", value)
        click.echo(f"{key.replace('_', ' ')}: {value if value is not None else '-'}")


async def _collect(ctx: click.Context) -> dict[str, Any]:
    from model.worker.health import worker_health

    config = state(ctx).config
    async with open_store(config) as sessions:
        data = await store_stats(sessions)
    # The generation worker: the local snapshot its owner writes, or the server's /health.
    data["worker"] = await worker_health(config)
    return data
