"""Shared plumbing for the CLI commands: lazily loaded config, store access, error mapping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import click

from bot.config import Config, load_config
from bot.errors import MicrogenreError
from bot.store.engine import SessionMaker, create_engine, create_sessionmaker
from bot.store.schema import ensure_schema_current
from model.errors import ModelError


@dataclass
class CliState:
    config_path: str | None
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


def state(ctx: click.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj


@asynccontextmanager
async def open_store(config: Config, *, check_schema: bool = True) -> AsyncIterator[SessionMaker]:
    """One engine for the command; refuses an out-of-date schema unless told not to check."""
    engine = create_engine(
        config.database_url,
        echo=config.database.echo,
        busy_timeout_ms=config.database.sqlite_busy_timeout_ms,
    )
    try:
        if check_schema:
            await ensure_schema_current(engine)
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def run_cli(group: click.Group, argv: Sequence[str] | None, *, prog: str = "microgenre") -> int:
    """Invoke ``group`` mapping errors to one line and an exit status."""
    try:
        group.main(
            args=list(argv) if argv is not None else None, prog_name=prog, standalone_mode=False
        )
    except (MicrogenreError, ModelError) as exc:
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    return 0
