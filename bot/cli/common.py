"""Shared plumbing for the CLI commands: lazily loaded config, store access, error mapping, and
the adapter, sampler and fingerprint that `generate`, `eval` and `server-run` load.

torch is imported only inside :func:`load_sampler`.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from bot.config import Config, load_config
from bot.errors import InputError, MicrogenreError
from bot.store.engine import SessionMaker, create_engine, create_sessionmaker
from bot.store.schema import ensure_schema_current
from model.artifacts import DEFAULT_ADAPTER_DIR, is_adapter
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


def quiet_transformers() -> None:
    """Keep transformers and peft to errors only (no progress bars, no warnings)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", module="peft")
    warnings.filterwarnings("ignore", module="transformers")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _say(message: str) -> None:
    click.echo(message, err=True)


def adapter_path(config: Config, adapter: str | None) -> Path:
    """The adapter to use: the option, the config, else the shipped default."""
    chosen = adapter or config.model.adapter
    path = config.resolve_path(chosen) if chosen else DEFAULT_ADAPTER_DIR
    if not is_adapter(path):
        hint = "" if chosen else " (the shipped default adapter is missing: reinstall)"
        raise InputError(f"{path} is not a LoRA adapter folder{hint}.")
    return path


def store_configured(config: Config) -> bool:
    """True when a store exists: an explicit database URL, or the SQLite file is there."""
    if config.database.url:
        return True
    return (config.data_dir / "microgenre.db").is_file()


def load_sampler(config: Config, adapter: Path) -> Any:
    """The configured base model with ``adapter`` (a :class:`model.sampler.Sampler`)."""
    quiet_transformers()
    from model.sampler import Sampler

    return Sampler.load(
        config.model.spec(),
        adapter,
        data_dir=config.data_dir,
        progress=_say,
        fast=config.model.fast(),
    )


def load_fingerprint(adapter: Path) -> Any:
    """The adapter's fingerprint, else an empty one (with a warning)."""
    from model.artifacts import load_fingerprint as load
    from model.filters import Fingerprint

    fingerprint = load(adapter)
    if fingerprint is None:
        _say(f"warning: {adapter} has no readable fingerprint; novelty uses the store only")
        return Fingerprint()
    return fingerprint
