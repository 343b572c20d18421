"""`microgenre invite`: print the URL that adds the bot to a server (see :mod:`bot.invite`)."""

from __future__ import annotations

import asyncio

import click

from bot.cli.common import state
from bot.invite import application_id_of, invite_url


@click.command(name="invite")
@click.pass_context
def invite(ctx: click.Context) -> None:
    """Print the URL that adds the bot to a server (scopes bot + applications.commands)."""
    config = state(ctx).config
    click.echo(invite_url(asyncio.run(application_id_of(config))))
